"""The depth node as its own process over real DDS: outputs, geometry, bad input, parameters, load.

One node process serves the whole module (started as ``depth_node`` with config/depth.yaml and the
launch file's remappings, a tiny backbone and a decoder checkpoint made here). The test process
loads the same checkpoint, so it knows which depth every frame must produce.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import ros_helpers as rh
from diagnostic_msgs.msg import DiagnosticArray
from ros_helpers import (
    CX,
    CY,
    DEPTH_SCALE,
    FRAME_ID,
    FX,
    FY,
    HEIGHT,
    MAX_DEPTH,
    MIN_DEPTH,
    TRAIN_FOCAL,
    WIDTH,
    camera_info_message,
    ceil_div,
    diagnostic_values,
    image_message,
    make_stamp,
    pattern_image,
    publish_until_answered,
    raw_image_message,
    same_stamp,
)
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Float32MultiArray

from space_clip_ros.msgs import image_msg_to_depth, image_msg_to_rgb, pointcloud2_to_xyz_grid
from space_clip_ros.ros import diagnostics as diag

pytestmark = [pytest.mark.ros, pytest.mark.timeout(600), pytest.mark.slow]  # a node process over DDS per module


@dataclass
class Harness:
    node: rh.NodeProcess
    client: rh.RosTestClient
    node_name: str
    image_topic: str
    predictor: Any
    pubs: dict[str, Any] = field(default_factory=dict)
    subs: dict[str, Any] = field(default_factory=dict)
    _stamp_counter: int = 0

    def next_stamp(self):
        self._stamp_counter += 1
        return make_stamp(1000 + self._stamp_counter, 123)

    def camera_info(self, width: int = WIDTH, height: int = HEIGHT, scale: float = 1.0, fx: float = FX):
        return camera_info_message(width, height, fx * scale, FY * scale, CX * scale, CY * scale, FRAME_ID)

    def roundtrip(
        self,
        make_message: Callable[[Any], Any],
        wait_on: str = "depth",
        before: Callable[[], None] | None = None,
        attempts: int = 6,
        per_attempt_s: float = 5.0,
    ) -> tuple[Any, Any]:
        """Publish a frame (new stamp each attempt) until ``wait_on`` answers it; (stamp, answer)."""

        def send(stamp: Any) -> None:
            if before is not None:
                before()
            self.pubs["image"].publish(make_message(stamp))

        stamps = (self.next_stamp() for _ in range(attempts))
        answered = publish_until_answered(send, self.subs[wait_on], stamps, per_attempt_s)
        if answered is None:
            raise AssertionError(f"no {wait_on} answer after {attempts} frames; node log:\n{self.node.log()}")
        stamp, _, answer = answered
        return stamp, answer

    def rgb_frame(self, rgb: np.ndarray, encoding: str = "rgb8") -> Callable[[Any], Any]:
        return lambda stamp: image_message(rgb, encoding, stamp, FRAME_ID)

    def latest_diagnostics(self, predicate: Callable[[dict[str, str]], bool] = lambda v: True,
                           timeout: float = 30.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in reversed(self.subs["diagnostics"].messages):
                values = diagnostic_values(msg, f"{self.node_name}: ")
                if values is not None and predicate(values):
                    return values
            time.sleep(0.1)
        raise AssertionError(f"no matching diagnostics from {self.node_name} within {timeout} s")


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    directory = tmp_path_factory.mktemp("depth_node")
    checkpoint, weights = rh.make_tiny_checkpoint(directory, train_focal=TRAIN_FOCAL, train_image_size=(HEIGHT, WIDTH))
    domain = rh.module_domain_id(__name__)
    namespace = rh.unique_namespace()
    image_topic = f"{namespace}/camera/color/image_raw"
    info_topic = f"{namespace}/camera/color/camera_info"
    command = rh.depth_node_command(
        namespace=namespace,
        image=image_topic,
        camera_info=info_topic,
        checkpoint=str(checkpoint),
        device="cpu",
        # The model exactly as trained (torch, fp32), as the test process's predictor runs it.
        overrides=rh.tiny_node_overrides(weights, max_depth=MAX_DEPTH, backend="torch", optimize=False),
    )
    node = rh.NodeProcess(command, rh.node_environment(domain), directory / "depth_node.log")
    client = rh.RosTestClient(domain)
    try:
        node.wait_for_log(r"\[INFO\].*SPACE-CLIP ViT-B-16 .*trained decoder.* on cpu", timeout=120)
        h = Harness(node=node, client=client, node_name=f"{namespace}/space_clip_depth",
                    image_topic=image_topic, predictor=rh.local_predictor(checkpoint, weights))
        h.pubs["image"] = client.publisher(image_topic, Image)
        h.pubs["camera_info"] = client.publisher(info_topic, CameraInfo)
        for key, topic, kind in (
            ("depth", "depth/image", Image),
            ("depth_info", "depth/camera_info", CameraInfo),
            ("points", "points", PointCloud2),
            ("colored", "depth/colored", Image),
            ("embedding", "clip/image_embedding", Float32MultiArray),
        ):
            h.subs[key] = client.collect(f"{namespace}/{topic}", kind)
        h.subs["diagnostics"] = client.collect("/diagnostics", DiagnosticArray)
        client.wait_for_subscribers(h.pubs["image"])
        client.wait_for_subscribers(h.pubs["camera_info"])
        client.wait_for_publishers(f"{namespace}/depth/image")
        # Discovery finishes and the first (slowest) inference runs before the tests start.
        h.roundtrip(h.rgb_frame(pattern_image(HEIGHT, WIDTH)), attempts=30, per_attempt_s=2.0)
        yield h
    finally:
        rh.shut_down(node, client)


def expected_depth(h: Harness, rgb: np.ndarray, scale: float, stride: int = 1) -> np.ndarray:
    """What the node must publish: local prediction x focal scale, NaN outside [min, max]."""
    depth = h.predictor.predict(rgb) * np.float32(scale)
    depth = np.where((depth >= MIN_DEPTH) & (depth <= MAX_DEPTH), depth, np.nan)
    return depth[::stride, ::stride]


def assert_depth_equal(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    same_validity = np.isfinite(actual) == np.isfinite(expected)
    # Two processes may round differently in the last bit: only pixels right at a limit may flip.
    flipped = ~same_validity
    if flipped.any():
        near_limit = np.nanmin(np.abs(np.stack([np.nan_to_num(actual[flipped], nan=MAX_DEPTH),
                                                np.nan_to_num(expected[flipped], nan=MAX_DEPTH)]) - MAX_DEPTH))
        assert flipped.sum() <= 2 and near_limit < 1e-3, f"{flipped.sum()} pixels differ in validity"
    both = np.isfinite(actual) & np.isfinite(expected)
    np.testing.assert_allclose(actual[both], expected[both], rtol=1e-4, atol=1e-5)


def backprojection(depth: np.ndarray, info: CameraInfo, stride: int = 1) -> np.ndarray:
    """x = (u - cx) z / fx, y = (v - cy) z / fy, z: the REP 103 optical-frame point of each pixel."""
    fx, cx, fy, cy = info.k[0], info.k[2], info.k[4], info.k[5]
    rows, cols = np.mgrid[0:depth.shape[0], 0:depth.shape[1]].astype(np.float64)
    z = depth.astype(np.float64)
    points = np.stack([(cols - cx) * z / fx, (rows - cy) * z / fy, z], axis=-1)
    return points[::stride, ::stride]


# ---- tests (in file order: the first runs before any CameraInfo exists) --------------------------
def test_depth_flows_before_camera_info_but_no_cloud(harness: Harness):
    rgb = pattern_image(HEIGHT, WIDTH, seed=1)
    stamp, depth_msg = harness.roundtrip(harness.rgb_frame(rgb))

    assert depth_msg.encoding == "32FC1"
    assert (depth_msg.width, depth_msg.height) == (WIDTH, HEIGHT)
    assert depth_msg.header.frame_id == FRAME_ID
    depth = image_msg_to_depth(depth_msg)
    # No CameraInfo: no focal rescaling yet.
    assert_depth_equal(depth, expected_depth(harness, rgb, scale=1.0))
    assert np.isnan(depth).any() and np.isfinite(depth).any(), "the NaN convention is not exercised"

    harness.node.wait_for_log(r"\[WARN\].*no CameraInfo received yet on \S*camera_info")
    time.sleep(1.0)
    assert harness.subs["points"].find(lambda m: same_stamp(m.header.stamp, stamp)) is None
    assert harness.subs["depth_info"].find(lambda m: same_stamp(m.header.stamp, stamp)) is None


def test_depth_camera_info_and_cloud_agree(harness: Harness):
    rgb = pattern_image(HEIGHT, WIDTH, seed=2)
    info = harness.camera_info()
    stamp, cloud = harness.roundtrip(
        harness.rgb_frame(rgb), wait_on="points", before=lambda: harness.pubs["camera_info"].publish(info)
    )
    depth_msg = harness.subs["depth"].wait_for_stamp(stamp)
    info_msg = harness.subs["depth_info"].wait_for_stamp(stamp)

    # depth/image: REP 118 metres, NaN outside [min_depth, max_depth], focal-rescaled.
    depth = image_msg_to_depth(depth_msg)
    assert_depth_equal(depth, expected_depth(harness, rgb, scale=DEPTH_SCALE))
    assert np.nanmin(depth) >= MIN_DEPTH and np.nanmax(depth) <= MAX_DEPTH

    # depth/camera_info: same size as the depth image, same stamp and frame.
    assert (info_msg.width, info_msg.height) == (WIDTH, HEIGHT)
    assert info_msg.header.frame_id == FRAME_ID
    np.testing.assert_allclose(info_msg.k, info.k)
    np.testing.assert_allclose(info_msg.p, info.p)

    # points: depth_image_proc's xyz layout, organised, every point the back-projection of its pixel.
    assert cloud.header.frame_id == FRAME_ID
    assert (cloud.height, cloud.width) == (HEIGHT, WIDTH)
    assert [(f.name, f.offset, f.datatype, f.count) for f in cloud.fields] == [
        ("x", 0, PointField.FLOAT32, 1), ("y", 4, PointField.FLOAT32, 1), ("z", 8, PointField.FLOAT32, 1)
    ]
    assert cloud.point_step == 16 and cloud.row_step == 16 * WIDTH
    assert cloud.is_dense is False and cloud.is_bigendian is False
    points = pointcloud2_to_xyz_grid(cloud)
    np.testing.assert_allclose(points, backprojection(depth, info_msg), rtol=1e-5, atol=1e-6, equal_nan=True)
    assert np.isnan(points[np.isnan(depth)]).all()


@pytest.mark.parametrize("encoding", ["bgr8", "rgba8", "bgra8", "mono8"])
def test_colour_encodings(harness: Harness, encoding: str):
    rgb = pattern_image(HEIGHT, WIDTH, seed=3)
    stamp, depth_msg = harness.roundtrip(harness.rgb_frame(rgb, encoding))
    sent = image_message(rgb, encoding, stamp, FRAME_ID)
    # Each encoding carries the same picture (mono8: its grey version) and must give its depth.
    seen_rgb = image_msg_to_rgb(sent) if encoding == "mono8" else rgb
    assert_depth_equal(image_msg_to_depth(depth_msg), expected_depth(harness, seen_rgb, scale=DEPTH_SCALE))


def test_camera_info_of_another_size_is_rescaled_and_reported_once(harness: Harness):
    rgb = pattern_image(HEIGHT, WIDTH, seed=4)
    doubled = harness.camera_info(width=2 * WIDTH, height=2 * HEIGHT, scale=2.0)
    log_start = len(harness.node.log())
    pattern = rf"\[WARN\].*CameraInfo .* is for a {2 * WIDTH}x{2 * HEIGHT} image but the images are {WIDTH}x{HEIGHT}"
    harness.pubs["camera_info"].publish(doubled)
    deadline = time.monotonic() + 60
    while not harness.node.log()[log_start:].count("is for a"):
        assert time.monotonic() < deadline, harness.node.log()
        harness.roundtrip(harness.rgb_frame(rgb), before=lambda: harness.pubs["camera_info"].publish(doubled))
    harness.node.wait_for_log(pattern, start=log_start)

    stamp, _ = harness.roundtrip(harness.rgb_frame(rgb), wait_on="depth_info")
    info_msg = harness.subs["depth_info"].wait_for_stamp(stamp)
    # Scaled back to the image: the intrinsics of the 96x64 image itself.
    assert (info_msg.width, info_msg.height) == (WIDTH, HEIGHT)
    np.testing.assert_allclose(np.asarray(info_msg.k)[[0, 2, 4, 5]], [FX, CX * 2 / 2, FY, CY * 2 / 2])
    # Focal rescaling compares focal lengths relative to image size: unchanged.
    depth = image_msg_to_depth(harness.subs["depth"].wait_for_stamp(stamp))
    assert_depth_equal(depth, expected_depth(harness, rgb, scale=DEPTH_SCALE))
    assert harness.node.log()[log_start:].count("is for a") == 1, "the rescale warning must appear once"

    harness.pubs["camera_info"].publish(harness.camera_info())


BAD_FRAMES = {
    "unsupported encoding": (
        lambda stamp: raw_image_message("32FC1", WIDTH, HEIGHT, 4 * WIDTH, bytes(4 * WIDTH * HEIGHT),
                                        stamp, FRAME_ID),
        r"\[ERROR\].*unsupported encoding '32FC1'",
    ),
    "data shorter than step x height": (
        lambda stamp: raw_image_message("rgb8", WIDTH, HEIGHT, 3 * WIDTH, bytes(3 * WIDTH * HEIGHT - 100),
                                        stamp, FRAME_ID),
        rf"\[ERROR\].*image data has {3 * WIDTH * HEIGHT - 100} bytes but step\*height = {3 * WIDTH * HEIGHT}",
    ),
    "zero-size image": (
        lambda stamp: raw_image_message("rgb8", 0, 0, 0, b"", stamp, FRAME_ID),
        r"\[ERROR\].*image 'rgb8' is empty \(0x0\)",
    ),
}


def _errors_reported(harness: Harness) -> int:
    return int(harness.latest_diagnostics()[diag.KEY_ERRORS])


@pytest.mark.parametrize("case", list(BAD_FRAMES))
def test_bad_image_is_reported_and_next_frame_served(harness: Harness, case: str):
    make_bad, pattern = BAD_FRAMES[case]
    errors_before = _errors_reported(harness)
    log_start = len(harness.node.log())
    harness.pubs["image"].publish(make_bad(harness.next_stamp()))
    harness.node.wait_for_log(pattern, start=log_start)

    rgb = pattern_image(HEIGHT, WIDTH, seed=5)
    stamp, cloud = harness.roundtrip(harness.rgb_frame(rgb), wait_on="points")
    assert (cloud.height, cloud.width) == (HEIGHT, WIDTH)
    harness.latest_diagnostics(lambda v: int(v[diag.KEY_ERRORS]) > errors_before)


def test_camera_info_with_zero_focal_is_rejected_and_the_good_one_kept(harness: Harness):
    log_start = len(harness.node.log())
    harness.pubs["camera_info"].publish(harness.camera_info(fx=0.0))
    harness.node.wait_for_log(r"\[ERROR\].*camera_info rejected: focal length fx = 0\.0", start=log_start)

    rgb = pattern_image(HEIGHT, WIDTH, seed=6)
    stamp, cloud = harness.roundtrip(harness.rgb_frame(rgb), wait_on="points")
    info_msg = harness.subs["depth_info"].wait_for_stamp(stamp)
    assert info_msg.k[0] == pytest.approx(FX), "the previous, valid CameraInfo stays in use"


def test_runtime_parameter_changes_apply_to_the_next_frame(harness: Harness):
    client, name = harness.client, harness.node_name
    rgb = pattern_image(HEIGHT, WIDTH, seed=7)

    results = client.set_parameters(name, {"points_stride": 3})
    assert results[0].successful, results[0].reason
    stamp, cloud = harness.roundtrip(harness.rgb_frame(rgb), wait_on="points")
    assert (cloud.height, cloud.width) == (ceil_div(HEIGHT, 3), ceil_div(WIDTH, 3))
    depth = image_msg_to_depth(harness.subs["depth"].wait_for_stamp(stamp))
    info_msg = harness.subs["depth_info"].wait_for_stamp(stamp)
    np.testing.assert_allclose(pointcloud2_to_xyz_grid(cloud), backprojection(depth, info_msg, stride=3),
                               rtol=1e-5, atol=1e-6, equal_nan=True)

    results = client.set_parameters(
        name, {"points_organized": False, "publish_colored": True, "colormap": "jet", "publish_embedding": True}
    )
    assert all(r.successful for r in results), [r.reason for r in results]
    harness.subs["embedding"].clear()
    stamp, cloud = harness.roundtrip(harness.rgb_frame(rgb), wait_on="points")
    assert cloud.height == 1 and cloud.is_dense is True
    points = pointcloud2_to_xyz_grid(cloud)[0]
    depth = image_msg_to_depth(harness.subs["depth"].wait_for_stamp(stamp))
    assert points.shape[0] == np.isfinite(depth[::3, ::3]).sum() and np.isfinite(points).all()

    colored = harness.subs["colored"].wait_for_stamp(stamp)
    assert colored.encoding == "bgr8" and (colored.width, colored.height) == (WIDTH, HEIGHT)
    pixels = np.frombuffer(bytes(colored.data), np.uint8).reshape(HEIGHT, WIDTH, 3)
    assert (pixels[np.isnan(depth)] == 0).all() and pixels[np.isfinite(depth)].any()

    embedding = harness.subs["embedding"].wait_for(lambda m: True, what="an embedding")
    assert [(d.label, d.size, d.stride) for d in embedding.layout.dim] == [("clip_image_embedding", 512, 512)]
    expected = harness.predictor.infer(rgb[None], with_embedding=True).embedding[0].numpy()
    np.testing.assert_allclose(np.asarray(embedding.data, dtype=np.float32), expected, rtol=1e-4, atol=1e-5)

    results = client.set_parameters(name, {"points_stride": 1, "points_organized": True,
                                           "publish_colored": False, "publish_embedding": False})
    assert all(r.successful for r in results)


@pytest.mark.parametrize(
    ("values", "reason_words"),
    [
        ({"points_stride": -1}, "points_stride"),
        ({"min_depth": 5.0}, "max_depth"),
        ({"max_depth": 0.05}, "min_depth"),
        ({"output_width": 64}, "output_height"),
        ({"colormap": "sparkly"}, "colormap"),
        ({"device": "cuda"}, "read-only"),
    ],
)
def test_invalid_parameter_values_are_refused_with_a_reason(harness: Harness, values, reason_words):
    before = harness.client.get_parameters(harness.node_name, values)
    (result,) = harness.client.set_parameters(harness.node_name, values)
    assert not result.successful
    assert reason_words in result.reason.lower() or reason_words in result.reason
    assert harness.client.get_parameters(harness.node_name, values) == before


def test_depth_range_can_move_atomically(harness: Harness):
    # min above the old max is fine when max moves in the same atomic call.
    (result,) = harness.client.set_parameters(harness.node_name, {"min_depth": 3.5, "max_depth": 9.0},
                                              atomically=True)
    assert result.successful, result.reason
    (result,) = harness.client.set_parameters(harness.node_name, {"min_depth": MIN_DEPTH, "max_depth": MAX_DEPTH},
                                              atomically=True)
    assert result.successful, result.reason


def test_process_every_n_skips_frames(harness: Harness):
    (result,) = harness.client.set_parameters(harness.node_name, {"process_every_n": 2})
    assert result.successful
    rgb = pattern_image(HEIGHT, WIDTH, seed=8)
    outcomes = []
    for _ in range(6):
        # One frame at a time, each until its fate is known, so that none is superseded.
        skipped_before = int(harness.latest_diagnostics()[diag.KEY_SKIPPED])
        stamp = harness.next_stamp()
        harness.pubs["image"].publish(image_message(rgb, "rgb8", stamp, FRAME_ID))
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            if harness.subs["depth"].find(lambda m, s=stamp: same_stamp(m.header.stamp, s)) is not None:
                outcomes.append("processed")
                break
            values = harness.latest_diagnostics()
            if int(values[diag.KEY_SKIPPED]) > skipped_before:
                outcomes.append("skipped")
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"frame {stamp.sec} neither answered nor skipped")
    assert outcomes.count("processed") == 3 and outcomes.count("skipped") == 3
    assert outcomes[0::2] == [outcomes[0]] * 3 and outcomes[1::2] == [outcomes[1]] * 3, outcomes
    (result,) = harness.client.set_parameters(harness.node_name, {"process_every_n": 1})
    assert result.successful


def test_load_drops_old_frames_keeps_memory_flat_and_answers_the_last(harness: Harness):
    rgb = pattern_image(HEIGHT, WIDTH, seed=9)
    publisher = harness.pubs["image"]

    def burst(count: int):
        frames = [image_message(rgb, "rgb8", harness.next_stamp(), FRAME_ID) for _ in range(count)]
        for frame in frames:
            publisher.publish(frame)
        return frames[-1].header.stamp

    harness.subs["depth"].wait_for_stamp(burst(50))  # warm-up: allocator pools reach their size
    rss_before = harness.node.rss_bytes()
    dropped_before = int(harness.latest_diagnostics()[diag.KEY_DROPPED])

    started = time.monotonic()
    last = burst(200)
    # Responsive while loaded: the parameter service answers promptly.
    assert harness.client.get_parameters(harness.node_name, ["points_stride"], timeout=10.0) == {"points_stride": 1}
    harness.subs["depth"].wait_for_stamp(last, timeout=60.0)
    elapsed = time.monotonic() - started
    rss_after = harness.node.rss_bytes()

    values = harness.latest_diagnostics(lambda v: int(v[diag.KEY_DROPPED]) > dropped_before)
    processed = int(values[diag.KEY_PROCESSED])
    assert processed < int(values[diag.KEY_RECEIVED]), "under load, frames must be dropped, not queued"
    assert elapsed < 30.0, f"the last frame took {elapsed:.1f} s to come back: a queue is building up"
    growth_mb = (rss_after - rss_before) / 2**20
    assert growth_mb < 40.0, f"RSS grew by {growth_mb:.1f} MB over 200 frames"


def test_diagnostics_describe_the_pipeline(harness: Harness):
    values = harness.latest_diagnostics(lambda v: int(v[diag.KEY_PROCESSED]) > 0)
    assert values[diag.KEY_DEVICE] == "cpu (fp32)"
    assert "ViT-B-16" in values[diag.KEY_MODEL] and "224x224" in values[diag.KEY_MODEL]
    assert values[diag.KEY_BACKBONE_WEIGHTS].startswith("pretrained: ")
    assert values[diag.KEY_DECODER_WEIGHTS].startswith("trained: ")
    assert values[diag.KEY_CAMERA_INFO] == "yes"
    for key in (diag.KEY_LATENCY_P50, diag.KEY_LATENCY_P95, diag.KEY_INFERENCE_P50, diag.KEY_INFERENCE_P95):
        assert float(values[key]) > 0.0, key
    assert float(values[diag.KEY_LATENCY_P95]) >= float(values[diag.KEY_LATENCY_P50])
    assert int(values[diag.KEY_ERRORS]) >= 4  # the bad frames and the bad CameraInfo above
    # Diagnostics arrive about once a second.
    stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in harness.subs["diagnostics"].messages
              if diagnostic_values(m, f"{harness.node_name}: ") is not None]
    assert len(stamps) >= 5
    assert 0.5 < float(np.median(np.diff(stamps[-5:]))) < 2.0
