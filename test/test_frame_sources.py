"""Frame sources of the camera simulator: image folders + intrinsics files, video files, synthetic scenes."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from space_clip_ros.data.camera import CameraIntrinsics
from space_clip_ros.data.frame_sources import (
    FrameSourceConfig,
    FrameSourceError,
    ImageFolderSource,
    SyntheticSource,
    VideoFileSource,
    camera_from_fov,
    load_camera_file,
    open_frame_source,
)
from space_clip_ros.data.synthetic import NYU_INTRINSICS

REAL_FRAMES = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_rgbd" / "kinect_mm"


def _pictures(count: int, height: int = 48, width: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def _write_folder(folder: Path, pictures: list[np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, rgb in enumerate(pictures):
        cv2.imwrite(str(folder / f"frame_{index:03d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def test_folder_source_yields_the_images_with_the_file_intrinsics(tmp_path):
    pictures = _pictures(3)
    _write_folder(tmp_path / "images", pictures)
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    intrinsics = tmp_path / "camera.yaml"
    intrinsics.write_text("fx: 50.0\nfy: 51.0\ncx: 31.5\ncy: 23.5\nwidth: 64\nheight: 48\n")

    source = ImageFolderSource(tmp_path / "images", intrinsics)
    assert source.camera.intrinsics == CameraIntrinsics(50.0, 51.0, 31.5, 23.5, 64, 48)
    frames = list(itertools.islice(source, 5))  # loops by default
    assert [f.index for f in frames] == [0, 1, 2, 0, 1]
    for frame, expected in zip(frames, pictures + pictures[:2], strict=True):
        assert frame.rgb.dtype == np.uint8 and np.array_equal(frame.rgb, expected)  # PNG: exact, RGB order
        assert frame.depth is None
    assert len(list(ImageFolderSource(tmp_path / "images", intrinsics, loop=False))) == 3


def test_folder_source_resizes_and_scales_intrinsics(tmp_path):
    _write_folder(tmp_path, _pictures(2))
    (tmp_path / "intrinsics.yaml").write_text(json.dumps({"fx": 50.0, "fy": 50.0, "cx": 31.5, "cy": 23.5}))
    source = ImageFolderSource(tmp_path, width=32, height=24)  # intrinsics.yaml found by default
    camera = source.camera.intrinsics
    # Centre-aligned resize by 0.5: f halves, c maps as (c + 0.5) * 0.5 - 0.5.
    assert (camera.fx, camera.fy, camera.cx, camera.cy) == (25.0, 25.0, 15.5, 11.5)
    assert (camera.width, camera.height) == (32, 24)
    assert next(iter(source)).rgb.shape == (24, 32, 3)


def test_ros_camera_calibration_file(tmp_path):
    path = tmp_path / "calib.yaml"
    path.write_text(
        "image_width: 640\nimage_height: 480\ncamera_name: narrow_stereo\n"
        "camera_matrix: {rows: 3, cols: 3, data: [518.0, 0.0, 325.5, 0.0, 519.0, 253.5, 0.0, 0.0, 1.0]}\n"
        "distortion_model: plumb_bob\n"
        "distortion_coefficients: {rows: 1, cols: 5, data: [0.1, -0.2, 0.0, 0.0, 0.05]}\n"
    )
    camera = load_camera_file(path)
    assert camera.intrinsics == CameraIntrinsics(518.0, 519.0, 325.5, 253.5, 640, 480)
    assert camera.distortion_model == "plumb_bob" and camera.distortion == (0.1, -0.2, 0.0, 0.0, 0.05)
    # A file for another image size is rescaled to the images' size.
    assert load_camera_file(path, image_size=(320, 240)).intrinsics.fx == pytest.approx(259.0)


def test_real_kinect_frames_with_a_name_pattern(tmp_path):
    intrinsics = tmp_path / "kinect.yaml"
    intrinsics.write_text("fx: 518.0\nfy: 519.0\ncx: 325.5\ncy: 253.5\n")  # size taken from the images
    source = ImageFolderSource(REAL_FRAMES, intrinsics, pattern="color_*.png", loop=False)
    frames = list(source)
    assert len(frames) == 5  # the depth_*.pgm files beside them are not taken
    assert frames[0].rgb.shape == (480, 640, 3)
    assert source.camera.intrinsics.width == 640


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (FrameSourceConfig(source="folder"), "needs a folder"),
        (FrameSourceConfig(source="video"), "needs a video file"),
        (FrameSourceConfig(source="webcam"), "source must be one of"),
        (FrameSourceConfig(scene="forest"), "scene must be one of"),
        (FrameSourceConfig(width=320), "must both be > 0 or both 0"),
        (FrameSourceConfig(source="video", video_path="/nonexistent.mp4"), "does not exist"),
    ],
)
def test_bad_configurations_say_what_to_fix(config, message):
    with pytest.raises(FrameSourceError, match=message):
        open_frame_source(config)


def test_folder_without_intrinsics_is_refused(tmp_path):
    _write_folder(tmp_path, _pictures(1))
    with pytest.raises(FrameSourceError, match="intrinsics file .* not found"):
        ImageFolderSource(tmp_path)
    (tmp_path / "bad.yaml").write_text("fx: 0.0\nfy: 1.0\ncx: 1.0\ncy: 1.0\n")
    with pytest.raises(FrameSourceError, match="focal length fx"):
        ImageFolderSource(tmp_path, tmp_path / "bad.yaml")


def test_video_file_source(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15.0, (64, 48))
    assert writer.isOpened()
    levels = [20, 80, 140, 200]
    for level in levels:
        writer.write(np.full((48, 64, 3), (level, level // 2, 255 - level), dtype=np.uint8))  # BGR
    writer.release()

    source = VideoFileSource(path, loop=False, fov_deg=90.0)
    assert source.frame_count == 4 and source.native_fps == pytest.approx(15.0)
    # 90 degrees across 64 pixels: f = 32 / tan(45 deg) = 32.
    assert source.camera.intrinsics.fx == pytest.approx(32.0)
    assert source.camera == camera_from_fov(64, 48, 90.0)
    frames = list(source)
    assert [f.index for f in frames] == [0, 1, 2, 3]
    for frame, level in zip(frames, levels, strict=True):
        red, green, blue = frame.rgb.reshape(-1, 3).mean(axis=0)  # RGB order out of a BGR file
        assert abs(red - (255 - level)) < 8 and abs(green - level // 2) < 8 and abs(blue - level) < 8

    looping = VideoFileSource(path, width=32, height=24)
    frames = list(itertools.islice(looping, 9))
    assert [f.index for f in frames] == [0, 1, 2, 3, 0, 1, 2, 3, 0]
    assert frames[0].rgb.shape == (24, 32, 3)


def test_synthetic_source_moves_back_and_forth_with_exact_depth():
    source = SyntheticSource("indoor", seed=3, width=80, height=60, frames_per_pass=4)
    assert source.camera.intrinsics == NYU_INTRINSICS.scaled_to(80, 60, align_pixel_centres=True)
    frames = list(itertools.islice(source, 10))
    assert [f.index for f in frames] == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    first = frames[0]
    assert first.rgb.shape == (60, 80, 3) and first.depth.shape == (60, 80)
    assert np.all(first.depth > 0.0)  # a room: every pixel hits a wall
    assert not np.array_equal(frames[0].rgb, frames[3].rgb)  # the camera moved
    assert np.array_equal(frames[2].rgb, frames[4].rgb)  # and came back along the same path
    again = next(iter(SyntheticSource("indoor", seed=3, width=80, height=60, frames_per_pass=4)))
    assert np.array_equal(again.rgb, first.rgb)  # same seed, same pictures

    once = list(SyntheticSource("street", seed=1, width=64, height=20, frames_per_pass=3, loop=False))
    assert len(once) == 3
    assert np.any(once[0].depth == 0.0)  # street scenes have sky: no depth there
