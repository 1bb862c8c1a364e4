"""Several cameras through one depth node over real DDS: one model, one batched encoder + decoder pass
for the frames waiting, each camera's outputs under its name at its own size.

One node process serves the module, with ``cameras: [front, rear, side]``:

* ``front``: ``yuv422_yuy2`` images 96x64 through a lens with barrel distortion (plumb_bob), the
  node's output size (the image's);
* ``rear``: ``rgb8`` images 80x48 without distortion, its own output size 40x24;
* ``side``: its own ``image_transport: compressed`` (JPEG / PNG).

``camera_info_tolerance`` is 0.05 s, so the stamp rule is exercised. The test process loads the same
checkpoint and computes what every frame must give from the same converted and undistorted pixels.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import pytest
import ros_helpers as rh
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header

from space_clip_ros.data.camera import focal_rescale_factor
from space_clip_ros.msgs import compressed_msg_to_rgb, image_msg_to_depth, image_msg_to_rgb, pointcloud2_to_xyz_grid
from space_clip_ros.msgs.image import SUPPORTED_COLOUR_ENCODINGS
from space_clip_ros.msgs.undistort import Undistorter
from space_clip_ros.outputs.topics import OUTPUT_TOPICS
from space_clip_ros.ros import diagnostics as diag

pytestmark = [pytest.mark.ros, pytest.mark.timeout(600), pytest.mark.slow]  # a node process over DDS per module

FRAME_ID = "optical_frame"
MIN_DEPTH, MAX_DEPTH = 0.1, 3.0
TRAIN_FOCAL, TRAIN_SIZE = 100.0, (64, 96)
TOLERANCE_S = 0.05
DISTORTION = [-0.22, 0.05, 0.001, -0.0015, 0.0]  # barrel: every undistorted pixel has a source


@dataclass(frozen=True)
class CameraSpec:
    name: str
    width: int
    height: int
    fx: float
    output: tuple[int, int]  # (height, width) of the depth outputs
    distortion: tuple[float, ...] = (0.0,) * 5

    def info(self, stamp: Any, fx: float | None = None) -> CameraInfo:
        fx = fx or self.fx
        cx, cy = (self.width - 1) / 2, (self.height - 1) / 2
        k = [fx, 0.0, cx, 0.0, fx, cy, 0.0, 0.0, 1.0]
        return CameraInfo(header=Header(stamp=stamp, frame_id=f"{self.name}_{FRAME_ID}"), width=self.width,
                          height=self.height, distortion_model="plumb_bob", d=list(self.distortion), k=k,
                          r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                          p=[fx, 0.0, cx, 0.0, 0.0, fx, cy, 0.0, 0.0, 0.0, 1.0, 0.0])


FRONT = CameraSpec("front", 96, 64, 80.0, output=(64, 96), distortion=tuple(DISTORTION))
REAR = CameraSpec("rear", 80, 48, 60.0, output=(24, 40))
SIDE = CameraSpec("side", 96, 64, 90.0, output=(64, 96))
CAMERAS = {spec.name: spec for spec in (FRONT, REAR, SIDE)}


def yuyv_message(rgb: np.ndarray, stamp: Any, frame_id: str) -> Image:
    """``yuv422_yuy2`` (Y0 U Y1 V) of an RGB picture: BT.601 studio range, chroma of each pixel pair averaged."""
    yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV).astype(np.float32)
    height, width = rgb.shape[:2]
    # OpenCV's RGB2YUV is full range; the camera's YUV is studio range, as OpenCV reads it back.
    y = 16.0 + yuv[..., 0] * (219.0 / 255.0)
    u = 128.0 + (yuv[..., 1] - 128.0) * (224.0 / 255.0)
    v = 128.0 + (yuv[..., 2] - 128.0) * (224.0 / 255.0)
    packed = np.empty((height, width // 2, 4), dtype=np.float32)
    packed[..., 0], packed[..., 2] = y[:, 0::2], y[:, 1::2]
    packed[..., 1] = (u[:, 0::2] + u[:, 1::2]) / 2
    packed[..., 3] = (v[:, 0::2] + v[:, 1::2]) / 2
    data = np.clip(np.rint(packed), 0, 255).astype(np.uint8).tobytes()
    return rh.raw_image_message("yuv422_yuy2", width, height, 2 * width, data, stamp, frame_id)


#: Bytes per pixel of the raw encodings sent with random data (semi-planar YUV: per pixel, both planes).
ENCODED_BYTES_PER_PIXEL = {"nv21": 1.5, "nv24": 3, "uyvy": 2, "bayer_rggb8": 1, "bayer_gbrg16": 2, "rgb16": 6,
                           "bgra16": 8, "mono16": 2}


def encoded_message(encoding: str, width: int, height: int, stamp: Any, seed: int) -> Image:
    """An image of random bytes in ``encoding`` (step = the plane's row; big-endian for 16-bit rgb16)."""
    size = int(width * height * ENCODED_BYTES_PER_PIXEL[encoding])
    data = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    per_row = {"nv21": 1, "nv24": 1}.get(encoding, int(ENCODED_BYTES_PER_PIXEL[encoding]))
    message = rh.raw_image_message(encoding, width, height, width * per_row, data, stamp, f"rear_{FRAME_ID}")
    message.is_bigendian = 1 if encoding == "rgb16" else 0
    return message


@dataclass
class Harness:
    node: rh.NodeProcess
    client: rh.RosTestClient
    namespace: str
    node_name: str
    predictor: Any
    pubs: dict[str, Any] = field(default_factory=dict)
    subs: dict[tuple[str, str], Any] = field(default_factory=dict)
    _seconds: int = 1000

    def next_stamp(self) -> Any:
        self._seconds += 1
        return rh.make_stamp(self._seconds, 250_000_000)

    def roundtrip(self, camera: str, make_message: Callable[[Any], Any], wait_on: str = "depth",
                  with_info: bool = True, attempts: int = 8, per_attempt_s: float = 5.0) -> tuple[Any, Any, Any]:
        """Publish a frame of ``camera`` (with its CameraInfo of the same stamp) until ``wait_on``
        answers; (stamp, message sent, answer)."""

        def send(stamp: Any) -> Any:
            if with_info:
                self.pubs[(camera, "camera_info")].publish(CAMERAS[camera].info(stamp))
            message = make_message(stamp)
            self.pubs[(camera, "image")].publish(message)
            return message

        stamps = (self.next_stamp() for _ in range(attempts))
        answered = rh.publish_until_answered(send, self.subs[(camera, wait_on)], stamps, per_attempt_s)
        if answered is None:
            raise AssertionError(f"{camera}: no {wait_on} after {attempts} frames; node log:\n{self.node.log()}")
        return answered

    def output(self, camera: str, key: str, stamp: Any, timeout: float = 30.0) -> Any:
        return self.subs[(camera, key)].wait_for_stamp(stamp, timeout=timeout)

    def diagnostics(self, camera: str, predicate: Callable[[dict[str, str]], bool] = lambda v: True,
                    timeout: float = 30.0) -> dict[str, str]:
        name = f"{self.node_name}: depth estimation ({camera})"

        def latest() -> dict[str, str] | None:
            for message in reversed(self.subs[("", "diagnostics")].messages):
                values = rh.diagnostic_values(message, name)
                if values is not None:
                    return values if predicate(values) else None
            return None

        return rh.wait_until(latest, timeout, f"diagnostics of {name} that match")


def expected_depth(h: Harness, camera: CameraSpec, pixels: np.ndarray, fx: float | None = None) -> np.ndarray:
    """The local predictor on the pixels the node sees, focal-rescaled, NaN outside [min, max]."""
    scale = focal_rescale_factor(fx or camera.fx, fx or camera.fx, (camera.height, camera.width), h.predictor.record)
    depth = h.predictor.predict(pixels, output_size=camera.output) * np.float32(scale)
    return np.where((depth >= MIN_DEPTH) & (depth <= MAX_DEPTH), depth, np.nan)


def assert_depth_equal(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal up to float rounding (another process, maybe another batch); only pixels right at a limit may flip."""
    assert actual.shape == expected.shape
    flipped = np.isfinite(actual) != np.isfinite(expected)
    if flipped.any():
        values = np.concatenate([actual[flipped], expected[flipped]])
        near_limit = np.abs(values[np.isfinite(values)] - MAX_DEPTH).max(initial=0.0)
        assert flipped.sum() <= 2 and near_limit < 1e-3, f"{flipped.sum()} pixels differ in validity"
    both = np.isfinite(actual) & np.isfinite(expected)
    assert both.any()
    np.testing.assert_allclose(actual[both], expected[both], rtol=1e-4, atol=1e-5)


def backprojection(depth: np.ndarray, info: CameraInfo) -> np.ndarray:
    fx, cx, fy, cy = info.k[0], info.k[2], info.k[4], info.k[5]
    rows, cols = np.mgrid[0:depth.shape[0], 0:depth.shape[1]].astype(np.float64)
    z = depth.astype(np.float64)
    return np.stack([(cols - cx) * z / fx, (rows - cy) * z / fy, z], axis=-1)


def scaled_k(camera: CameraSpec, fx: float | None = None) -> np.ndarray:
    """K of ``camera``'s CameraInfo scaled to its output size (image_proc's convention)."""
    k = np.asarray(camera.info(rh.make_stamp(0), fx).k).reshape(3, 3)
    sx, sy = camera.output[1] / camera.width, camera.output[0] / camera.height
    return np.diag([sx, sy, 1.0]) @ k


def assert_outputs_of(h: Harness, camera: CameraSpec, stamp: Any, pixels: np.ndarray) -> None:
    """Every output of ``camera`` for ``stamp``: depth equal to the local prediction on ``pixels``, the
    depth image's CameraInfo (D zero, K and P scaled), and a cloud of back-projected depth pixels."""
    depth_msg = h.output(camera.name, "depth", stamp)
    info_msg = h.output(camera.name, "depth_info", stamp)
    cloud = h.output(camera.name, "points", stamp)
    height, width = camera.output
    assert (depth_msg.height, depth_msg.width) == (height, width) and depth_msg.encoding == "32FC1"
    assert depth_msg.header.frame_id == f"{camera.name}_{FRAME_ID}"
    depth = image_msg_to_depth(depth_msg)
    assert_depth_equal(depth, expected_depth(h, camera, pixels))

    assert (info_msg.width, info_msg.height) == (width, height)
    assert info_msg.distortion_model == "plumb_bob" and list(info_msg.d) == [0.0] * 5
    k = scaled_k(camera)
    np.testing.assert_allclose(np.asarray(info_msg.k).reshape(3, 3), k, rtol=1e-9)
    np.testing.assert_allclose(np.asarray(info_msg.p).reshape(3, 4), np.hstack([k, np.zeros((3, 1))]), rtol=1e-9)

    assert (cloud.height, cloud.width) == (height, width) and cloud.header.frame_id == depth_msg.header.frame_id
    np.testing.assert_allclose(pointcloud2_to_xyz_grid(cloud), backprojection(depth, info_msg), rtol=1e-5,
                               atol=1e-6, equal_nan=True)


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    directory = tmp_path_factory.mktemp("multi_camera")
    checkpoint, weights = rh.make_tiny_checkpoint(directory, train_focal=TRAIN_FOCAL, train_image_size=TRAIN_SIZE)
    domain = rh.module_domain_id(__name__)
    namespace = rh.unique_namespace()
    overrides = rh.tiny_node_overrides(
        # The model exactly as trained (torch, fp32), as the test process's predictor runs it.
        weights, backend="torch", optimize=False, max_depth=MAX_DEPTH, cameras=list(CAMERAS),
        camera_info_tolerance=TOLERANCE_S,
        **{"rear.output_width": REAR.output[1], "rear.output_height": REAR.output[0],
           "side.image_transport": "compressed"},
    )
    command = rh.depth_node_command(namespace=namespace, checkpoint=str(checkpoint), device="cpu", overrides=overrides)
    node = rh.NodeProcess(command, rh.node_environment(domain), directory / "depth_node.log")
    client = rh.RosTestClient(domain, name="multi_camera_client")
    try:
        node.wait_for_log(r"\[INFO\].*SPACE-CLIP .*trained decoder.*front: Input: ", timeout=120)
        h = Harness(node=node, client=client, namespace=namespace, node_name=f"{namespace}/space_clip_depth",
                    predictor=rh.local_predictor(checkpoint, weights))
        for name in CAMERAS:
            image_topic = f"{namespace}/{name}/image" + ("/compressed" if name == "side" else "")
            h.pubs[(name, "image")] = client.publisher(image_topic, CompressedImage if name == "side" else Image)
            h.pubs[(name, "camera_info")] = client.publisher(f"{namespace}/{name}/camera_info", CameraInfo)
            for key, topic, kind in (("depth", "depth/image", Image), ("depth_info", "depth/camera_info", CameraInfo),
                                     ("points", "points", PointCloud2)):
                h.subs[(name, key)] = client.collect(f"{namespace}/{name}/{topic}", kind)
        h.subs[("", "diagnostics")] = client.collect("/diagnostics", DiagnosticArray)
        for publisher in h.pubs.values():
            client.wait_for_subscribers(publisher)
        # Discovery finishes and each camera's first (slowest) frame runs before the tests start.
        rgb = rh.pattern_image(FRONT.height, FRONT.width)
        h.roundtrip("front", lambda stamp: yuyv_message(rgb, stamp, f"front_{FRAME_ID}"), attempts=30,
                    per_attempt_s=2.0)
        rear_rgb = rh.pattern_image(REAR.height, REAR.width)
        h.roundtrip("rear", lambda stamp: rh.image_message(rear_rgb, "rgb8", stamp, f"rear_{FRAME_ID}"), attempts=30,
                    per_attempt_s=2.0)
        yield h
    finally:
        rh.shut_down(node, client)


# ---- tests (in file order: the batching test comes first, before anything else sends two cameras) ----
def test_two_cameras_share_one_batched_pass_and_each_gets_its_own_outputs(harness: Harness):
    """front (yuv422_yuy2, distorted, 96x64) and rear (rgb8, 80x48 -> 40x24) through one pass."""
    front_rgb, rear_rgb = rh.pattern_image(FRONT.height, FRONT.width, seed=1), rh.pattern_image(REAR.height, REAR.width,
                                                                                           seed=2)
    log_start = len(harness.node.log())
    batch_line = re.compile(r"\[INFO\].*one encoder \+ decoder pass for 2 frames \((\w+) (\d+)\.(\d{9}), "
                            r"(\w+) (\d+)\.(\d{9})\)")
    sent: dict[tuple[str, int, int], Image] = {}

    def batched() -> re.Match | None:
        return batch_line.search(harness.node.log(), log_start)

    # Frames of both cameras faster than the model runs: while it runs on one, the next of each wait,
    # and the worker takes them together.
    deadline = time.monotonic() + 90.0
    index = 0
    while not batched():
        assert time.monotonic() < deadline, f"no batch of 2 frames in 90 s:\n{harness.node.log()[log_start:]}"
        index += 1
        stamp = rh.make_stamp(5000 + index // 100, (index % 100) * 10_000_000)  # 10 ms apart
        for camera in (FRONT, REAR):
            harness.pubs[(camera.name, "camera_info")].publish(camera.info(stamp))
        time.sleep(0.002)
        front_msg = yuyv_message(front_rgb, stamp, f"front_{FRAME_ID}")
        rear_msg = rh.image_message(rear_rgb, "rgb8", stamp, f"rear_{FRAME_ID}")
        harness.pubs[("front", "image")].publish(front_msg)
        harness.pubs[("rear", "image")].publish(rear_msg)
        sent[("front", stamp.sec, stamp.nanosec)], sent[("rear", stamp.sec, stamp.nanosec)] = front_msg, rear_msg
        time.sleep(0.01)

    match = batched()
    batch = {match.group(1): rh.make_stamp(int(match.group(2)), int(match.group(3))),
             match.group(4): rh.make_stamp(int(match.group(5)), int(match.group(6)))}
    assert set(batch) == {"front", "rear"}, match.group(0)

    # The two frames of that pass: every output, from the pixels the node saw (front: YUYV converted,
    # then undistorted with its CameraInfo; rear: as sent).
    front_stamp, rear_stamp = batch["front"], batch["rear"]
    front_pixels = image_msg_to_rgb(sent[("front", front_stamp.sec, front_stamp.nanosec)])
    undistorted = Undistorter(FRONT.info(front_stamp)).undistort(front_pixels)
    assert np.abs(undistorted.astype(int) - front_pixels.astype(int)).mean() > 1.0, "the lens changes the picture"
    assert_outputs_of(harness, FRONT, front_stamp, undistorted)
    assert_outputs_of(harness, REAR, rear_stamp, image_msg_to_rgb(sent[("rear", rear_stamp.sec, rear_stamp.nanosec)]))

    # Each camera counts its own frames and reports the pass it shared.
    for camera in ("front", "rear"):
        values = harness.diagnostics(camera, lambda v: v[diag.KEY_BATCH_LARGEST] == "2")
        assert values[diag.KEY_CAMERA] == camera and int(values[diag.KEY_PROCESSED]) >= 2
        assert int(values[diag.KEY_DROPPED]) >= 0 and values[diag.KEY_CAMERA_INFO] == "yes"


def test_every_output_topic_is_under_each_camera(harness: Harness):
    for camera in CAMERAS:
        for topic in OUTPUT_TOPICS:
            harness.client.wait_for_publishers(f"{harness.namespace}/{camera}/{topic.name}")
    # Nothing in the node's own namespace: the single camera's topics are not there.
    assert harness.client.node.count_subscribers(f"{harness.namespace}/image") == 0
    assert harness.client.node.count_publishers(f"{harness.namespace}/depth/image") == 0


@pytest.mark.parametrize("encoding", sorted(ENCODED_BYTES_PER_PIXEL))
def test_camera_encodings_through_the_node(harness: Harness, encoding: str):
    stamp, message, depth_msg = harness.roundtrip(
        "rear", lambda stamp: encoded_message(encoding, REAR.width, REAR.height, stamp, seed=len(encoding)))
    assert_depth_equal(image_msg_to_depth(depth_msg), expected_depth(harness, REAR, image_msg_to_rgb(message)))


def test_an_unsupported_encoding_is_one_throttled_error_naming_the_supported_ones(harness: Harness):
    errors_before = int(harness.diagnostics("rear")[diag.KEY_ERRORS])
    log_start = len(harness.node.log())
    for _ in range(5):
        harness.pubs[("rear", "image")].publish(rh.raw_image_message(
            "32FC1", REAR.width, REAR.height, 4 * REAR.width, bytes(4 * REAR.width * REAR.height),
            harness.next_stamp(), f"rear_{FRAME_ID}"))
        time.sleep(0.05)
    # Every one counted (diagnostics), one logged (the same problem at most once per 5 s).
    harness.diagnostics("rear", lambda v: int(v[diag.KEY_ERRORS]) >= errors_before + 5)
    lines = [line for line in harness.node.log()[log_start:].splitlines() if "unsupported encoding" in line]
    assert len(lines) == 1, lines
    assert "[ERROR]" in lines[0] and "rear: frame " in lines[0]
    assert "unsupported encoding '32FC1'; supported: " + ", ".join(SUPPORTED_COLOUR_ENCODINGS) in lines[0]


def test_each_image_takes_the_camera_info_of_its_stamp_or_none_beyond_the_tolerance(harness: Harness):
    rgb = rh.pattern_image(REAR.height, REAR.width, seed=3)
    # Two calibrations with their own stamps (a zoom between two frames), both kept before either
    # image comes: each image gets its own, not the latest.
    calibrations = {}

    def send(first: Any) -> Any:
        second = rh.make_stamp(first.sec, first.nanosec + 20_000_000)  # 20 ms later: within the tolerance
        calibrations.clear()
        calibrations.update({(first.sec, first.nanosec): 50.0, (second.sec, second.nanosec): 70.0})
        harness.pubs[("rear", "camera_info")].publish(REAR.info(first, 50.0))
        harness.pubs[("rear", "camera_info")].publish(REAR.info(second, 70.0))
        time.sleep(0.05)
        for stamp in (first, second):
            harness.pubs[("rear", "image")].publish(rh.image_message(rgb, "rgb8", stamp, f"rear_{FRAME_ID}"))
            time.sleep(0.3)  # one at a time: both must be processed, not the newer only

    stamps = (harness.next_stamp() for _ in range(8))
    answered = rh.publish_until_answered(send, harness.subs[("rear", "depth_info")], stamps, 5.0)
    assert answered is not None, harness.node.log()
    for (sec, nanosec), fx in calibrations.items():
        stamp = rh.make_stamp(sec, nanosec)
        depth_info = harness.output("rear", "depth_info", stamp)
        np.testing.assert_allclose(np.asarray(depth_info.k).reshape(3, 3), scaled_k(REAR, fx), rtol=1e-9)
        depth = image_msg_to_depth(harness.output("rear", "depth", stamp))
        assert_depth_equal(depth, expected_depth(harness, REAR, rgb, fx=fx))  # focal rescaling follows too

    # An image whose stamp is a second away from every CameraInfo kept: depth only, and a warning
    # that names both stamps.
    log_start = len(harness.node.log())
    stamp, _, _ = harness.roundtrip("rear", lambda stamp: rh.image_message(rgb, "rgb8", stamp, f"rear_{FRAME_ID}"),
                                    with_info=False)
    text = f"{stamp.sec}.{stamp.nanosec:09d}"
    line = harness.node.wait_for_log(rf"\[WARN\].*rear: no CameraInfo within {TOLERANCE_S:g} s of the image stamp "
                                     rf"{re.escape(text)}: the nearest of the \d+ kept has stamp \d+\.\d{{9}}.*",
                                     start=log_start)
    assert "publishing this frame's depth image only" in line.group(0)
    time.sleep(1.0)  # the depth image came; give the other two as long to show up, if they wrongly did
    assert harness.subs[("rear", "depth_info")].find(lambda m: rh.same_stamp(m.header.stamp, stamp)) is None
    assert harness.subs[("rear", "points")].find(lambda m: rh.same_stamp(m.header.stamp, stamp)) is None


def test_undistortion_can_be_switched_off(harness: Harness):
    rgb = rh.pattern_image(FRONT.height, FRONT.width, seed=4)
    (result,) = harness.client.set_parameters(harness.node_name, {"undistort": False})
    assert result.successful, result.reason
    try:
        stamp, message, _ = harness.roundtrip("front", lambda stamp: yuyv_message(rgb, stamp, f"front_{FRAME_ID}"),
                                              wait_on="depth_info")
        # The pixels as they came, and the camera's own CameraInfo (its D kept).
        depth = image_msg_to_depth(harness.output("front", "depth", stamp))
        assert_depth_equal(depth, expected_depth(harness, FRONT, image_msg_to_rgb(message)))
        assert list(harness.output("front", "depth_info", stamp).d) == pytest.approx(DISTORTION)
    finally:
        (result,) = harness.client.set_parameters(harness.node_name, {"undistort": True})
        assert result.successful


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_a_camera_of_its_own_transport_reads_compressed_images(harness: Harness, fmt: str):
    rgb = rh.pattern_image(SIDE.height, SIDE.width, seed=5)
    stamp, message, _ = harness.roundtrip(
        "side", lambda stamp: rh.compressed_message(rgb, fmt, stamp, f"side_{FRAME_ID}"), wait_on="points")
    assert_outputs_of(harness, SIDE, stamp, compressed_msg_to_rgb(message))
    values = harness.diagnostics("side", lambda v: int(v[diag.KEY_PROCESSED]) > 0)
    assert values[diag.KEY_CAMERA] == "side"
