"""BTS split files and the by-scene validation holdout."""

from __future__ import annotations

from pathlib import Path

import pytest

from space_clip_ros.data.formats import write_split_file
from space_clip_ros.training.splits import SplitEntry, holdout_validation, parse_split_file, scene_group

# The real lists live beside the repository (../shared/data/splits) and are never copied into it.
REAL_SPLITS = Path(__file__).resolve().parents[2] / "shared" / "data" / "splits"
needs_real_splits = pytest.mark.skipif(
    not REAL_SPLITS.is_dir(),
    reason=f"real BTS split files not found at {REAL_SPLITS} (kept outside the repo)",
)


@needs_real_splits
@pytest.mark.parametrize(
    ("name", "lines", "without_depth"),
    [
        ("kitti_eigen_train_files_with_gt.txt", 23158, 0),
        ("kitti_eigen_test_files_with_gt.txt", 697, 45),
        ("nyudepthv2_train_files_with_gt.txt", 24231, 0),
        ("nyudepthv2_test_files_with_gt.txt", 654, 0),
    ],
)
def test_real_split_files_parse_with_exact_counts(name, lines, without_depth):
    entries = parse_split_file(REAL_SPLITS / name)
    assert len(entries) == lines
    assert sum(entry.depth_path is None for entry in entries) == without_depth
    assert all(not entry.rgb_path.startswith("/") for entry in entries)
    assert all(entry.focal > 500 for entry in entries)


@needs_real_splits
def test_real_lines_keep_their_paths_and_focals():
    nyu = parse_split_file(REAL_SPLITS / "nyudepthv2_train_files_with_gt.txt")
    assert nyu[0] == SplitEntry("kitchen_0028b/rgb_00045.jpg", "kitchen_0028b/sync_depth_00045.png", 518.8579)
    kitti = parse_split_file(REAL_SPLITS / "kitti_eigen_test_files_with_gt.txt")
    assert kitti[7] == SplitEntry(
        "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000075.png", None, 721.5377
    )


@needs_real_splits
def test_real_nyu_holdout_reproduces_the_authors_split():
    entries = parse_split_file(REAL_SPLITS / "nyudepthv2_train_files_with_gt.txt")
    train, val = holdout_validation(entries, fraction=0.1, seed=20260926)
    train_groups = {scene_group(e.rgb_path) for e in train}
    val_groups = {scene_group(e.rgb_path) for e in val}
    assert (len(train), len(val)) == (21974, 2257)
    assert (len(train_groups), len(val_groups)) == (224, 25)
    assert not train_groups & val_groups
    # Grouping matters: several rooms were recorded more than once (kitchen_0028a, kitchen_0028b).
    directories = {e.rgb_path.split("/")[0] for e in entries}
    assert len(directories) > len(train_groups | val_groups) == 249


def test_last_line_without_newline_and_blank_lines(tmp_path):
    path = tmp_path / "split.txt"
    path.write_text("a/rgb_1.jpg a/d_1.png 518.8579\n\n   \nb/rgb_2.jpg None 500.5")  # no trailing newline
    entries = parse_split_file(path)
    assert entries == [
        SplitEntry("a/rgb_1.jpg", "a/d_1.png", 518.8579),
        SplitEntry("b/rgb_2.jpg", None, 500.5),
    ]


@pytest.mark.parametrize("bad_line", ["only_two fields", "a b c d", "a b not_a_number"])
def test_malformed_line_names_file_and_line(tmp_path, bad_line):
    path = tmp_path / "broken.txt"
    path.write_text(f"a.png b.png 1.0\n{bad_line}\n")
    with pytest.raises(ValueError, match=r"broken\.txt:2"):
        parse_split_file(path)


def test_written_split_file_reads_back_with_leading_slash_stripped(tmp_path):
    rows = [
        ("/kitchen_0028b/rgb_00045.jpg", "/kitchen_0028b/sync_depth_00045.png", 518.8579),
        ("2011_09_26/x/image_02/data/0000000001.png", None, 721.5377),
    ]
    path = write_split_file(tmp_path / "split.txt", rows)
    assert path.read_text().splitlines()[1] == "2011_09_26/x/image_02/data/0000000001.png None 721.5377"
    assert parse_split_file(path) == [
        SplitEntry("kitchen_0028b/rgb_00045.jpg", "kitchen_0028b/sync_depth_00045.png", 518.8579),
        SplitEntry("2011_09_26/x/image_02/data/0000000001.png", None, 721.5377),
    ]


@pytest.mark.parametrize(
    ("path", "group"),
    [
        ("/kitchen_0028b/rgb_00045.jpg", "kitchen_0028"),
        ("kitchen_0028a/rgb_00001.jpg", "kitchen_0028"),
        ("living_room_0019/rgb_00111.jpg", "living_room_0019"),
        ("bathroom/rgb_00045.jpg", "bathroom"),
        ("2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png", "2011_09_26_drive_0002_sync"),
        ("frame.png", ""),
    ],
)
def test_scene_group(path, group):
    assert scene_group(path) == group


def _synthetic_entries() -> list[SplitEntry]:
    entries = []
    for group in range(30):
        for letter in ("a", "b") if group % 4 == 0 else ("",):
            for frame in range(group % 5 + 1):
                entries.append(
                    SplitEntry(
                        f"room_{group:04d}{letter}/rgb_{frame:05d}.jpg",
                        f"room_{group:04d}{letter}/sync_depth_{frame:05d}.png",
                        518.8579,
                    )
                )
    return entries


def test_holdout_is_deterministic_disjoint_and_keeps_order():
    entries = _synthetic_entries()
    train, val = holdout_validation(entries, fraction=0.1, seed=123)
    again_train, again_val = holdout_validation(entries, fraction=0.1, seed=123)
    assert (train, val) == (again_train, again_val)
    val_groups = {scene_group(e.rgb_path) for e in val}
    assert len(val_groups) == 3  # round(0.1 * 30)
    assert not val_groups & {scene_group(e.rgb_path) for e in train}
    assert len(train) + len(val) == len(entries)
    assert train == [e for e in entries if e in set(train)]  # original order kept
    other_train, _ = holdout_validation(entries, fraction=0.1, seed=124)
    assert other_train != train


def test_holdout_on_few_groups_keeps_both_sides_non_empty():
    entries = [SplitEntry(f"scene_{g:04d}/rgb_{i:05d}.jpg", "d.png", 1.0) for g in range(3) for i in range(2)]
    train, val = holdout_validation(entries, fraction=0.1, seed=0)
    assert len({scene_group(e.rgb_path) for e in val}) == 1
    assert len(train) == 4
