"""PLY writing and reading."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from space_clip_ros.data.ply import read_ply, write_ply


@pytest.fixture
def points() -> np.ndarray:
    values = np.random.default_rng(4).normal(0.0, 3.0, (50, 3)).astype(np.float32)
    values[3] = [np.nan, 1.0, 2.0]
    values[17] = [1.0, np.inf, 2.0]
    values[40, 2] = -np.inf
    return values


@pytest.fixture
def colors() -> np.ndarray:
    return np.random.default_rng(5).integers(0, 256, (50, 3), dtype=np.uint8)


FINITE = np.setdiff1d(np.arange(50), [3, 17, 40])


@pytest.mark.parametrize("binary", [True, False])
def test_round_trip_skips_non_finite_points(tmp_path, points, colors, binary):
    path = tmp_path / "cloud.ply"
    assert write_ply(path, points, colors, binary=binary) == 47
    read_points, read_colors = read_ply(path)
    assert read_points.dtype == np.float32 and read_colors.dtype == np.uint8
    np.testing.assert_array_equal(read_points, points[FINITE])  # exact, float32 in both formats
    np.testing.assert_array_equal(read_colors, colors[FINITE])


@pytest.mark.parametrize("binary", [True, False])
def test_points_without_colours(tmp_path, points, binary):
    path = tmp_path / "xyz.ply"
    write_ply(path, points, binary=binary)
    read_points, read_colors = read_ply(path)
    assert read_colors is None
    np.testing.assert_array_equal(read_points, points[FINITE])


def test_binary_header_and_body_follow_the_ply_spec(tmp_path, points, colors):
    path = tmp_path / "cloud.ply"
    write_ply(path, points[:2], colors[:2])
    content = path.read_bytes()
    header, body = content.split(b"end_header\n")
    lines = header.decode("ascii").splitlines()
    assert lines[:2] == ["ply", "format binary_little_endian 1.0"]
    assert "element vertex 2" in lines
    assert lines[-6:] == [
        "property float x",
        "property float y",
        "property float z",
        "property uchar red",
        "property uchar green",
        "property uchar blue",
    ]
    assert len(body) == 2 * (3 * 4 + 3)
    assert struct.unpack_from("<3f3B", body, 0) == (*points[0].tolist(), *colors[0].tolist())


def test_ascii_body_is_one_line_per_vertex(tmp_path, points, colors):
    path = tmp_path / "cloud.ply"
    kept = FINITE[:5]
    write_ply(path, points[kept], colors[kept], binary=False)
    header, body = path.read_text().split("end_header\n")
    assert "format ascii 1.0" in header
    rows = body.strip().splitlines()
    assert len(rows) == 5
    assert [int(value) for value in rows[4].split()[3:]] == colors[kept[4]].tolist()


def test_empty_cloud(tmp_path):
    path = tmp_path / "empty.ply"
    assert write_ply(path, np.full((2, 3), np.nan, np.float32)) == 0
    read_points, _ = read_ply(path)
    assert read_points.shape == (0, 3)


def test_reads_big_endian_doubles_after_another_element(tmp_path):
    # Written by hand: a 'camera' element before the vertices, big-endian doubles, extra property.
    header = (
        "ply\nformat binary_big_endian 1.0\ncomment hand made\n"
        "element camera 1\nproperty float focal\n"
        "element vertex 2\nproperty double x\nproperty double y\nproperty double z\n"
        "property float intensity\nproperty uchar red\nproperty uchar green\nproperty uchar blue\n"
        "end_header\n"
    ).encode("ascii")
    body = struct.pack(">f", 525.0)
    body += struct.pack(">dddf3B", 1.5, -2.0, 3.25, 0.7, 10, 20, 30)
    body += struct.pack(">dddf3B", 4.0, 5.0, 6.0, 0.1, 40, 50, 60)
    path = tmp_path / "hand.ply"
    path.write_bytes(header + body)
    read_points, read_colors = read_ply(path)
    np.testing.assert_array_equal(read_points, [[1.5, -2.0, 3.25], [4.0, 5.0, 6.0]])
    np.testing.assert_array_equal(read_colors, [[10, 20, 30], [40, 50, 60]])


def test_bad_inputs_are_refused(tmp_path, points):
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        write_ply(tmp_path / "bad.ply", points[:, :2])
    with pytest.raises(ValueError, match="uint8"):
        write_ply(tmp_path / "bad.ply", points, np.zeros((50, 3), np.float32))
    not_ply = tmp_path / "not.ply"
    not_ply.write_bytes(b"solid cube\n")
    with pytest.raises(ValueError, match="not a PLY file"):
        read_ply(not_ply)
    truncated = tmp_path / "truncated.ply"
    write_ply(truncated, points[:4])
    truncated.write_bytes(truncated.read_bytes()[:-5])
    with pytest.raises(ValueError, match="ends after"):
        read_ply(truncated)
