"""Other depth-node configurations as their own processes: compressed input, 16UC1 output at a
configured size with an XYZRGB cloud and best-effort publishers; and start-ups that must fail
with the reason (a checkpoint that does not fit the backbone, refused parameter values)."""

from __future__ import annotations

import json
import re
from typing import Any

import cv2
import numpy as np
import pytest
import ros_helpers as rh
from rclpy.qos import ReliabilityPolicy
from ros_helpers import (
    CX,
    CY,
    FRAME_ID,
    FX,
    FY,
    HEIGHT,
    MAX_DEPTH,
    WIDTH,
    camera_info_message,
    compressed_message,
    make_stamp,
    pattern_image,
    publish_until_answered,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField

from space_clip_ros.msgs import compressed_msg_to_rgb, pointcloud2_to_rgb, pointcloud2_to_xyz_grid
from space_clip_ros.ros.depth_node import EXIT_MODEL_ERROR, EXIT_PARAMETER_ERROR

pytestmark = [pytest.mark.ros, pytest.mark.timeout(600), pytest.mark.slow]  # node processes over DDS

OUT_HEIGHT, OUT_WIDTH = 48, 72  # output size 3/4 of the input


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("variants")
    # train_focal recorded, but this node runs with focal_rescale off: depth must stay unscaled.
    checkpoint, weights = rh.make_tiny_checkpoint(directory, train_focal=40.0, train_image_size=(HEIGHT, WIDTH))
    return directory, checkpoint, weights


# ---- start-ups that must fail ------------------------------------------------------------------
FAILING_STARTS = {
    "checkpoint for another backbone": (
        {"vision_overrides": json.dumps({"width": 32, "head_width": 16})},
        EXIT_MODEL_ERROR,
        r"\[FATAL\].*cannot load the model: checkpoint does not fit this model:\s+"
        r"backbone\.(pretrained|vision_overrides)",
    ),
    "stride out of range": (
        {"points_stride": -1},
        EXIT_PARAMETER_ERROR,
        r"\[FATAL\].*refusing to start: .*points_stride",
    ),
    "min_depth not below max_depth": (
        {"min_depth": 5.0, "max_depth": 2.0},
        EXIT_PARAMETER_ERROR,
        r"\[FATAL\].*refusing to start: min_depth \(5\.0\) must be smaller than max_depth \(2\.0\)",
    ),
}


@pytest.fixture(scope="module")
def failed_starts(model_files):
    """All failing start-ups run side by side (each spends most of its time importing torch)."""
    directory, checkpoint, weights = model_files
    domain = rh.module_domain_id(__name__)
    processes = {}
    for case, (overrides, _, _) in FAILING_STARTS.items():
        command = rh.depth_node_command(namespace=rh.unique_namespace(), checkpoint=str(checkpoint),
                                     overrides=rh.tiny_node_overrides(weights, **overrides))
        log = directory / f"failed_{len(processes)}.log"
        processes[case] = rh.NodeProcess(command, rh.node_environment(domain), log)
    results = {}
    for case, process in processes.items():
        try:
            code = process.wait_exit(timeout=180)
        finally:
            process.stop()
        results[case] = (code, process.log())
    return results


@pytest.mark.parametrize("case", list(FAILING_STARTS))
def test_bad_start_up_exits_non_zero_with_the_reason(failed_starts, case):
    code, log = failed_starts[case]
    _, expected_code, pattern = FAILING_STARTS[case]
    assert code == expected_code, log
    assert re.search(pattern, log), log
    assert "Traceback" not in log, "a start-up error must be a log line, not a crash"


# ---- compressed in, 16UC1 + XYZRGB out --------------------------------------------------------
@pytest.fixture(scope="module")
def variant(model_files):
    directory, checkpoint, weights = model_files
    domain = rh.module_domain_id(__name__)
    namespace = rh.unique_namespace()
    image_topic = f"{namespace}/camera/color/image_raw"
    command = rh.depth_node_command(
        namespace=namespace,
        image=image_topic,
        camera_info=f"{namespace}/camera/color/camera_info",
        checkpoint=str(checkpoint),
        overrides=rh.tiny_node_overrides(
            weights,
            # The exact model that the local predictor compares with (backend auto, the default,
            # may pick an int8 path; the demo's end-to-end test runs that default over DDS).
            backend="torch",
            optimize=False,
            image_transport="compressed",
            depth_encoding="16UC1",
            output_width=OUT_WIDTH,
            output_height=OUT_HEIGHT,
            focal_rescale=False,
            points_rgb=True,
            publisher_reliability="best_effort",
            max_depth=MAX_DEPTH,
        ),
    )
    node = rh.NodeProcess(command, rh.node_environment(domain), directory / "variant.log")
    client = rh.RosTestClient(domain, name="variant_client")
    try:
        node.wait_for_log(r"\[INFO\].*SPACE-CLIP .* Input: \S+/compressed \(compressed, \w+ as its publishers offer\)",
                          timeout=120)
        # The compressed sub-topic follows the remapped image topic, as image_transport does.
        compressed_pub = client.publisher(f"{image_topic}/compressed", CompressedImage)
        info_pub = client.publisher(f"{namespace}/camera/color/camera_info", CameraInfo)
        subs = {
            key: client.collect(f"{namespace}/{topic}", kind, reliable=False)
            for key, topic, kind in (("depth", "depth/image", Image), ("depth_info", "depth/camera_info", CameraInfo),
                                     ("points", "points", PointCloud2))
        }
        client.wait_for_subscribers(compressed_pub)
        client.wait_for_subscribers(info_pub)
        client.wait_for_publishers(f"{namespace}/points")
        yield {"node": node, "client": client, "namespace": namespace, "image_topic": image_topic,
               "compressed_pub": compressed_pub, "info_pub": info_pub, "subs": subs,
               "predictor": rh.local_predictor(checkpoint, weights)}
    finally:
        client.close()
        code = node.stop()
        print(node.log())
        assert code == 0


def _send_until_cloud(variant, rgb: np.ndarray, fmt: str, first_second: int):
    info = camera_info_message(WIDTH, HEIGHT, FX, FY, CX, CY, FRAME_ID)

    def send(stamp: Any) -> Any:
        message = compressed_message(rgb, fmt, stamp, FRAME_ID)
        variant["info_pub"].publish(info)
        variant["compressed_pub"].publish(message)
        return message

    stamps = (make_stamp(first_second + attempt) for attempt in range(30))
    answered = publish_until_answered(send, variant["subs"]["points"], stamps, per_attempt_s=2.0)
    if answered is None:
        raise AssertionError(f"no point cloud for {fmt} input:\n{variant['node'].log()}")
    _, message, cloud = answered
    return message, cloud


def test_publishers_are_best_effort_and_the_input_is_sensor_data_qos(variant):
    client = variant["client"]
    for topic in ("depth/image", "depth/camera_info", "points"):
        full_topic = f"{variant['namespace']}/{topic}"
        # Every publisher on the topic, once the node's has been discovered, is best effort.
        client.wait_for_endpoints(full_topic, "publishers", lambda i: i.node_name == "space_clip_depth")
        infos = client.node.get_publishers_info_by_topic(full_topic)
        assert all(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in infos), topic
    node_subscriptions = client.wait_for_endpoints(f"{variant['image_topic']}/compressed", "subscriptions",
                                                   lambda i: i.node_name == "space_clip_depth")
    assert node_subscriptions[0].qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_input_gives_16uc1_depth_scaled_info_and_xyzrgb_cloud(variant, fmt):
    rgb = pattern_image(HEIGHT, WIDTH, seed=11)
    message, cloud = _send_until_cloud(variant, rgb, fmt, first_second=2000 if fmt == "jpeg" else 3000)
    stamp = message.header.stamp
    depth_msg = variant["subs"]["depth"].wait_for_stamp(stamp)
    info_msg = variant["subs"]["depth_info"].wait_for_stamp(stamp)

    # 16UC1 millimetres at the configured size; 0 where invalid; no focal rescaling (it is off).
    assert depth_msg.encoding == "16UC1" and (depth_msg.width, depth_msg.height) == (OUT_WIDTH, OUT_HEIGHT)
    millimetres = np.frombuffer(bytes(depth_msg.data), "<u2").reshape(OUT_HEIGHT, OUT_WIDTH).astype(np.int64)
    decoded = compressed_msg_to_rgb(message)  # the very pixels the node decoded
    predicted = variant["predictor"].predict(decoded, output_size=(OUT_HEIGHT, OUT_WIDTH))
    valid = (predicted >= 0.1) & (predicted <= MAX_DEPTH)
    assert valid.any() and (~valid).any(), "the 0-for-invalid convention is not exercised"
    away_from_limit = np.abs(predicted - MAX_DEPTH) > 1e-3
    assert (millimetres[~valid & away_from_limit] == 0).all()
    np.testing.assert_allclose(millimetres[valid & away_from_limit],
                               np.rint(predicted[valid & away_from_limit] * 1000), atol=1)

    # depth/camera_info: K and P scaled from 96x64 to 72x48.
    assert (info_msg.width, info_msg.height) == (OUT_WIDTH, OUT_HEIGHT)
    scale = OUT_WIDTH / WIDTH
    np.testing.assert_allclose(np.asarray(info_msg.k)[[0, 2, 4, 5]], [FX * scale, CX * scale, FY * scale, CY * scale])
    np.testing.assert_allclose(np.asarray(info_msg.p)[[0, 2, 5, 6]], [FX * scale, CX * scale, FY * scale, CY * scale])

    # XYZRGB cloud in depth_image_proc's layout, colours from the (resized) input image.
    assert [(f.name, f.offset, f.datatype) for f in cloud.fields] == [
        ("x", 0, PointField.FLOAT32), ("y", 4, PointField.FLOAT32), ("z", 8, PointField.FLOAT32),
        ("rgb", 16, PointField.FLOAT32)]
    assert cloud.point_step == 32 and (cloud.height, cloud.width) == (OUT_HEIGHT, OUT_WIDTH)
    points = pointcloud2_to_xyz_grid(cloud)
    z_from_image = np.where(millimetres > 0, millimetres / 1000.0, np.nan)
    np.testing.assert_allclose(points[..., 2], z_from_image, atol=6e-4, equal_nan=True)
    colours = pointcloud2_to_rgb(cloud).reshape(OUT_HEIGHT, OUT_WIDTH, 3)
    np.testing.assert_array_equal(
        colours, cv2.resize(decoded, (OUT_WIDTH, OUT_HEIGHT), interpolation=cv2.INTER_AREA)
    )
