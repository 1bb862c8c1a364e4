"""One frame through DepthFrameProcessor (the node's work, without rclpy or DDS): outputs.frame_processor,
outputs.builder, outputs.calibration."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from ros_helpers import (
    camera_info_message,
    compressed_message,
    image_message,
    local_predictor,
    make_stamp,
    make_tiny_checkpoint,
    pattern_image,
    raw_image_message,
)

from space_clip_ros.data.camera import focal_rescale_factor
from space_clip_ros.msgs import (
    XYZ_POINT_STEP,
    CameraInfoError,
    CameraIntrinsics,
    ImageConversionError,
    backproject_depth,
    image_msg_to_depth,
    pointcloud2_to_rgb,
    pointcloud2_to_xyz_grid,
)
from space_clip_ros.outputs.builder import DepthOutputBuilder
from space_clip_ros.outputs.calibration import CameraCalibration
from space_clip_ros.outputs.frame_processor import DepthFrameProcessor
from space_clip_ros.outputs.messages import EMBEDDING_LABEL
from space_clip_ros.outputs.options import ONE_PIECE_BYTES, POINTS_STRIDE_AUTO, OutputOptions
from space_clip_ros.ros.depth_node import EXIT_PARAMETER_ERROR, main

HEIGHT, WIDTH = 64, 96
FRAME = "camera_color_optical_frame"


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    checkpoint, weights = make_tiny_checkpoint(tmp_path_factory.mktemp("processor"), train_focal=100.0,
                                               train_image_size=(HEIGHT, WIDTH))
    return local_predictor(checkpoint, weights)


@pytest.fixture()
def processor(predictor):
    return DepthFrameProcessor(predictor)


def settings(**values) -> OutputOptions:
    return OutputOptions.from_values({"max_depth": 3.0, **values})


def calibration(width=WIDTH, height=HEIGHT, fx=80.0, scale=1.0) -> CameraCalibration:
    return CameraCalibration.from_msg(
        camera_info_message(width, height, fx * scale, 80.0 * scale, 47.5 * scale, 31.5 * scale, FRAME)
    )


def test_without_camera_info_only_a_depth_image(processor, predictor):
    rgb = pattern_image(HEIGHT, WIDTH, seed=1)
    out = processor.process(image_message(rgb, "rgb8", make_stamp(7, 8), FRAME), None, settings())
    assert out.depth_camera_info is None and out.points is None
    assert out.colored is None and out.embedding is None and out.depth_scale == 1.0
    assert (out.depth_image.header.stamp.sec, out.depth_image.header.stamp.nanosec) == (7, 8)
    assert out.depth_image.header.frame_id == FRAME
    depth = image_msg_to_depth(out.depth_image)
    raw = predictor.predict(rgb)
    np.testing.assert_allclose(depth, np.where((raw >= 0.1) & (raw <= 3.0), raw, np.nan), rtol=1e-6,
                               equal_nan=True)
    assert np.isnan(depth).any() and np.isfinite(depth).any()
    assert out.inference_s > 0 and out.image_size == (WIDTH, HEIGHT)


def test_frame_id_parameter_overrides_the_image_frame(processor):
    rgb = pattern_image(HEIGHT, WIDTH)
    out = processor.process(image_message(rgb, "rgb8", make_stamp(1), FRAME), calibration(),
                            settings(frame_id="my_optical_frame"))
    assert {out.depth_image.header.frame_id, out.depth_camera_info.header.frame_id,
            out.points.header.frame_id} == {"my_optical_frame"}


def test_outputs_at_a_configured_size_share_one_geometry(processor, predictor):
    rgb = pattern_image(HEIGHT, WIDTH, seed=2)
    out = processor.process(image_message(rgb, "rgb8", make_stamp(1), FRAME), calibration(),
                            settings(output_width=48, output_height=32, points_rgb=True))
    info = out.depth_camera_info
    assert (out.depth_image.width, out.depth_image.height) == (48, 32) == (info.width, info.height)
    np.testing.assert_allclose(np.asarray(info.k)[[0, 2, 4, 5]], [40.0, 23.75, 40.0, 15.75])
    assert out.depth_scale == pytest.approx(focal_rescale_factor(80.0, 80.0, (HEIGHT, WIDTH), predictor.record))
    assert out.depth_scale == pytest.approx(0.8)

    depth = image_msg_to_depth(out.depth_image)
    expected = predictor.predict(rgb, output_size=(32, 48)) * 0.8
    np.testing.assert_allclose(depth, np.where((expected >= 0.1) & (expected <= 3.0), expected, np.nan),
                               rtol=1e-5, equal_nan=True)
    points = pointcloud2_to_xyz_grid(out.points)
    np.testing.assert_allclose(points, backproject_depth(depth, CameraIntrinsics.from_camera_info(info)),
                               rtol=1e-6, equal_nan=True)
    colours = pointcloud2_to_rgb(out.points).reshape(32, 48, 3)
    np.testing.assert_array_equal(colours, cv2.resize(rgb, (48, 32), interpolation=cv2.INTER_AREA))


def test_focal_rescale_can_be_switched_off(processor, predictor):
    rgb = pattern_image(HEIGHT, WIDTH, seed=3)
    out = processor.process(image_message(rgb, "rgb8", make_stamp(1), FRAME), calibration(),
                            settings(focal_rescale=False, max_depth=100.0))
    assert out.depth_scale == 1.0
    np.testing.assert_allclose(image_msg_to_depth(out.depth_image), predictor.predict(rgb), rtol=1e-6)


def test_camera_info_of_another_size_is_rescaled_not_trusted(processor):
    rgb = pattern_image(HEIGHT, WIDTH)
    same = processor.process(image_message(rgb, "rgb8", make_stamp(1), FRAME), calibration(), settings())
    doubled = processor.process(image_message(rgb, "rgb8", make_stamp(1), FRAME),
                                calibration(2 * WIDTH, 2 * HEIGHT, scale=2.0), settings())
    assert same.camera_info_size_mismatch is None
    assert doubled.camera_info_size_mismatch == (2 * WIDTH, 2 * HEIGHT)
    np.testing.assert_allclose(doubled.depth_camera_info.k, same.depth_camera_info.k)
    assert doubled.depth_scale == pytest.approx(same.depth_scale)


def test_range_limits_stride_and_unorganised_cloud(processor):
    rgb = pattern_image(HEIGHT, WIDTH, seed=4)
    message = image_message(rgb, "rgb8", make_stamp(1), FRAME)
    organised = processor.process(message, calibration(), settings(points_stride=4, points_max_range=2.5))
    depth = image_msg_to_depth(organised.depth_image)
    points = pointcloud2_to_xyz_grid(organised.points)
    assert points.shape[:2] == (16, 24)
    strided = depth[::4, ::4]
    assert np.isnan(points[strided > 2.5]).all() and np.isfinite(points[strided <= 2.5]).all()

    flat = processor.process(message, calibration(), settings(points_stride=4, points_max_range=2.5,
                                                              points_organized=False))
    assert flat.points.height == 1 and flat.points.width == int(np.sum(strided <= 2.5))


def test_auto_stride_keeps_the_cloud_within_one_dds_piece(processor):
    auto = OutputOptions()  # points_stride 0: auto, the default
    assert auto.points_stride == POINTS_STRIDE_AUTO
    assert auto.cloud_stride(480, 640, with_rgb=False) == 4  # 160x120 x 16 B = 0.3 MB (3 would be 0.55 MB)
    assert auto.cloud_stride(720, 1280, with_rgb=False) == 6
    assert auto.cloud_stride(480, 640, with_rgb=True) == 5  # 32-byte points
    assert auto.cloud_stride(181, 181, with_rgb=False) == 1 and auto.cloud_stride(182, 182, with_rgb=False) == 2
    assert auto.replace(points_stride=2).cloud_stride(480, 640, with_rgb=False) == 2  # a set stride is kept
    for height, width in ((480, 640), (720, 1280), (1080, 1920), (4000, 6000)):
        stride = auto.cloud_stride(height, width, with_rgb=False)
        assert -(-height // stride) * -(-width // stride) * XYZ_POINT_STEP <= ONE_PIECE_BYTES
        assert stride == 1 or -(-height // (stride - 1)) * -(-width // (stride - 1)) * XYZ_POINT_STEP > ONE_PIECE_BYTES
    # the built cloud: a 640x480 camera's organised cloud comes out 160x120, within one piece
    rgb = pattern_image(480, 640, seed=6)
    out = processor.process(image_message(rgb, "rgb8", make_stamp(1), FRAME),
                            calibration(640, 480, fx=520.0), settings(output_width=640, output_height=480))
    assert (out.points.height, out.points.width) == (120, 160) and len(out.points.data) <= ONE_PIECE_BYTES
    assert (out.depth_image.height, out.depth_image.width) == (480, 640)  # the depth image keeps its size


def test_extras_and_16uc1(processor, predictor):
    rgb = pattern_image(HEIGHT, WIDTH, seed=5)
    out = processor.process(
        image_message(rgb, "bgr8", make_stamp(1), FRAME), calibration(),
        settings(publish_colored=True, publish_embedding=True, depth_encoding="16UC1", colormap="jet",
                 max_depth=2.2),
    )
    assert out.depth_image.encoding == "16UC1"
    millimetres = np.frombuffer(bytes(out.depth_image.data), "<u2").reshape(HEIGHT, WIDTH)
    assert (millimetres == 0).any() and (millimetres > 0).any()
    assert out.colored.encoding == "bgr8" and (out.colored.width, out.colored.height) == (WIDTH, HEIGHT)
    bgr = np.frombuffer(bytes(out.colored.data), np.uint8).reshape(HEIGHT, WIDTH, 3)
    assert (bgr[millimetres == 0] == 0).all()
    assert [(d.label, d.size) for d in out.embedding.layout.dim] == [(EMBEDDING_LABEL, 512)]
    expected = predictor.infer(rgb[None], with_embedding=True).embedding[0].numpy()
    np.testing.assert_allclose(np.asarray(out.embedding.data), expected, rtol=1e-5, atol=1e-6)


def test_compressed_frames_decode(processor, predictor):
    rgb = pattern_image(HEIGHT, WIDTH, seed=6)
    out = processor.process(compressed_message(rgb, "png", make_stamp(1), FRAME), None,
                            settings(max_depth=100.0))
    np.testing.assert_allclose(image_msg_to_depth(out.depth_image), predictor.predict(rgb), rtol=1e-6)


def test_output_step_alone_takes_numpy_or_tensor_depth_as_the_processor_does(processor, predictor):
    # The bag tool runs the predictor on batches and calls this same step per image.
    rgb = pattern_image(HEIGHT, WIDTH, seed=7)
    message = image_message(rgb, "rgb8", make_stamp(3, 4), FRAME)
    node_settings = settings(points_rgb=True, publish_colored=True, frame_id="out_frame")
    expected = processor.process(message, calibration(), node_settings)
    depth = predictor.infer(rgb[None], output_size=(HEIGHT, WIDTH)).depth[0]
    builder = DepthOutputBuilder(predictor.record)
    for given in (depth, depth.numpy()):
        out = builder.build(given, message.header, calibration(), node_settings, rgb=rgb)
        assert out.depth_scale == expected.depth_scale != 1.0
        assert out.depth_image.header == expected.depth_image.header == out.points.header
        assert out.depth_image.header.frame_id == "out_frame"
        np.testing.assert_allclose(image_msg_to_depth(out.depth_image), image_msg_to_depth(expected.depth_image),
                                   rtol=1e-6, equal_nan=True)
        assert out.depth_camera_info == expected.depth_camera_info
        np.testing.assert_allclose(pointcloud2_to_xyz_grid(out.points), pointcloud2_to_xyz_grid(expected.points),
                                   rtol=1e-6, equal_nan=True)
        np.testing.assert_array_equal(pointcloud2_to_rgb(out.points), pointcloud2_to_rgb(expected.points))
        assert out.colored.encoding == "bgr8"
    np.testing.assert_array_equal(depth.numpy(), predictor.infer(rgb[None]).depth[0].numpy())  # not modified


def test_cloud_built_on_the_device_equals_the_numpy_cloud(processor, predictor):
    """The GPU path (depth still a tensor, cloud back-projected by torch) gives the same bytes; forced
    on for a CPU tensor here so that CI checks it."""
    rgb = pattern_image(HEIGHT, WIDTH, seed=8)
    message = image_message(rgb, "rgb8", make_stamp(5), FRAME)
    depth = predictor.infer(rgb[None], output_size=(HEIGHT, WIDTH)).depth[0]
    low, high = np.quantile(depth.numpy(), [0.2, 0.8])  # limits that cut points on both sides
    ranged = {"min_depth": float(low), "points_max_range": float(high), "focal_rescale": False}
    for values, expected_scale in (({}, 0.8), (ranged, 1.0)):  # focal rescaling on, then range limits
        output_settings = settings(**values)
        on_host = DepthOutputBuilder(predictor.record, cloud_on_device=False).build(
            depth, message.header, calibration(), output_settings)
        on_device = DepthOutputBuilder(predictor.record, cloud_on_device=True).build(
            depth, message.header, calibration(), output_settings)
        assert on_device.depth_scale == on_host.depth_scale == pytest.approx(expected_scale)
        assert bytes(on_device.points.data) == bytes(on_host.points.data)
        assert bytes(on_device.depth_image.data) == bytes(on_host.depth_image.data)
        assert on_device.points.header == on_host.points.header
    valid = np.isfinite(pointcloud2_to_xyz_grid(on_device.points)[..., 2])
    assert 0.5 < valid.mean() < 0.7  # the range limits removed about 20 % of the points on each side


def test_clock_charges_each_stage_of_a_frame(processor):
    from space_clip_ros.inference.benchmarking.timing import StageClock

    message = image_message(pattern_image(HEIGHT, WIDTH, seed=9), "rgb8", make_stamp(6), FRAME)
    clock = StageClock()
    clock.start()
    out = processor.process(message, calibration(), settings(publish_colored=True), clock)
    assert set(clock.seconds) == {"image_to_array", "inference", "depth_msg", "pointcloud", "colored"}
    assert all(seconds >= 0 for seconds in clock.seconds.values())
    assert clock.seconds["inference"] >= out.inference_s * 0.5
    assert out.points is not None and out.colored is not None


def test_bad_input_raises_errors_that_say_what_is_wrong(processor):
    with pytest.raises(ImageConversionError, match="unsupported encoding '32FC1'"):
        processor.process(raw_image_message("32FC1", 4, 4, 16, bytes(64), make_stamp(1), FRAME), None, settings())
    with pytest.raises(ImageConversionError, match="empty"):
        processor.process(raw_image_message("rgb8", 0, 0, 0, b"", make_stamp(1), FRAME), None, settings())
    with pytest.raises(CameraInfoError, match="fx = 0.0"):
        calibration(fx=0.0)


def test_malformed_command_line_exits_with_the_parameter_error_code():
    # rcl cannot read a YAML mapping as a parameter value: a clear FATAL line and exit code 2.
    assert main(["depth_node", "--ros-args", "-p", "vision_overrides:={width: 64}"]) == EXIT_PARAMETER_ERROR
