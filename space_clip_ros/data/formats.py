"""Real on-disk dataset layouts, their readers and writers, and synthetic datasets written in them.

The same loaders read real and synthetic data because synthetic data is written in the real layouts:

* KITTI (BTS layout). RGB ``<raw>/2011_09_26/2011_09_26_drive_0001_sync/image_02/data/0000000123.png``;
  ground truth ``<gt>/2011_09_26_drive_0001_sync/proj_depth/groundtruth/image_02/0000000123.png``,
  uint16 PNG holding depth * 256 (0 = no measurement).
* NYU Depth v2 (BTS). Training tree ``<root>/sync/kitchen_0028b/rgb_00045.jpg`` + ``sync_depth_00045.png``
  (uint16, depth * 1000); official test tree ``<root>/official_splits/test/bathroom/rgb_00045.jpg`` +
  ``sync_depth_00045.png``.
* Split files (BTS): one ``rgb_path depth_path focal`` per line, ``None`` when there is no depth;
  NYU training lines start with a slash (paths relative to ``sync``).
* Folder (a team's own camera): ``<root>/rgb/<name>.png|jpg``, ``<root>/depth/<name>.png`` (uint16,
  value / depth_scale = metres) or ``<root>/depth/<name>.npy`` (float metres), ``<root>/intrinsics.yaml``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import yaml
from tqdm import tqdm

from space_clip_ros.data.camera import CameraInfoError, CameraIntrinsics, CameraModel
from space_clip_ros.data.synthetic import KITTI_INTRINSICS, NYU_INTRINSICS, SceneConfig, make_scene, render_sequence

LOGGER = logging.getLogger(__name__)

KITTI_DEPTH_SCALE = 256.0
NYU_DEPTH_SCALE = 1000.0
FOLDER_META_FILE = "intrinsics.yaml"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"
_JPEG_SOS = b"\xff\xda"  # start of scan: entropy-coded data follows
_JPEG_EOI = b"\xff\xd9"


class CorruptFileError(ValueError):
    """A file exists but cannot be decoded (truncated, not an image, wrong pixel type)."""


# ----------------------------------------------------------------------------------------------
# Image and depth files


def _read_bytes(path: str | Path) -> np.ndarray:
    """File contents, refusing empty and truncated PNG/JPEG files.

    cv2 decodes the first part of a truncated file without an error (the rest comes out grey), so
    the end markers are checked here: a PNG must contain its IEND chunk, and a JPEG an end-of-image
    marker after its last start-of-scan (entropy-coded data cannot contain that marker, and a
    thumbnail's EOI comes before the main scan; trailing bytes after the EOI are tolerated).
    """
    data = np.fromfile(str(path), dtype=np.uint8)  # FileNotFoundError for a missing file
    if data.size == 0:
        raise CorruptFileError(f"{path}: empty file")
    raw = data.tobytes()
    if raw.startswith(_PNG_SIGNATURE) and raw.rfind(b"IEND") < 0:
        raise CorruptFileError(f"{path}: truncated PNG (no IEND chunk)")
    if raw.startswith(_JPEG_SOI) and raw.rfind(_JPEG_EOI) < raw.rfind(_JPEG_SOS):
        raise CorruptFileError(f"{path}: truncated JPEG (no end-of-image marker after the last scan)")
    return data


def read_rgb(path: str | Path) -> np.ndarray:
    """Read a colour image as uint8 (H, W, 3) RGB. Raises FileNotFoundError or CorruptFileError."""
    image = cv2.imdecode(_read_bytes(path), cv2.IMREAD_COLOR)
    if image is None:
        raise CorruptFileError(f"{path}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_rgb(path: str | Path, rgb: np.ndarray, jpeg_quality: int = 95) -> Path:
    """Write uint8 (H, W, 3) RGB as PNG or JPEG (chosen by the file extension)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if path.suffix.lower() in (".jpg", ".jpeg") else []
    if not cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR), params):
        raise OSError(f"{path}: could not write image")
    return path


def read_depth_png(path: str | Path, depth_scale: float) -> np.ndarray:
    """Read a 16-bit depth PNG as float32 metres (value / depth_scale; 0 stays 0 = invalid)."""
    raw = cv2.imdecode(_read_bytes(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise CorruptFileError(f"{path}: not a readable PNG")
    if raw.ndim != 2 or raw.dtype != np.uint16:
        raise CorruptFileError(
            f"{path}: expected a single-channel 16-bit depth PNG, got {raw.dtype} with shape {raw.shape}"
        )
    return raw.astype(np.float32) / np.float32(depth_scale)


def write_depth_png(path: str | Path, depth: np.ndarray, depth_scale: float) -> Path:
    """Write float metres as a uint16 PNG holding round(depth * depth_scale), clipped to 65535."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scaled = np.round(np.nan_to_num(depth, nan=0.0, posinf=0.0) * depth_scale)
    if not cv2.imwrite(str(path), np.clip(scaled, 0, 65535).astype(np.uint16)):
        raise OSError(f"{path}: could not write depth PNG")
    return path


def read_depth(path: str | Path, depth_scale: float) -> np.ndarray:
    """Read depth in metres from a 16-bit PNG (scaled) or a ``.npy`` file (already metres)."""
    if Path(path).suffix.lower() != ".npy":
        return read_depth_png(path, depth_scale)
    try:
        depth = np.load(str(path), allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError) as error:
        raise CorruptFileError(f"{path}: not a readable .npy file ({error})") from error
    if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.floating):
        raise CorruptFileError(
            f"{path}: expected a 2-D float array in metres, got {depth.dtype} {depth.shape}"
        )
    return np.nan_to_num(depth.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)


# ----------------------------------------------------------------------------------------------
# Split files


def format_split_line(rgb_path: str, depth_path: str | None, focal: float) -> str:
    """One BTS split line: ``rgb_path depth_path focal`` (``None`` for a missing depth)."""
    return f"{rgb_path} {depth_path if depth_path is not None else 'None'} {focal!r}"


def write_split_file(path: str | Path, rows: Iterable[tuple[str, str | None, float]]) -> Path:
    """Write ``(rgb_path, depth_path or None, focal)`` rows as a BTS split file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [format_split_line(rgb, depth, float(focal)) for rgb, depth, focal in rows]
    path.write_text("".join(line + "\n" for line in lines))
    return path


# ----------------------------------------------------------------------------------------------
# KITTI


def kitti_drive_folder(date: str, drive: int) -> str:
    """``2011_09_26_drive_0001_sync`` style drive folder name."""
    return f"{date}_drive_{drive:04d}_sync"


def kitti_rgb_relpath(date: str, drive: int, frame: int, camera: str = "image_02") -> str:
    """RGB path relative to the raw-data root, as in the split files."""
    return f"{date}/{kitti_drive_folder(date, drive)}/{camera}/data/{frame:010d}.png"


def kitti_depth_relpath(date: str, drive: int, frame: int, camera: str = "image_02") -> str:
    """Ground-truth path relative to the annotated-depth root, as in the split files."""
    return f"{kitti_drive_folder(date, drive)}/proj_depth/groundtruth/{camera}/{frame:010d}.png"


def sparsify_like_lidar(
    depth: np.ndarray,
    rng: np.random.Generator,
    keep_fraction: float = 0.2,
    pattern: Literal["scanlines", "random"] = "scanlines",
    top_empty_fraction: float = 0.3,
) -> np.ndarray:
    """Make dense depth look like projected LiDAR ground truth.

    ``random`` keeps ``keep_fraction`` of the pixels at random. ``scanlines`` keeps every other row
    (random phase) with random column dropout, and nothing in the top ``top_empty_fraction`` of the
    image, where a car's LiDAR has no beams; ``keep_fraction`` is then the share kept below that band.
    """
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    height, width = depth.shape
    if pattern == "random":
        keep = rng.random((height, width)) < keep_fraction
    elif pattern == "scanlines":
        keep = np.zeros((height, width), dtype=bool)
        first_row = int(math.ceil(height * top_empty_fraction))
        rows = np.arange(first_row + int(rng.integers(0, 2)), height, 2)
        column_keep = min(1.0, 2.0 * keep_fraction)
        keep[rows] = rng.random((len(rows), width)) < column_keep
    else:
        raise ValueError(f"unknown sparsity pattern {pattern!r}")
    return np.where(keep, depth, np.float32(0.0)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# NYU Depth v2


def nyu_train_relpaths(scene_dir: str, frame: int) -> tuple[str, str]:
    """(rgb, depth) paths of a training frame relative to ``<root>/sync``, with the leading slash."""
    return f"/{scene_dir}/rgb_{frame:05d}.jpg", f"/{scene_dir}/sync_depth_{frame:05d}.png"


def nyu_test_relpaths(scene_type: str, frame: int) -> tuple[str, str]:
    """(rgb, depth) paths of a test frame relative to ``<root>/official_splits/test``."""
    return f"{scene_type}/rgb_{frame:05d}.jpg", f"{scene_type}/sync_depth_{frame:05d}.png"


# ----------------------------------------------------------------------------------------------
# Folder layout (a team's own camera)


class IntrinsicsFileError(ValueError):
    """An intrinsics file whose contents do not describe a pinhole camera; the text says what to fix."""


@dataclass(frozen=True)
class IntrinsicsFile:
    """What an intrinsics file says (formats: :func:`read_intrinsics_file`): the camera, and the
    whole mapping (``values``) for keys that only one reader uses (a folder dataset's ``depth_scale``)."""

    camera: CameraModel
    values: dict[str, Any] = field(default_factory=dict)


_INTRINSICS_KEYS = ("fx", "fy", "cx", "cy")
_EXPECTED_INTRINSICS = (
    "expected fx, fy, cx, cy (and width, height) or the ROS camera_calibration keys "
    "image_width, image_height, camera_matrix.data"
)


def read_intrinsics_file(path: str | Path, image_size: tuple[int, int] | None = None) -> IntrinsicsFile:
    """Read a camera intrinsics file, YAML or JSON, in either of two formats.

    * flat keys ``fx, fy, cx, cy`` with optional ``width, height``, ``distortion_model``, ``d``
      (a folder dataset's ``intrinsics.yaml``, which adds ``depth_scale``);
    * the ROS ``camera_calibration`` format: ``image_width``, ``image_height``, ``camera_matrix.data``,
      ``distortion_model``, ``distortion_coefficients.data`` (what camera_info_manager reads).

    ``image_size`` (width, height) stands in for a size the file does not state; the intrinsics are
    those of the size the file states otherwise. Raises OSError for an unreadable file and
    :class:`IntrinsicsFileError` for contents that do not describe a camera.
    """
    path = Path(path)
    values = _read_mapping(path)
    try:
        intrinsics, distortion_model, distortion = _parse_intrinsics(values, path, image_size)
    except IntrinsicsFileError:
        raise
    except (KeyError, IndexError, TypeError, ValueError) as exc:  # a value of the wrong type or shape
        problem = f"{type(exc).__name__} {exc}"
        raise IntrinsicsFileError(f"intrinsics file {path}: {problem}; {_EXPECTED_INTRINSICS}") from exc
    try:
        intrinsics.validate()
    except CameraInfoError as exc:
        raise IntrinsicsFileError(f"intrinsics file {path}: {exc}") from exc
    return IntrinsicsFile(CameraModel(intrinsics, distortion_model, distortion), values)


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        values = yaml.safe_load(path.read_text())  # JSON is YAML too
    except yaml.YAMLError as exc:
        raise IntrinsicsFileError(f"intrinsics file {path} is not YAML or JSON: {exc}") from exc
    if not isinstance(values, dict):
        raise IntrinsicsFileError(f"intrinsics file {path} holds no mapping of keys to values")
    return values


def _parse_intrinsics(
    values: dict[str, Any], path: Path, image_size: tuple[int, int] | None
) -> tuple[CameraIntrinsics, str, tuple[float, ...]]:
    """(intrinsics, distortion model, distortion coefficients) from either file format."""
    if "camera_matrix" in values:  # ROS camera_calibration format
        k = [float(v) for v in values["camera_matrix"]["data"]]
        fx, cx, fy, cy = k[0], k[2], k[4], k[5]
        width, height = values.get("image_width"), values.get("image_height")
        distortion = values.get("distortion_coefficients", {}).get("data", [])
    else:
        missing = [key for key in _INTRINSICS_KEYS if key not in values]
        if missing:
            raise IntrinsicsFileError(f"intrinsics file {path}: missing keys {missing}; {_EXPECTED_INTRINSICS}")
        fx, fy, cx, cy = (float(values[key]) for key in _INTRINSICS_KEYS)
        width, height = values.get("width"), values.get("height")
        distortion = values.get("d", [])
    if width is None or height is None:
        if image_size is None:
            raise IntrinsicsFileError(f"intrinsics file {path} states no width/height and no image gives one")
        width, height = image_size
    intrinsics = CameraIntrinsics(fx, fy, cx, cy, int(width), int(height))
    return intrinsics, str(values.get("distortion_model", "plumb_bob")), tuple(float(v) for v in distortion)


@dataclass
class FolderMeta:
    """Contents of ``intrinsics.yaml`` in a folder dataset (the writer and reader share it).

    ``depth_scale``: a depth PNG value divided by it gives metres (ignored for ``.npy`` depth).
    """

    intrinsics: CameraIntrinsics
    depth_scale: float = NYU_DEPTH_SCALE


def write_folder_meta(root: str | Path, meta: FolderMeta) -> Path:
    """Write ``<root>/intrinsics.yaml``: fx, fy, cx, cy, width, height, depth_scale."""
    path = Path(root) / FOLDER_META_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    camera = meta.intrinsics
    values = {key: float(getattr(camera, key)) for key in _INTRINSICS_KEYS}
    values.update(width=int(camera.width), height=int(camera.height), depth_scale=float(meta.depth_scale))
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def read_folder_meta(root: str | Path) -> FolderMeta:
    """Read ``<root>/intrinsics.yaml``; raises :class:`IntrinsicsFileError` saying what is missing or wrong."""
    path = Path(root) / FOLDER_META_FILE
    parsed = read_intrinsics_file(path)  # no image size to fall back on: the file must state it
    try:
        depth_scale = float(parsed.values.get("depth_scale", NYU_DEPTH_SCALE))
    except (TypeError, ValueError) as exc:
        raise IntrinsicsFileError(f"intrinsics file {path}: depth_scale {exc}") from exc
    return FolderMeta(parsed.camera.intrinsics, depth_scale)


def write_folder_frame(
    root: str | Path,
    name: str,
    rgb: np.ndarray,
    depth: np.ndarray | None,
    meta: FolderMeta,
    depth_format: Literal["png", "npy"] = "png",
) -> tuple[Path, Path | None]:
    """Write one frame of a folder dataset: ``rgb/<name>.png`` and ``depth/<name>.png|.npy``."""
    root = Path(root)
    rgb_path = write_rgb(root / "rgb" / f"{name}.png", rgb)
    if depth is None:
        return rgb_path, None
    if depth_format == "npy":
        depth_path = root / "depth" / f"{name}.npy"
        depth_path.parent.mkdir(parents=True, exist_ok=True)
        np.save(depth_path, depth.astype(np.float32))
    elif depth_format == "png":
        depth_path = write_depth_png(root / "depth" / f"{name}.png", depth, meta.depth_scale)
    else:
        raise ValueError(f"unknown depth format {depth_format!r}; expected 'png' or 'npy'")
    return rgb_path, depth_path


def list_folder_frames(root: str | Path) -> list[tuple[str, str | None]]:
    """(rgb, depth or None) paths relative to ``root``, paired by file stem, sorted by name."""
    root = Path(root)
    depth_by_stem: dict[str, str] = {}
    for path in sorted((root / "depth").glob("*")):
        suffix = path.suffix.lower()
        # A .npy beside a .png of the same name wins: it holds metres without quantisation.
        if suffix == ".npy" or (suffix == ".png" and path.stem not in depth_by_stem):
            depth_by_stem[path.stem] = f"depth/{path.name}"
    frames = []
    for path in sorted((root / "rgb").glob("*")):
        if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
            frames.append((f"rgb/{path.name}", depth_by_stem.get(path.stem)))
    return frames


# ----------------------------------------------------------------------------------------------
# Synthetic datasets in the real layouts


@dataclass
class SyntheticDatasetPaths:
    """Where a synthetic dataset was written: roots to put in a dataset config, and split files.

    ``train_data_path``/``train_gt_path`` are the roots of the training split's paths and
    ``test_data_path``/``test_gt_path`` those of the test split (they differ for NYU).
    """

    root: Path
    train_split: Path
    test_split: Path
    train_data_path: Path
    train_gt_path: Path
    test_data_path: Path
    test_gt_path: Path
    focal: float


# Real drive numbers of 2011_09_26, so synthetic folders look like the Eigen split's.
_KITTI_DRIVES = (1, 2, 5, 9, 11, 13, 14, 15, 17, 18, 19, 20, 22, 23, 27, 28, 29, 32, 35, 36, 39, 46, 48, 51)
_NYU_SCENE_TYPES = (
    "kitchen",
    "living_room",
    "bedroom",
    "bathroom",
    "office",
    "dining_room",
    "classroom",
    "study",
    "bookstore",
    "playroom",
)


def _frames_per_group(n_frames: int, n_groups: int) -> list[int]:
    base, extra = divmod(n_frames, n_groups)
    return [base + (1 if i < extra else 0) for i in range(n_groups)]


def write_synthetic_kitti(
    root: str | Path,
    n_train: int,
    n_test: int,
    *,
    intrinsics: CameraIntrinsics = KITTI_INTRINSICS,
    n_drives: int = 4,
    sparsity: Literal["scanlines", "random", "dense"] = "scanlines",
    keep_fraction: float = 0.2,
    n_test_without_gt: int = 0,
    seed: int = 0,
    date: str = "2011_09_26",
    progress: bool = False,
) -> SyntheticDatasetPaths:
    """Render street scenes into the KITTI/BTS layout under ``root``.

    Layout: ``root/raw`` (RGB), ``root/data_depth_annotated`` (uint16 ground truth, depth * 256,
    LiDAR-like sparse unless ``sparsity='dense'``) and
    ``root/splits/kitti_eigen_{train,test}_files_with_gt.txt``.
    Train and test frames come from different drives (as in the Eigen split); the first
    ``n_test_without_gt`` test lines have depth ``None`` and no ground-truth file.
    """
    root = Path(root)
    raw_root, gt_root = root / "raw", root / "data_depth_annotated"
    n_drives = max(2, min(n_drives, len(_KITTI_DRIVES)))
    n_test_drives = max(1, n_drives // 4)
    drives = list(_KITTI_DRIVES[:n_drives])
    train_drives, test_drives = drives[:-n_test_drives], drives[-n_test_drives:]
    rng = np.random.default_rng(seed)

    def write_drives(
        drive_list: list[int], n_frames: int, missing_gt: int
    ) -> list[tuple[str, str | None, float]]:
        rows: list[tuple[str, str | None, float]] = []
        for drive, count in zip(drive_list, _frames_per_group(n_frames, len(drive_list))):
            if count == 0:
                continue
            scene = make_scene(SceneConfig(kind="street", seed=seed * 1000 + drive))
            frames = render_sequence(scene, intrinsics, count, yaw_amplitude_deg=float(rng.uniform(2.0, 6.0)))
            first_frame = int(rng.integers(0, 50))
            for rendered in tqdm(frames, total=count, desc=f"KITTI drive {drive:04d}", disable=not progress):
                frame = first_frame + rendered.index
                rgb, depth = rendered.rgb, rendered.depth
                rgb_rel = kitti_rgb_relpath(date, drive, frame)
                write_rgb(raw_root / rgb_rel, rgb)
                if len(rows) < missing_gt:
                    rows.append((rgb_rel, None, intrinsics.fx))
                    continue
                if sparsity != "dense":
                    depth = sparsify_like_lidar(depth, rng, keep_fraction, pattern=sparsity)
                depth_rel = kitti_depth_relpath(date, drive, frame)
                write_depth_png(gt_root / depth_rel, depth, KITTI_DEPTH_SCALE)
                rows.append((rgb_rel, depth_rel, intrinsics.fx))
        return rows

    train_split = write_split_file(
        root / "splits" / "kitti_eigen_train_files_with_gt.txt", write_drives(train_drives, n_train, 0)
    )
    test_split = write_split_file(
        root / "splits" / "kitti_eigen_test_files_with_gt.txt",
        write_drives(test_drives, n_test, n_test_without_gt),
    )
    LOGGER.info("wrote synthetic KITTI to %s (%d train, %d test frames)", root, n_train, n_test)
    return SyntheticDatasetPaths(
        root, train_split, test_split, raw_root, gt_root, raw_root, gt_root, intrinsics.fx
    )


def _stable_hash(name: str) -> int:
    """A stable (not salted per process, unlike ``hash``) integer hash of a string."""
    value = 2166136261
    for byte in name.encode():
        value = ((value ^ byte) * 16777619) & 0xFFFFFFFF
    return value


def nyu_scene_directories(n_directories: int) -> list[str]:
    """Scene directory names like the real ones: every third scene recorded twice (``..a``/``..b``).

    Directories with the same stem (``kitchen_0028a``, ``kitchen_0028b``) form one scene group.
    """
    names: list[str] = []
    group = 0
    while len(names) < n_directories:
        stem = f"{_NYU_SCENE_TYPES[group % len(_NYU_SCENE_TYPES)]}_{group * 7 + 1:04d}"
        names.extend([f"{stem}a", f"{stem}b"] if group % 3 == 0 else [stem])
        group += 1
    return names[:n_directories]


def write_synthetic_nyu(
    root: str | Path,
    n_train: int,
    n_test: int,
    *,
    intrinsics: CameraIntrinsics = NYU_INTRINSICS,
    n_scenes: int = 8,
    n_test_scenes: int = 3,
    seed: int = 0,
    progress: bool = False,
) -> SyntheticDatasetPaths:
    """Render indoor scenes into the NYU Depth v2 / BTS layout under ``root``.

    Layout: ``root/sync/<scene_dir>/rgb_XXXXX.jpg`` + ``sync_depth_XXXXX.png`` (uint16, depth * 1000),
    ``root/official_splits/test/<scene_type>/...`` and
    ``root/splits/nyudepthv2_{train,test}_files_with_gt.txt``.
    ``n_scenes`` training directories (see ``nyu_scene_directories``: some groups have two
    directories, so a by-scene validation holdout has groups to hold out). No separate validation
    tree is written: validation is held out of the training list by scene group
    (``training.splits.holdout_validation``), as the authors did.
    """
    root = Path(root)
    sync_root, test_root = root / "sync", root / "official_splits" / "test"
    rng = np.random.default_rng(seed)

    def render_frames(scene_seed: int, count: int, yaw_cycles: float) -> list[tuple[np.ndarray, np.ndarray]]:
        scene = make_scene(SceneConfig(kind="indoor", seed=scene_seed))
        frames = render_sequence(
            scene, intrinsics, count, yaw_amplitude_deg=float(rng.uniform(3.0, 8.0)), yaw_cycles=yaw_cycles
        )
        return [(frame.rgb, frame.depth) for frame in frames]

    train_rows: list[tuple[str, str | None, float]] = []
    directories = nyu_scene_directories(n_scenes)
    for directory, count in zip(
        tqdm(directories, desc="NYU train scenes", disable=not progress),
        _frames_per_group(n_train, len(directories)),
    ):
        if count == 0:
            continue
        # "a"/"b" recordings of one room share the room (same seed) but not the camera path.
        stem = directory[:-1] if directory[-1].isalpha() else directory
        scene_seed = seed * 1000 + _stable_hash(stem) % 500
        frames = render_frames(scene_seed, count, yaw_cycles=1.0 if directory.endswith("b") else 0.5)
        frame_id = int(rng.integers(1, 40))
        for rgb, depth in frames:
            rgb_rel, depth_rel = nyu_train_relpaths(directory, frame_id)
            write_rgb(sync_root / rgb_rel.lstrip("/"), rgb)
            write_depth_png(sync_root / depth_rel.lstrip("/"), depth, NYU_DEPTH_SCALE)
            train_rows.append((rgb_rel, depth_rel, intrinsics.fx))
            frame_id += int(rng.integers(1, 4))

    test_rows: list[tuple[str, str | None, float]] = []
    test_types = [_NYU_SCENE_TYPES[(i * 3 + 1) % len(_NYU_SCENE_TYPES)] for i in range(max(1, n_test_scenes))]
    frame_id = 1
    for i, (scene_type, count) in enumerate(zip(test_types, _frames_per_group(n_test, len(test_types)))):
        if count == 0:
            continue
        # Test rooms use seeds no training room uses.
        for rgb, depth in render_frames(seed * 1000 + 500 + i, count, yaw_cycles=0.75):
            rgb_rel, depth_rel = nyu_test_relpaths(scene_type, frame_id)
            write_rgb(test_root / rgb_rel, rgb)
            write_depth_png(test_root / depth_rel, depth, NYU_DEPTH_SCALE)
            test_rows.append((rgb_rel, depth_rel, intrinsics.fx))
            frame_id += int(rng.integers(1, 6))

    train_split = write_split_file(root / "splits" / "nyudepthv2_train_files_with_gt.txt", train_rows)
    test_split = write_split_file(root / "splits" / "nyudepthv2_test_files_with_gt.txt", test_rows)
    LOGGER.info("wrote synthetic NYU to %s (%d train, %d test frames)", root, len(train_rows), len(test_rows))
    return SyntheticDatasetPaths(
        root, train_split, test_split, sync_root, sync_root, test_root, test_root, intrinsics.fx
    )


def write_synthetic_folder(
    root: str | Path,
    n_frames: int,
    *,
    kind: Literal["indoor", "street"] = "indoor",
    intrinsics: CameraIntrinsics = NYU_INTRINSICS,
    depth_format: Literal["png", "npy"] = "png",
    depth_scale: float = NYU_DEPTH_SCALE,
    seed: int = 0,
) -> FolderMeta:
    """Render one synthetic sequence into the folder layout and return its ``intrinsics.yaml`` contents."""
    meta = FolderMeta(intrinsics, depth_scale)
    write_folder_meta(root, meta)
    for frame in render_sequence(make_scene(SceneConfig(kind=kind, seed=seed)), intrinsics, n_frames):
        write_folder_frame(root, f"{frame.index:06d}", frame.rgb, frame.depth, meta, depth_format)
    return meta
