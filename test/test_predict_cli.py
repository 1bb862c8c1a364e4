"""space-clip-predict end to end on a trained checkpoint: images, folders, videos, PNG/NPY/PLY outputs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from test_train_helpers import trained_run

from space_clip_ros.cli.predict import depth_to_mm_png
from space_clip_ros.cli.predict import main as predict_main
from space_clip_ros.data.ply import read_ply
from space_clip_ros.inference.runtime.predictor import DepthPredictor

pytestmark = pytest.mark.slow  # every test reads the shared eight-epoch trained run (test_train_helpers.trained_run)


@pytest.fixture(scope="module")
def checkpoint():
    return str(trained_run().run_dir / "last")


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(0)
    rgb = [(rng.random((48, 160, 3)) * 255).astype(np.uint8) for _ in range(3)]
    for i, image in enumerate(rgb):
        cv2.imwrite(str(folder / f"img{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return folder, rgb


def test_single_image_png_npy_ply(checkpoint, pictures, tmp_path):
    folder, rgb = pictures
    intrinsics = "70.0,71.0,79.5,23.5"
    # --no-optimize: the exact model, so the files can be compared with it to 1e-5 (backend auto would
    # measure, and may pick an int8 path whose depth differs by its rounding)
    code = predict_main(["--checkpoint", checkpoint, str(folder / "img0.png"), "--out", str(tmp_path), "--npy",
                         "--ply", "--intrinsics", intrinsics, "--no-focal-rescale", "--quiet", "--device", "cpu",
                         "--no-optimize"])
    assert code == 0
    png = cv2.imread(str(tmp_path / "img0_depth.png"), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16 and png.shape == (48, 160)
    expected = DepthPredictor.from_checkpoint(checkpoint, device="cpu").predict(rgb[0])
    depth = np.load(tmp_path / "img0_depth.npy")
    assert depth.dtype == np.float32
    np.testing.assert_allclose(depth, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(png, depth_to_mm_png(depth))  # millimetres
    assert np.abs(png.astype(np.float64) / 1000.0 - depth)[png > 0].max() <= 0.0005 + 1e-6
    colour = cv2.imread(str(tmp_path / "img0_depth_color.png"))
    assert colour.shape == (48, 160, 3)
    points, colours = read_ply(tmp_path / "img0.ply")
    valid = np.isfinite(depth) & (depth > 0)
    assert len(points) == int(valid.sum()) and colours.shape == points.shape
    v, u = np.nonzero(valid)
    np.testing.assert_allclose(points[:, 2], depth[valid], rtol=1e-6)
    np.testing.assert_allclose(points[:, 0], (u - 79.5) * depth[valid] / 70.0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(points[:, 1], (v - 23.5) * depth[valid] / 71.0, rtol=1e-5, atol=1e-5)


def test_folder_skips_unreadable_files_and_goes_on(checkpoint, pictures, tmp_path, capsys):
    folder, _ = pictures
    code = predict_main(["--checkpoint", checkpoint, str(folder), "--out", str(tmp_path), "--batch-size", "2",
                         "--quiet", "--device", "cpu"])
    assert code == 0
    captured = capsys.readouterr()
    assert "broken.jpg" in captured.err and "skipped" in captured.err
    assert sorted(p.name for p in tmp_path.glob("*_depth.png")) == ["img0_depth.png", "img1_depth.png",
                                                                    "img2_depth.png"]
    assert "wrote 3 frame(s)" in captured.out


def test_video_frames(checkpoint, pictures, tmp_path):
    _, rgb = pictures
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (160, 48))
    assert writer.isOpened()
    for image in rgb:
        writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    writer.release()
    out = tmp_path / "out"
    assert predict_main(["--checkpoint", checkpoint, str(video), "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.glob("*_depth.png")) == [f"frame_{i:06d}_depth.png" for i in range(3)]


def test_intrinsics_yaml_and_focal_rescale(checkpoint, pictures, tmp_path):
    folder, rgb = pictures
    record = DepthPredictor.from_checkpoint(checkpoint, device="cpu").record
    # The same camera at twice the resolution: same normalised focal length, factor 1.
    calibration = tmp_path / "camera.yaml"
    calibration.write_text(
        "image_width: 320\nimage_height: 96\ncamera_matrix:\n  rows: 3\n  cols: 3\n"
        f"  data: [{2 * record.train_focal}, 0, 159.5, 0, {2 * record.train_focal}, 47.5, 0, 0, 1]\n"
    )
    plain, scaled = tmp_path / "plain", tmp_path / "scaled"
    base = ["--checkpoint", checkpoint, str(folder / "img1.png"), "--npy", "--quiet", "--device", "cpu"]
    assert predict_main([*base, "--out", str(plain)]) == 0
    assert predict_main([*base, "--out", str(scaled), "--ply", "--intrinsics", str(calibration)]) == 0
    np.testing.assert_allclose(np.load(scaled / "img1_depth.npy"), np.load(plain / "img1_depth.npy"), rtol=1e-5)
    # A longer lens than the training camera's: depth grows by the focal ratio.
    longer = tmp_path / "longer"
    fx = 1.5 * record.train_focal
    assert predict_main([*base, "--out", str(longer), "--intrinsics", f"{fx},{fx},79.5,23.5"]) == 0
    np.testing.assert_allclose(np.load(longer / "img1_depth.npy"), 1.5 * np.load(plain / "img1_depth.npy"),
                               rtol=1e-5)


def test_clear_errors(checkpoint, pictures, tmp_path, capsys):
    folder, _ = pictures
    image = str(folder / "img0.png")
    assert predict_main(["--checkpoint", str(tmp_path / "missing"), image]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "space-clip-train" in err
    assert predict_main(["--checkpoint", checkpoint, image, "--ply", "--out", str(tmp_path)]) == 2
    assert "--intrinsics" in capsys.readouterr().err
    assert predict_main(["--checkpoint", checkpoint, str(tmp_path / "nope.png")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert predict_main(["--checkpoint", checkpoint, image, "--intrinsics", "1,2,3"]) == 2
    assert "fx,fy,cx,cy" in capsys.readouterr().err
