"""Datasets over synthetic KITTI / NYU / folder trees written in the real on-disk formats."""

from __future__ import annotations

import logging
import shutil

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from space_clip_ros.data.formats import (
    CorruptFileError,
    IntrinsicsFileError,
    list_folder_frames,
    read_folder_meta,
    read_rgb,
    sparsify_like_lidar,
    write_synthetic_folder,
    write_synthetic_kitti,
    write_synthetic_nyu,
)
from space_clip_ros.data.synthetic import KITTI_INTRINSICS, NYU_INTRINSICS
from space_clip_ros.training.augment import AugmenterConfig
from space_clip_ros.training.datasets import BadSampleError, DepthDataset, DepthDatasetConfig
from space_clip_ros.training.splits import holdout_validation, parse_split_file, scene_group

KITTI_SMALL = KITTI_INTRINSICS.scaled_to(320, 96, align_pixel_centres=True)
NYU_SMALL = NYU_INTRINSICS.scaled_to(160, 120, align_pixel_centres=True)


@pytest.fixture(scope="module")
def kitti(tmp_path_factory):
    root = tmp_path_factory.mktemp("kitti")
    return write_synthetic_kitti(
        root,
        n_train=6,
        n_test=4,
        intrinsics=KITTI_SMALL,
        n_drives=4,
        n_test_without_gt=1,
        keep_fraction=0.2,
        seed=1,
    )


@pytest.fixture(scope="module")
def nyu(tmp_path_factory):
    root = tmp_path_factory.mktemp("nyu")
    return write_synthetic_nyu(root, n_train=12, n_test=4, intrinsics=NYU_SMALL, n_scenes=6, seed=2)


def kitti_config(paths, **overrides) -> DepthDatasetConfig:
    values = dict(
        kind="kitti",
        data_path=paths.train_data_path,
        gt_path=paths.train_gt_path,
        split_file=paths.train_split,
        kb_crop_size=(88, 304),
        augment=AugmenterConfig(crop_size=(64, 128)),
    )
    values.update(overrides)
    return DepthDatasetConfig(**values)


def test_kitti_tree_has_the_real_layout(kitti):
    lines = kitti.train_split.read_text().splitlines()
    rgb, depth, focal = lines[0].split()
    assert (
        rgb.startswith("2011_09_26/2011_09_26_drive_") and "/image_02/data/" in rgb and rgb.endswith(".png")
    )
    assert "_sync/proj_depth/groundtruth/image_02/" in depth
    assert float(focal) == pytest.approx(KITTI_SMALL.fx)
    assert (kitti.train_data_path / rgb).is_file() and (kitti.train_gt_path / depth).is_file()
    raw = cv2.imread(str(kitti.train_gt_path / depth), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (96, 320)
    # Sparse like projected LiDAR: nothing in the top band, 5-30 % of pixels overall.
    assert not raw[:20].any()
    assert 0.05 < (raw > 0).mean() < 0.3
    # Train and test drives are disjoint, and the test list has a line without ground truth.
    test_entries = parse_split_file(kitti.test_split)
    train_entries = parse_split_file(kitti.train_split)
    assert {scene_group(e.rgb_path) for e in train_entries}.isdisjoint(
        {scene_group(e.rgb_path) for e in test_entries}
    )
    assert sum(e.depth_path is None for e in test_entries) == 1


def test_kitti_eval_reads_uint16_over_256_at_full_size(kitti):
    config = kitti_config(
        kitti,
        mode="eval",
        split_file=kitti.test_split,
        data_path=kitti.test_data_path,
        gt_path=kitti.test_gt_path,
    )
    dataset = DepthDataset(config)
    assert len(dataset) == 3 and dataset.no_ground_truth == 1
    sample = dataset[0]
    assert sample["image"].shape == (3, 96, 320) and sample["image"].dtype == torch.float32
    assert sample["depth"].shape == (1, 96, 320) and sample["depth"].dtype == torch.float32
    assert float(sample["image"].min()) >= 0.0 and float(sample["image"].max()) <= 1.0
    rgb_path, depth_path = dataset.file_paths(0)
    raw = cv2.imread(str(depth_path), cv2.IMREAD_UNCHANGED)
    np.testing.assert_allclose(sample["depth"][0].numpy(), raw.astype(np.float32) / 256.0)
    np.testing.assert_allclose(
        sample["image"].permute(1, 2, 0).numpy(), read_rgb(rgb_path) / 255.0, atol=1e-6
    )
    assert sample["focal"] == pytest.approx(KITTI_SMALL.fx)
    assert sample["path"] == dataset.entries[0].rgb_path
    assert float(sample["depth"].max()) <= 80.0 and float(sample["depth"].max()) > 5.0


def test_kitti_train_applies_kb_crop_then_random_crop(kitti):
    dataset = DepthDataset(kitti_config(kitti))
    assert len(dataset) == 6
    sample = dataset[2]
    assert sample["image"].shape == (3, 64, 128) and sample["depth"].shape == (1, 64, 128)
    depth = sample["depth"]
    assert torch.all((depth == 0) | ((depth > 1e-3) & (depth < 80.0)))
    # The kb crop keeps the bottom rows: full-size frames are refused when too small for it.
    too_big = DepthDataset(kitti_config(kitti, kb_crop_size=(100, 304), strict=True))
    with pytest.raises(BadSampleError, match="wrong size"):
        too_big[0]


def test_given_entries_are_used_without_reading_a_split_file(kitti, tmp_path):
    entries = parse_split_file(kitti.train_split)[1:4]
    never_written = tmp_path / "train.txt"  # only names the list in messages
    dataset = DepthDataset(kitti_config(kitti, split_file=never_written), entries=entries)
    assert dataset.entries == entries and not never_written.exists()
    assert dataset.file_paths(0) == DepthDataset(kitti_config(kitti)).file_paths(1)
    assert dataset[0]["image"].shape == (3, 64, 128)
    unnamed = DepthDataset(kitti_config(kitti, split_file=None), entries=entries)
    assert len(unnamed) == 3
    with pytest.raises(ValueError, match="needs a split_file"):
        DepthDataset(kitti_config(kitti, split_file=None))


def test_augmentation_is_reproducible_per_epoch(kitti):
    dataset = DepthDataset(kitti_config(kitti, seed=5))
    first, again = dataset[1], dataset[1]
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["depth"], again["depth"])
    changed = []
    for epoch in range(1, 4):
        dataset.set_epoch(epoch)
        changed.append(not torch.equal(dataset[1]["depth"], first["depth"]))
    assert any(changed)


def test_nyu_trees_read_back_with_depth_over_1000(nyu):
    lines = nyu.train_split.read_text().splitlines()
    assert all(line.startswith("/") for line in lines)
    rgb, depth, _ = lines[0].split()
    assert rgb.endswith(".jpg") and "/rgb_" in rgb and "/sync_depth_" in depth
    assert nyu.test_data_path.parts[-2:] == ("official_splits", "test")

    for split, data_path, mode in (
        (nyu.train_split, nyu.train_data_path, "train"),
        (nyu.test_split, nyu.test_data_path, "eval"),
    ):
        dataset = DepthDataset(
            DepthDatasetConfig(kind="nyu", data_path=data_path, split_file=split, mode=mode)
        )
        sample = dataset[0]
        # NYU trains on the full image: no crop in either mode.
        assert sample["image"].shape == (3, 120, 160) and sample["depth"].shape == (1, 120, 160)
        assert sample["focal"] == pytest.approx(NYU_SMALL.fx)
    raw = cv2.imread(str(dataset.file_paths(0)[1]), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16
    np.testing.assert_allclose(sample["depth"][0].numpy(), raw / 1000.0, rtol=1e-6)
    assert float(sample["depth"].min()) > 0.3 and float(sample["depth"].max()) < 10.0  # dense, indoor range


def test_nyu_scene_groups_support_a_validation_holdout(nyu):
    entries = parse_split_file(nyu.train_split)
    directories = {e.rgb_path.split("/")[0] for e in entries}
    groups = {scene_group(e.rgb_path) for e in entries}
    assert len(directories) == 6 and len(groups) < len(directories)  # e.g. kitchen_0001a + kitchen_0001b
    train, val = holdout_validation(entries, fraction=0.25, seed=0)
    assert train and val
    assert {scene_group(e.rgb_path) for e in train}.isdisjoint({scene_group(e.rgb_path) for e in val})


@pytest.mark.parametrize("depth_format", ["png", "npy"])
def test_folder_layout_round_trip(tmp_path, depth_format):
    meta = write_synthetic_folder(
        tmp_path, 3, intrinsics=NYU_SMALL, depth_format=depth_format, depth_scale=5000.0
    )
    assert read_folder_meta(tmp_path) == meta and meta.intrinsics == NYU_SMALL
    frames = list_folder_frames(tmp_path)
    assert [f[0] for f in frames] == ["rgb/000000.png", "rgb/000001.png", "rgb/000002.png"]
    assert all(f[1].endswith(f".{depth_format}") for f in frames)
    dataset = DepthDataset(DepthDatasetConfig(kind="folder", data_path=tmp_path, mode="eval"))
    assert len(dataset) == 3 and dataset.depth_scale == 5000.0
    sample = dataset[1]
    assert sample["focal"] == pytest.approx(NYU_SMALL.fx)
    assert sample["depth"].shape == (1, 120, 160)
    if depth_format == "png":
        raw = cv2.imread(str(tmp_path / "depth" / "000001.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_allclose(sample["depth"][0].numpy(), raw / 5000.0, rtol=1e-6)
    else:
        np.testing.assert_array_equal(sample["depth"][0].numpy(), np.load(tmp_path / "depth" / "000001.npy"))


def test_folder_meta_names_missing_keys(tmp_path):
    (tmp_path / "intrinsics.yaml").write_text("fx: 500\nfy: 500\n")
    with pytest.raises(ValueError, match="cx"):
        read_folder_meta(tmp_path)
    (tmp_path / "intrinsics.yaml").write_text("fx: 0\nfy: 500\ncx: 1\ncy: 1\nwidth: 4\nheight: 3\n")
    with pytest.raises(IntrinsicsFileError, match="focal length fx"):
        read_folder_meta(tmp_path)


@pytest.fixture
def damaged_nyu(nyu, tmp_path):
    """A copy of the NYU test tree with a missing RGB, a truncated depth PNG and a wrong-size image."""
    root = tmp_path / "nyu"
    shutil.copytree(nyu.root, root)
    data_path = root / "official_splits" / "test"
    entries = parse_split_file(root / "splits" / "nyudepthv2_test_files_with_gt.txt")
    (data_path / entries[0].rgb_path).unlink()
    depth_file = data_path / entries[1].depth_path
    depth_file.write_bytes(depth_file.read_bytes()[:200])
    cv2.imwrite(str(data_path / entries[2].rgb_path), np.zeros((50, 50, 3), np.uint8))
    return root, data_path, entries


def test_bad_files_are_skipped_counted_and_reported(damaged_nyu, caplog):
    root, data_path, entries = damaged_nyu
    split = root / "splits" / "nyudepthv2_test_files_with_gt.txt"
    with caplog.at_level(logging.WARNING):
        dataset = DepthDataset(
            DepthDatasetConfig(kind="nyu", data_path=data_path, split_file=split, mode="eval")
        )
        paths = [dataset[i]["path"] for i in range(len(dataset))]
    # Every request is answered with the next readable sample.
    assert paths == [entries[3].rgb_path] * 4
    skipped = dict(dataset.skipped)
    assert skipped == {
        entries[0].rgb_path: "missing file",
        entries[1].rgb_path: "unreadable or truncated file",
        entries[2].rgb_path: "wrong size",
    }
    with caplog.at_level(logging.WARNING):
        report = dataset.log_skipped()
    assert report.total == 3
    assert "skipped 3 samples" in caplog.text and entries[1].rgb_path in caplog.text


def test_skips_made_in_dataloader_workers_reach_the_main_process(damaged_nyu):
    root, data_path, entries = damaged_nyu
    split = root / "splits" / "nyudepthv2_test_files_with_gt.txt"
    dataset = DepthDataset(
        DepthDatasetConfig(kind="nyu", data_path=data_path, split_file=split, mode="eval", check_files=False)
    )
    loader = DataLoader(dataset, batch_size=2, num_workers=2)
    batches = list(loader)
    assert sum(len(b["path"]) for b in batches) == 4 and batches[0]["image"].shape == (2, 3, 120, 160)
    assert sorted(path for path, _ in dataset.skipped) == sorted(e.rgb_path for e in entries[:3])


def test_strict_mode_raises_at_the_first_bad_file(damaged_nyu):
    root, data_path, entries = damaged_nyu
    split = root / "splits" / "nyudepthv2_test_files_with_gt.txt"
    with pytest.raises(BadSampleError, match="missing file"):
        DepthDataset(DepthDatasetConfig(kind="nyu", data_path=data_path, split_file=split, strict=True))
    dataset = DepthDataset(
        DepthDatasetConfig(
            kind="nyu", data_path=data_path, split_file=split, strict=True, check_files=False, mode="eval"
        )
    )
    with pytest.raises(BadSampleError, match="truncated PNG"):
        dataset[1]


def test_sparsify_patterns_keep_true_values():
    depth = np.full((60, 80), 4.0, dtype=np.float32)
    rng = np.random.default_rng(0)
    random_sparse = sparsify_like_lidar(depth, rng, keep_fraction=0.1, pattern="random")
    lines = sparsify_like_lidar(depth, rng, keep_fraction=0.2, pattern="scanlines")
    assert 0.05 < (random_sparse > 0).mean() < 0.15
    assert set(np.unique(lines)) == {0.0, 4.0}
    assert not lines[:18].any()  # top 30 % empty
    assert (lines[18:] > 0).mean() == pytest.approx(0.2, abs=0.05)


def test_set_epoch_reaches_persistent_workers(kitti):
    dataset = DepthDataset(kitti_config(kitti, seed=3))
    loader = DataLoader(dataset, batch_size=6, num_workers=1, persistent_workers=True)
    epoch0 = next(iter(loader))["depth"]
    dataset.set_epoch(1)
    epoch1 = next(iter(loader))["depth"]
    assert not torch.equal(epoch0, epoch1)
    # The worker drew exactly what the main process draws for epoch 1.
    assert torch.equal(epoch1[4], dataset[4]["depth"])


def test_truncated_images_are_detected_by_the_readers(tmp_path):
    rgb = (np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)
    jpeg = tmp_path / "frame.jpg"
    cv2.imwrite(str(jpeg), rgb)
    data = jpeg.read_bytes()
    jpeg.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(CorruptFileError, match="truncated JPEG"):
        read_rgb(jpeg)
    # Bytes after the end-of-image marker (some cameras append metadata) are tolerated.
    jpeg.write_bytes(data + b"trailing metadata")
    assert read_rgb(jpeg).shape == (40, 60, 3)
    png = tmp_path / "frame.png"
    cv2.imwrite(str(png), rgb)
    png.write_bytes(png.read_bytes()[:-30])
    with pytest.raises(CorruptFileError, match="truncated PNG"):
        read_rgb(png)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(CorruptFileError, match="empty"):
        read_rgb(tmp_path / "empty.png")
    with pytest.raises(FileNotFoundError):
        read_rgb(tmp_path / "absent.png")
