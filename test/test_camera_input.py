"""A camera's frames before the model, and several cameras' frames through one pass, without rclpy or
DDS: outputs.camera_input (CameraInfo by stamp, undistortion, decoding) and
outputs.frame_processor.DepthFrameProcessor.predict (the batched encoder + decoder pass)."""

from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from space_clip_ros.data.camera import CameraInfoError
from space_clip_ros.msgs import ImageConversionError, rgb_to_image_msg
from space_clip_ros.msgs.image import SUPPORTED_COLOUR_ENCODINGS
from space_clip_ros.msgs.undistort import Undistorter
from space_clip_ros.outputs.camera_input import CameraInput
from space_clip_ros.outputs.frame_processor import DepthFrameProcessor
from space_clip_ros.outputs.options import OutputOptions

WIDTH, HEIGHT = 96, 64
FX, CX, CY = 80.0, 47.5, 31.5
DISTORTION = [-0.25, 0.06, 0.001, -0.001, 0.0]


def stamp(seconds: float) -> Time:
    return Time(sec=int(seconds), nanosec=round((seconds % 1) * 1e9))


def camera_info(at: float, fx: float = FX, d: list[float] | None = None, width: int = WIDTH,
                height: int = HEIGHT) -> CameraInfo:
    scale = width / WIDTH
    k = [fx * scale, 0.0, CX * scale, 0.0, fx * scale, CY * scale, 0.0, 0.0, 1.0]
    return CameraInfo(header=Header(stamp=stamp(at), frame_id="cam"), width=width, height=height,
                      distortion_model="plumb_bob", d=d or [0.0] * 5, k=k, r=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0],
                      p=k[:3] + [0.0] + k[3:6] + [0.0] + k[6:] + [0.0])


def image(at: float, width: int = WIDTH, height: int = HEIGHT, seed: int = 0):
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return rgb_to_image_msg(pixels, Header(stamp=stamp(at), frame_id="cam")), pixels


# ---- CameraInfo by stamp --------------------------------------------------------------------------
def test_each_image_takes_the_camera_info_of_its_own_stamp():
    camera = CameraInput(camera_info_tolerance_s=0.05)
    camera.add_camera_info(camera_info(10.0, fx=70.0))
    camera.add_camera_info(camera_info(10.1, fx=90.0))
    for at, fx in ((10.0, 70.0), (10.1, 90.0), (10.13, 90.0), (9.96, 70.0)):
        frame = camera.frame(image(at)[0])
        assert frame.calibration.intrinsics.fx == fx, at
    missed = camera.frame(image(10.5)[0])
    assert missed.calibration is None and not missed.camera_info
    # The warning's text names both stamps.
    assert "10.500000000" in missed.camera_info.description and "10.100000000" in missed.camera_info.description


def test_tolerance_zero_takes_the_same_stamp_else_the_latest():
    camera = CameraInput(camera_info_tolerance_s=0.0)
    assert not camera.has_camera_info and camera.frame(image(1.0)[0]).calibration is None
    camera.add_camera_info(camera_info(0.0, fx=70.0))  # a driver that stamps its CameraInfo 0
    camera.add_camera_info(camera_info(5.0, fx=90.0))
    assert camera.frame(image(0.0)[0]).calibration.intrinsics.fx == 70.0  # its own stamp
    frame = camera.frame(image(123.0)[0])
    assert frame.calibration.intrinsics.fx == 90.0 and frame.camera_info.rule == "latest"


def test_a_camera_info_that_cannot_describe_the_camera_is_refused_and_the_good_one_kept():
    camera = CameraInput()
    camera.add_camera_info(camera_info(0.0))
    with pytest.raises(CameraInfoError, match="focal length"):
        camera.add_camera_info(camera_info(1.0, fx=0.0))
    bad_model = camera_info(1.0, d=DISTORTION)
    bad_model.distortion_model = "fisheye_of_my_own"
    with pytest.raises(CameraInfoError, match="not supported; supported: plumb_bob"):
        camera.add_camera_info(bad_model)
    camera.add_camera_info(bad_model, undistort=False)  # used as it is when undistortion is off
    assert camera.frame(image(1.0)[0], undistort=False).calibration.intrinsics.fx == FX


# ---- lens distortion ------------------------------------------------------------------------------------
def test_distorted_images_are_undistorted_and_described_by_the_rectified_camera_info():
    camera = CameraInput()
    info = camera_info(2.0, d=DISTORTION)
    camera.add_camera_info(info)
    message, pixels = image(2.0)
    frame = camera.frame(message)
    assert frame.undistorted
    np.testing.assert_array_equal(frame.rgb, Undistorter(info).undistort(pixels))
    rectified = frame.calibration.info
    assert list(rectified.d) == [0.0] * 5 and rectified.distortion_model == "plumb_bob"
    np.testing.assert_allclose(rectified.k, info.k)  # the default keeps K
    np.testing.assert_allclose(np.asarray(rectified.p).reshape(3, 4)[:, :3], np.asarray(info.k).reshape(3, 3))
    # Off: the pixels as they are, with the CameraInfo as it is.
    frame = camera.frame(message, undistort=False)
    assert not frame.undistorted and frame.rgb is not None and list(frame.calibration.info.d) == DISTORTION
    np.testing.assert_array_equal(frame.rgb, pixels)


def test_zero_distortion_costs_nothing():
    camera = CameraInput()
    camera.add_camera_info(camera_info(3.0))
    message, pixels = image(3.0)
    frame = camera.frame(message)
    assert not frame.undistorted and len(camera._undistorters) == 0
    np.testing.assert_array_equal(frame.rgb, pixels)


def test_undistortion_maps_are_built_once_per_calibration():
    camera = CameraInput()
    for at in (1.0, 2.0, 3.0):
        camera.add_camera_info(camera_info(at, d=DISTORTION))
        camera.frame(image(at)[0])
    assert len(camera._undistorters) == 1
    camera.add_camera_info(camera_info(4.0, d=[-0.1, 0.0, 0.0, 0.0, 0.0]))
    assert len(camera._undistorters) == 2


def test_camera_info_of_another_size_is_rescaled_before_undistortion():
    camera = CameraInput()
    big = camera_info(5.0, d=DISTORTION, width=2 * WIDTH, height=2 * HEIGHT)
    camera.add_camera_info(big)
    message, pixels = image(5.0)
    frame = camera.frame(message)
    assert frame.camera_info_size_mismatch == (2 * WIDTH, 2 * HEIGHT) and frame.image_size == (WIDTH, HEIGHT)
    np.testing.assert_allclose(frame.calibration.info.k, camera_info(5.0).k)  # the image's own K
    np.testing.assert_array_equal(frame.rgb, Undistorter(camera_info(5.0, d=DISTORTION)).undistort(pixels))


def test_unsupported_encoding_names_the_supported_ones():
    camera = CameraInput()
    message, _ = image(1.0)
    message.encoding = "32FC1"
    with pytest.raises(ImageConversionError) as error:
        camera.frame(message)
    assert "unsupported encoding '32FC1'; supported: " + ", ".join(SUPPORTED_COLOUR_ENCODINGS) in str(error.value)


# ---- several cameras, one pass -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def processor():
    import torch

    from space_clip_ros.data.tiny_model import tiny_model_config
    from space_clip_ros.inference.runtime.predictor import DepthPredictor
    from space_clip_ros.model import SpaceClip

    torch.manual_seed(0)
    model = SpaceClip(tiny_model_config()).eval()
    with torch.no_grad():  # depths of a few metres, as make_tiny_checkpoint makes them
        model.decoder.head.net[1].weight.mul_(100.0)
        model.decoder.head.net[1].bias.fill_(2.5)
    predictor = DepthPredictor(model, device="cpu")
    return DepthFrameProcessor(predictor), predictor


def test_one_frame_is_exactly_the_predictors_inference(processor):
    frames, predictor = processor
    _, pixels = image(1.0)
    (prediction,) = frames.predict([pixels], [OutputOptions(publish_embedding=True)])
    reference = predictor.infer(pixels[None], with_embedding=True)
    assert prediction.batch_size == 1
    np.testing.assert_array_equal(prediction.depth.numpy(), reference.depth[0].numpy())
    np.testing.assert_array_equal(prediction.embedding, reference.embedding[0].numpy())


def test_frames_of_different_sizes_share_one_pass_and_each_gets_its_own_size(processor):
    frames, predictor = processor
    front = image(1.0, seed=1)[1]
    rear = image(1.0, width=80, height=48, seed=2)[1]
    options = [OutputOptions(publish_embedding=True), OutputOptions(output_width=40, output_height=24)]
    front_prediction, rear_prediction = frames.predict([front, rear], options)
    assert front_prediction.batch_size == rear_prediction.batch_size == 2
    assert tuple(front_prediction.depth.shape) == (HEIGHT, WIDTH) and tuple(rear_prediction.depth.shape) == (24, 40)
    # Equal to each frame on its own, up to float rounding (a batch may sum in another order).
    np.testing.assert_allclose(front_prediction.depth.numpy(), predictor.predict(front), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rear_prediction.depth.numpy(), predictor.predict(rear, output_size=(24, 40)),
                               rtol=1e-5, atol=1e-5)
    # The embedding is computed once any frame asks for it; each frame has its own.
    np.testing.assert_allclose(front_prediction.embedding, predictor.infer(front[None], with_embedding=True)
                               .embedding[0].numpy(), rtol=1e-4, atol=1e-5)
    assert rear_prediction.embedding is not None
    # Same output size: one resize inside the decoder, as for a single frame.
    same = frames.predict([front, front], [OutputOptions(), OutputOptions()])
    np.testing.assert_allclose(same[1].depth.numpy(), predictor.predict(front), rtol=1e-5, atol=1e-5)


def test_benchmark_cameras_section_runs_the_nodes_batched_path(processor):
    """space-clip-benchmark --cameras: the same frames batched and one by one, and the memory figures."""
    from space_clip_ros.cli.benchmark_cameras import bench_cameras, format_cameras, make_cameras, run_batched

    _, predictor = processor
    cameras = make_cameras(3, (48, 64))
    assert all(camera.frame().calibration is not None for camera in cameras)
    assert run_batched(DepthFrameProcessor(predictor), cameras) > 0  # bytes serialised
    row = bench_cameras(predictor, 3, (48, 64), warmup=0, repeats=1)
    assert row["cameras"] == 3 and row["size"] == "64x48"
    assert row["frames_per_s_batched"] > 0 and row["frames_per_s_one_by_one"] > 0 and row["speedup_batched"] > 0
    assert row["memory"]["rss_3_cameras_mb"] > 0 and row["memory"]["ratio"] > 0
    assert "batched is" in "\n".join(format_cameras(row))
    with pytest.raises(ValueError, match="at least 2"):
        bench_cameras(predictor, 1, (48, 64), warmup=0, repeats=1)
