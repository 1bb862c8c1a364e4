"""From a :class:`DataConfig` to datasets: paths, synthetic generation, validation holdout.

Kept apart from the trainer so that the evaluation CLI builds its datasets the same way.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data import formats
from ..data.synthetic import KITTI_INTRINSICS, NYU_INTRINSICS
from .augment import AugmenterConfig
from .config import DataConfig
from .datasets import DepthDataset, DepthDatasetConfig
from .splits import SplitEntry, holdout_validation, parse_split_file, scene_group

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataPaths:
    """Resolved roots and split files (split files may be ``None`` for a folder dataset)."""

    data_path: Path
    gt_path: Path
    train_split: Path | None
    test_data_path: Path
    test_gt_path: Path
    test_split: Path | None


def _synthetic_layout(data: DataConfig) -> formats.SyntheticDatasetPaths | None:
    """Where ``write_synthetic_*`` puts things under ``data.synthetic.root`` (without writing)."""
    if data.synthetic is None:
        return None
    root = Path(data.synthetic.root)
    if data.dataset == "nyu":
        sync = root / "sync"
        test = root / "official_splits" / "test"
        splits = root / "splits"
        return formats.SyntheticDatasetPaths(
            root, splits / "nyudepthv2_train_files_with_gt.txt", splits / "nyudepthv2_test_files_with_gt.txt",
            sync, sync, test, test, NYU_INTRINSICS.fx,
        )
    if data.dataset == "kitti":
        raw, gt, splits = root / "raw", root / "data_depth_annotated", root / "splits"
        return formats.SyntheticDatasetPaths(
            root, splits / "kitti_eigen_train_files_with_gt.txt", splits / "kitti_eigen_test_files_with_gt.txt",
            raw, gt, raw, gt, KITTI_INTRINSICS.fx,
        )
    return None  # folder: no test split, the root is the dataset


def resolve_data_paths(data: DataConfig) -> DataPaths:
    """Explicit paths win; empty ones come from ``data.synthetic.root`` when it is set."""
    layout = _synthetic_layout(data)

    def pick(value: str, fallback: Path | None) -> Path | None:
        if value:
            return Path(value)
        return fallback

    if data.dataset == "folder" and data.synthetic is not None and not data.data_path:
        root = Path(data.synthetic.root)
        layout_data, layout_gt, layout_train, layout_test = root, root, None, None
    elif layout is not None:
        layout_data, layout_gt = layout.train_data_path, layout.train_gt_path
        layout_train, layout_test = layout.train_split, layout.test_split
    else:
        layout_data = layout_gt = layout_train = layout_test = None

    data_path = pick(data.data_path, layout_data)
    if data_path is None:
        raise ValueError("data.data_path is empty (and no data.synthetic.root to derive it from)")
    gt_path = pick(data.gt_path, layout_gt) or data_path
    train_split = pick(data.train_split, layout_train)
    if train_split is None and data.dataset != "folder":
        raise ValueError(f"data.train_split is empty; a {data.dataset} dataset needs a BTS split file")
    test_data = pick(data.test_data_path, layout.test_data_path if layout else None) or data_path
    test_gt = pick(data.test_gt_path, layout.test_gt_path if layout else None) or gt_path
    return DataPaths(data_path, gt_path, train_split, test_data, test_gt, pick(data.test_split, layout_test))


def ensure_synthetic_dataset(data: DataConfig, progress: bool = False) -> bool:
    """Render ``data.synthetic`` in the dataset's real layout unless it is already there.

    Returns True when something was generated. The split file is written last by the writers,
    so its presence marks a complete dataset.
    """
    syn = data.synthetic
    if syn is None:
        return False
    paths = resolve_data_paths(data)
    marker = paths.train_split if paths.train_split is not None else paths.data_path / formats.FOLDER_META_FILE
    if marker.is_file():
        return False
    logger.info("generating a synthetic %s dataset in %s (%d train / %d test frames, %dx%d)",
                data.dataset, syn.root, syn.n_train, syn.n_test, syn.height, syn.width)
    # The real camera of the layout, resampled to the rendered size (pixel centres aligned).
    if data.dataset == "kitti":
        camera = KITTI_INTRINSICS.scaled_to(syn.width, syn.height, align_pixel_centres=True)
        formats.write_synthetic_kitti(syn.root, syn.n_train, syn.n_test, intrinsics=camera, n_drives=syn.n_scenes,
                                      seed=syn.seed, progress=progress)
    elif data.dataset == "nyu":
        camera = NYU_INTRINSICS.scaled_to(syn.width, syn.height, align_pixel_centres=True)
        formats.write_synthetic_nyu(syn.root, syn.n_train, syn.n_test, intrinsics=camera, n_scenes=syn.n_scenes,
                                    seed=syn.seed, progress=progress)
    else:
        camera = NYU_INTRINSICS.scaled_to(syn.width, syn.height, align_pixel_centres=True)
        formats.write_synthetic_folder(syn.root, syn.n_train, intrinsics=camera, seed=syn.seed)
    return True


def read_train_entries(data: DataConfig, paths: DataPaths) -> list[SplitEntry]:
    if paths.train_split is not None:
        return parse_split_file(paths.train_split)
    focal = formats.read_folder_meta(paths.data_path).intrinsics.fx
    return [SplitEntry(rgb, depth, focal) for rgb, depth in formats.list_folder_frames(paths.data_path)]


def split_train_validation(
    entries: list[SplitEntry], fraction: float, seed: int
) -> tuple[list[SplitEntry], list[SplitEntry]]:
    """Hold out whole scenes (``splits.holdout_validation``).

    A list with a single scene group (a folder dataset recorded as one sequence) cannot be split by
    scene; its last ``fraction`` of frames, in file-name order, is held out as one contiguous block,
    which keeps neighbouring (near-duplicate) frames on one side except at the cut.
    """
    if fraction <= 0:
        return list(entries), []
    groups = {scene_group(entry.rgb_path) for entry in entries}
    if len(groups) >= 2:
        return holdout_validation(entries, fraction=fraction, seed=seed)
    ordered = sorted(entries, key=lambda e: e.rgb_path)
    n_val = max(1, round(fraction * len(ordered))) if len(ordered) >= 2 else 0
    logger.warning("only one scene group: holding out the last %d of %d frames (by name) for validation",
                   n_val, len(ordered))
    return ordered[: len(ordered) - n_val], ordered[len(ordered) - n_val :]


def write_entries(path: Path, entries: list[SplitEntry]) -> Path:
    return formats.write_split_file(path, [(e.rgb_path, e.depth_path, e.focal) for e in entries])


def training_focal(entries: list[SplitEntry]) -> float | None:
    """The training camera's focal length (median over the training list; KITTI dates differ a bit)."""
    focals = [e.focal for e in entries if e.focal > 0]
    return float(statistics.median(focals)) if focals else None


def cache_augment(augment: AugmenterConfig) -> AugmenterConfig:
    """The augmentation left when features are cached: a fixed centre crop, nothing random.

    Flip survives separately (both orientations are cached); rotation, colour jitter and the random
    crop change the encoder input and would make every epoch a cache miss.
    """
    return dataclasses.replace(augment, rotation=False, random_crop=False, flip=False, colour=False)


def train_dataset(
    data: DataConfig, paths: DataPaths, entries: Sequence[SplitEntry], min_depth: float, max_depth: float,
    seed: int, augment: AugmenterConfig | None = None, list_name: Path | None = None,
) -> DepthDataset:
    """The training dataset over ``entries`` (``list_name``: the file they were saved to, for messages)."""
    return DepthDataset(
        DepthDatasetConfig(
            kind=data.dataset,  # type: ignore[arg-type]
            data_path=paths.data_path,
            gt_path=paths.gt_path,
            split_file=list_name,
            depth_scale=data.depth_scale,
            min_depth=min_depth,
            max_depth=max_depth,
            mode="train",
            augment=augment if augment is not None else data.augment,
            kb_crop=data.kb_crop,
            seed=seed,
        ),
        entries=entries,
    )


def eval_dataset(
    kind: str, data_path: Path, gt_path: Path, split_file: Path | None, depth_scale: float | None = None,
    entries: Sequence[SplitEntry] | None = None,
) -> DepthDataset:
    """Full images and raw depth (crops and depth caps belong to the protocol).

    ``entries``: the list itself (``split_file`` then only names it); otherwise ``split_file`` is read.
    """
    return DepthDataset(
        DepthDatasetConfig(
            kind=kind,  # type: ignore[arg-type]
            data_path=data_path,
            gt_path=gt_path,
            split_file=split_file,
            depth_scale=depth_scale,
            mode="eval",
        ),
        entries=entries,
    )
