"""The camera simulator as its own process (console script ``camera_simulator``) over real DDS.

Its messages must look like a camera driver's: encoding, step and sizes right, the same stamp and
frame id on each Image and its CameraInfo, K equal to the intrinsics of the published pixels, and
the configured rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import ros_helpers as rh
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from space_clip_ros.data.frame_sources import SyntheticSource
from space_clip_ros.demo.processes import find_console_script, ros_argument_value
from space_clip_ros.msgs import compressed_msg_to_rgb, image_msg_to_depth, image_msg_to_rgb

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300), pytest.mark.slow]  # simulator processes over DDS

WIDTH, HEIGHT = 160, 120
RATE_HZ = 10.0
FRAMES_PER_PASS = 12
FRAME_ID = "camera_color_optical_frame"


@pytest.fixture(scope="module")
def client():
    ros_client = rh.RosTestClient(rh.module_domain_id(__name__), name="camera_simulator_test")
    yield ros_client
    ros_client.close()


@pytest.fixture(scope="module")
def rendered_frames() -> list[np.ndarray]:
    """Every picture the simulator's synthetic source can publish (one pass of the path)."""
    source = SyntheticSource("indoor", seed=5, width=WIDTH, height=HEIGHT, frames_per_pass=FRAMES_PER_PASS,
                             loop=False)
    return [frame.rgb for frame in source]


def start_simulator(tmp_path: Path, namespace: str, parameters: dict[str, Any], name: str = "sim") -> rh.NodeProcess:
    command = [find_console_script("camera_simulator"), "--ros-args", "-r", f"__ns:={namespace}"]
    for key, value in parameters.items():
        command += ["-p", f"{key}:={ros_argument_value(value)}"]
    return rh.NodeProcess(command, rh.node_environment(rh.module_domain_id(__name__)), tmp_path / f"{name}.log")


def collect(client: rh.RosTestClient, node: rh.NodeProcess, topics: Sequence[tuple[str, type]], count: int,
            timeout: float = 30.0) -> list[list[Any]]:
    """Subscribe, wait until the first topic has ``count`` messages, then until every other topic has
    a message with each of those stamps (they travel separately). Lists of messages, the first
    topic's ``count`` and every companion received; the node's log on failure."""
    collectors = [client.collect(topic, kind, reliable=True) for topic, kind in topics]

    def enough() -> list[Any] | None:
        if not node.running:
            raise AssertionError(f"the node exited; log:\n{node.log()}")
        messages = collectors[0].messages
        return messages[:count] if len(messages) >= count else None

    leading = rh.wait_until(enough, timeout, f"{count} messages on {topics[0][0]}",
                         lambda: f"{len(collectors[0].messages)} messages; log:\n{node.log()}")
    for (topic, _), companions in zip(topics[1:], collectors[1:]):
        for message in leading:
            companions.wait_for(lambda m, s=message.header.stamp: rh.same_stamp(m.header.stamp, s), timeout,
                                what=f"{topic} message stamped like its {topics[0][0]} message")
    return [leading] + [companions.messages for companions in collectors[1:]]


def stamp_seconds(message: Any) -> float:
    return message.header.stamp.sec + message.header.stamp.nanosec * 1e-9


def test_synthetic_stream_is_well_formed(tmp_path, client, rendered_frames):
    namespace = rh.unique_namespace("cam") + "/color"
    node = start_simulator(tmp_path, namespace, {
        "width": WIDTH, "height": HEIGHT, "rate": RATE_HZ, "seed": 5, "frames_per_pass": FRAMES_PER_PASS,
    })
    try:
        images, infos = collect(client, node, [(f"{namespace}/image_raw", Image),
                                               (f"{namespace}/camera_info", CameraInfo)], count=20)
    finally:
        assert node.stop() == 0, node.log()

    expected_k = SyntheticSource("indoor", width=WIDTH, height=HEIGHT).camera.intrinsics.matrix()
    for image in images:
        assert (image.encoding, image.width, image.height, image.step) == ("rgb8", WIDTH, HEIGHT, WIDTH * 3)
        assert len(image.data) == image.step * image.height and image.is_bigendian == 0
        assert image.header.frame_id == FRAME_ID
        # The pixels are the scene's renders, unchanged.
        rgb = image_msg_to_rgb(image)
        assert any(np.array_equal(rgb, frame) for frame in rendered_frames)
        # Each image has a CameraInfo with the very same stamp and frame.
        info = next((i for i in infos if rh.same_stamp(i.header.stamp, image.header.stamp)), None)
        assert info is not None, "no CameraInfo with the image's stamp"
        assert info.header.frame_id == FRAME_ID
        assert (info.width, info.height) == (WIDTH, HEIGHT)
        assert np.allclose(np.asarray(info.k).reshape(3, 3), expected_k)
        assert np.allclose(np.asarray(info.p).reshape(3, 4)[:, :3], expected_k)
    # The path goes back and forth: consecutive pictures differ (the camera moves).
    assert not np.array_equal(image_msg_to_rgb(images[0]), image_msg_to_rgb(images[1]))

    stamps = np.array([stamp_seconds(m) for m in images])
    intervals = np.diff(stamps)
    assert np.all(intervals > 0)
    assert np.median(intervals) == pytest.approx(1.0 / RATE_HZ, rel=0.25)
    span = stamps[-1] - stamps[0]
    assert len(images) - 1 >= 0.75 * span * RATE_HZ  # nothing lost on the way, rate held


@pytest.mark.parametrize("transport", ["bgr8", "compressed"])
def test_bgr8_and_compressed_streams(tmp_path, client, rendered_frames, transport):
    namespace = rh.unique_namespace("cam")
    parameters = {"width": WIDTH, "height": HEIGHT, "rate": 20.0, "seed": 5, "frames_per_pass": FRAMES_PER_PASS,
                  "frame_id": "front_camera_optical_frame", "publish_ground_truth": True}
    if transport == "compressed":
        parameters["image_transport"] = "compressed"
        topic, kind = f"{namespace}/image_raw/compressed", CompressedImage
    else:
        parameters["encoding"] = "bgr8"
        topic, kind = f"{namespace}/image_raw", Image
    node = start_simulator(tmp_path, namespace, parameters, name=transport)
    try:
        images, truth = collect(client, node, [(topic, kind), (f"{namespace}/ground_truth/depth", Image)], count=5)
    finally:
        assert node.stop() == 0, node.log()
    for message in images:
        assert message.header.frame_id == "front_camera_optical_frame"
        if transport == "compressed":
            assert "jpeg" in message.format
            rgb = compressed_msg_to_rgb(message)
            errors = [np.abs(rgb.astype(int) - frame).mean() for frame in rendered_frames]
            assert min(errors) < 6.0  # JPEG of one of the renders
        else:
            assert (message.encoding, message.step) == ("bgr8", WIDTH * 3)
            rgb = image_msg_to_rgb(message)
            assert any(np.array_equal(rgb, frame) for frame in rendered_frames)
        depth = next(m for m in truth if rh.same_stamp(m.header.stamp, message.header.stamp))
        assert depth.encoding == "32FC1"
        assert np.all(image_msg_to_depth(depth) > 0.0)  # exact depth of the room, every pixel


def test_folder_source_publishes_file_intrinsics_and_max_frames_ends_it(tmp_path, client):
    folder = tmp_path / "pictures"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(3):
        cv2.imwrite(str(folder / f"{index}.png"), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    intrinsics = tmp_path / "camera.yaml"
    intrinsics.write_text("fx: 70.0\nfy: 72.0\ncx: 30.0\ncy: 22.0\nwidth: 64\nheight: 48\n")
    namespace = rh.unique_namespace("folder")
    node = start_simulator(tmp_path, namespace, {"source": "folder", "folder": str(folder),
                                                 "intrinsics_file": str(intrinsics), "rate": 20.0})
    try:
        (infos,) = collect(client, node, [(f"{namespace}/camera_info", CameraInfo)], count=3)
    finally:
        assert node.stop() == 0, node.log()
    info = infos[0]
    assert list(info.k) == [70.0, 0.0, 30.0, 0.0, 72.0, 22.0, 0.0, 0.0, 1.0]
    assert (info.width, info.height) == (64, 48)

    # max_frames: the node publishes that many frames and exits by itself, successfully.
    node = start_simulator(tmp_path, rh.unique_namespace("folder"), {
        "source": "folder", "folder": str(folder), "intrinsics_file": str(intrinsics), "rate": 50.0,
        "max_frames": 4}, name="max_frames")
    assert node.wait_exit(timeout=30) == 0, node.log()
    assert "published 4 frame(s)" in node.log()
    node.stop()


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"source": "folder"}, "needs a folder"),
        ({"scene": "moon"}, "scene must be one of"),
        ({"rate": 0.0}, "out of range"),
    ],
)
def test_bad_parameters_stop_it_with_the_reason(tmp_path, parameters, message):
    node = start_simulator(tmp_path, rh.unique_namespace("bad"), parameters, name="bad")
    assert node.wait_exit(timeout=30) == 2
    node.stop()
    assert message in node.log()
