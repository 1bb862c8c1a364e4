"""Depth a costmap can trust, through the node over real DDS (issue 13): the confidence topic, the
flying-pixel filter, REP 117 out-of-range values, the sparse-points scale anchor from a published
anchor cloud, the stamped embedding, the diagnostics keys, and the start-up / runtime refusal of a
confidence map on a backend without the decoder's auxiliary heads (with the per-camera
anchor_points subscriptions of a multi-camera node).

One torch-backend node serves most tests; the options are switched at runtime. The test process
loads the same checkpoint (its auxiliary heads scaled so the confidence spreads over (0, 1]), so
it knows what every frame must give. Every wait polls until a deadline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import ros_helpers as rh
import torch
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Float32MultiArray, Header

from space_clip_ros.model import load_checkpoint, save_checkpoint
from space_clip_ros.msgs import CameraIntrinsics, image_msg_to_depth, pointcloud2_to_xyz_grid
from space_clip_ros.outputs.cloud import PointCloudBuilder
from space_clip_ros.outputs.flying_pixels import flying_pixel_mask
from space_clip_ros.outputs.ranges import apply_out_of_range
from space_clip_ros.ros import diagnostics as diag

pytestmark = [pytest.mark.ros, pytest.mark.timeout(600)]

HEIGHT, WIDTH = 48, 64
FRAME_ID = "camera_color_optical_frame"
CAMERA = CameraIntrinsics(fx=60.0, fy=60.0, cx=31.5, cy=23.5, width=WIDTH, height=HEIGHT)
MAX_DEPTH = 3.0  # the tiny model's depth runs from about 2 to 6 m: in range and beyond both occur


def scaled_aux_checkpoint(directory):
    """make_tiny_checkpoint's decoder with auxiliary heads scaled like its final head (a random head
    predicts ~0 m, which would put every confidence at ~0)."""
    checkpoint, weights = rh.make_tiny_checkpoint(directory)
    state, record = load_checkpoint(checkpoint)
    for head in (0, 1):
        state[f"aux_heads.{head}.net.1.weight"] = state[f"aux_heads.{head}.net.1.weight"] * 100.0
        state[f"aux_heads.{head}.net.1.bias"] = torch.full_like(state[f"aux_heads.{head}.net.1.bias"], 2.5)
    save_checkpoint(checkpoint, state, record)
    return checkpoint, weights


@dataclass
class Harness:
    node: rh.NodeProcess
    client: rh.RosTestClient
    node_name: str
    predictor: Any
    pubs: dict[str, Any] = field(default_factory=dict)
    subs: dict[str, Any] = field(default_factory=dict)
    _stamps: int = 0

    def next_stamp(self):
        self._stamps += 1
        return rh.make_stamp(2000 + self._stamps, 77)

    def frame(self, rgb: np.ndarray, wait_on: str = "depth", attempts: int = 6, before=None):
        """Publish ``rgb`` (CameraInfo first, a new stamp per attempt) until ``wait_on`` answers; (stamp, answer)."""

        def send(stamp):
            header = Header(stamp=stamp, frame_id=FRAME_ID)
            self.pubs["camera_info"].publish(rh.camera_info_message(WIDTH, HEIGHT, CAMERA.fx, CAMERA.fy, CAMERA.cx,
                                                                 CAMERA.cy, FRAME_ID, stamp=header.stamp))
            if before is not None:
                before()
            self.pubs["image"].publish(rh.image_message(rgb, "rgb8", stamp, FRAME_ID))

        stamps = (self.next_stamp() for _ in range(attempts))
        answered = rh.publish_until_answered(send, self.subs[wait_on], stamps, 5.0)
        if answered is None:
            raise AssertionError(f"no {wait_on} answer after {attempts} frames; node log:\n{self.node.log()}")
        stamp, _, answer = answered
        return stamp, answer

    def set(self, **values) -> None:
        results = self.client.set_parameters(self.node_name, values, atomically=True)
        assert all(r.successful for r in results), [r.reason for r in results]

    def diagnostics(self, predicate, timeout: float = 30.0) -> dict[str, str]:
        def latest():
            for msg in reversed(self.subs["diagnostics"].messages):
                values = rh.diagnostic_values(msg, f"{self.node_name}: ")
                if values is not None and predicate(values):
                    return values
            return None

        return rh.wait_until(latest, timeout, "matching diagnostics", lambda: str(
            rh.diagnostic_values(self.subs["diagnostics"].messages[-1], self.node_name)
            if self.subs["diagnostics"].messages else "none"))


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    directory = tmp_path_factory.mktemp("depth_quality_node")
    checkpoint, weights = scaled_aux_checkpoint(directory)
    domain = rh.module_domain_id(__name__)
    namespace = rh.unique_namespace()
    image_topic, info_topic = f"{namespace}/camera/color/image_raw", f"{namespace}/camera/color/camera_info"
    overrides = rh.tiny_node_overrides(weights, max_depth=MAX_DEPTH, backend="torch", optimize=False,
                                    publish_confidence=True, publish_embedding=True)
    command = rh.depth_node_command(namespace=namespace, image=image_topic, camera_info=info_topic,
                                 checkpoint=str(checkpoint), device="cpu", overrides=overrides)
    node = rh.NodeProcess(command, rh.node_environment(domain), directory / "depth_node.log")
    client = rh.RosTestClient(domain)
    try:
        node.wait_for_log(r"\[INFO\].*SPACE-CLIP ViT-B-16 .*trained decoder.* on cpu", timeout=120)
        h = Harness(node, client, f"{namespace}/space_clip_depth", rh.local_predictor(checkpoint, weights))
        h.pubs["image"] = client.publisher(image_topic, Image)
        h.pubs["camera_info"] = client.publisher(info_topic, CameraInfo)
        h.pubs["anchor_points"] = client.publisher(f"{namespace}/anchor_points", PointCloud2)
        for key, topic, kind in (
            ("depth", "depth/image", Image),
            ("points", "points", PointCloud2),
            ("confidence", "depth/confidence", Image),
            ("embedding_stamped", "clip/image_embedding_stamped", Image),
            ("embedding", "clip/image_embedding", Float32MultiArray),
        ):
            h.subs[key] = client.collect(f"{namespace}/{topic}", kind)
        h.subs["diagnostics"] = client.collect("/diagnostics", DiagnosticArray)
        for publisher in h.pubs.values():
            client.wait_for_subscribers(publisher)
        client.wait_for_publishers(f"{namespace}/depth/confidence")
        h.frame(rh.pattern_image(HEIGHT, WIDTH), wait_on="points", attempts=30)  # discovery and first inference
        yield h
    finally:
        rh.shut_down(node, client)


def test_confidence_topic_matches_the_depth_image(harness: Harness):
    rgb = rh.pattern_image(HEIGHT, WIDTH, seed=11)
    stamp, confidence = harness.frame(rgb, wait_on="confidence")
    depth = harness.subs["depth"].wait_for_stamp(stamp)
    assert (confidence.encoding, confidence.height, confidence.width) == ("32FC1", depth.height, depth.width)
    assert rh.same_stamp(confidence.header.stamp, depth.header.stamp) and confidence.header.frame_id == FRAME_ID
    values = image_msg_to_depth(confidence)
    assert np.isfinite(values).all() and values.min() > 0.0 and values.max() <= 1.0 and values.std() > 0.0
    expected = harness.predictor.infer(rgb[None], with_confidence=True).confidence[0].numpy()
    np.testing.assert_allclose(values, expected, rtol=1e-4, atol=1e-6)


def test_confidence_gated_cloud(harness: Harness):
    rgb = rh.pattern_image(HEIGHT, WIDTH, seed=12)
    expected = harness.predictor.infer(rgb[None], with_confidence=True).confidence[0].numpy()
    threshold = float(np.median(expected))
    harness.set(points_min_confidence=threshold)
    try:
        stamp, cloud = harness.frame(rgb, wait_on="points")
        z = pointcloud2_to_xyz_grid(cloud)[..., 2]
        low = expected < threshold
        assert low.any() and np.isnan(z[low]).all()
        values = harness.diagnostics(lambda v: diag.KEY_LOW_CONFIDENCE in v)
        assert int(values[diag.KEY_LOW_CONFIDENCE]) > 0
    finally:
        harness.set(points_min_confidence=0.0)


def test_flying_pixel_filter_removes_cloud_points_at_edges(harness: Harness):
    rgb = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    rgb[:, WIDTH // 2:] = 255  # one strong vertical edge
    rgb[HEIGHT // 2:, :, 1] = 128
    depth = harness.predictor.predict(rgb)
    flying = flying_pixel_mask(depth, 0.05)
    in_range = (depth >= 0.1) & (depth <= MAX_DEPTH)
    assert (flying & in_range).any(), "the frame must have flying pixels inside the range"
    _, plain = harness.frame(rgb, wait_on="points")
    harness.set(flying_pixel_threshold=0.05)
    try:
        _, filtered = harness.frame(rgb, wait_on="points")
        z_plain, z = (pointcloud2_to_xyz_grid(c)[..., 2] for c in (plain, filtered))
        assert np.count_nonzero(np.isfinite(z)) < np.count_nonzero(np.isfinite(z_plain))
        np.testing.assert_array_equal(np.isfinite(z), np.isfinite(z_plain) & ~flying)
        values = harness.diagnostics(lambda v: diag.KEY_FLYING in v)
        assert int(values[diag.KEY_FLYING]) == np.count_nonzero(flying)
        harness.set(flying_pixels_invalid=True)
        stamp, image = harness.frame(rgb)
        marked = image_msg_to_depth(image)
        assert np.isnan(marked[flying]).all()
        np.testing.assert_array_equal(np.isfinite(marked), in_range & ~flying)
    finally:
        harness.set(flying_pixel_threshold=0.0, flying_pixels_invalid=False)


def test_rep117_gives_infinities_where_out_of_range(harness: Harness):
    rgb = rh.pattern_image(HEIGHT, WIDTH, seed=13)
    depth = harness.predictor.predict(rgb)
    low, high = float(np.percentile(depth, 20)), float(np.percentile(depth, 80))
    harness.set(out_of_range="rep117", min_depth=low, max_depth=high)
    try:
        _, image = harness.frame(rgb)
        values = image_msg_to_depth(image)
        assert np.isposinf(values).any() and np.isneginf(values).any()
        expected = apply_out_of_range(depth, low, high, "rep117")
        np.testing.assert_array_equal(np.isposinf(values), np.isposinf(expected))
        np.testing.assert_array_equal(np.isneginf(values), np.isneginf(expected))
        finite = np.isfinite(expected)
        np.testing.assert_allclose(values[finite], expected[finite], rtol=1e-4)
        # The cloud has no point where the image holds +-Inf.
        _, cloud = harness.frame(rgb, wait_on="points")
        assert np.isnan(pointcloud2_to_xyz_grid(cloud)[..., 2][~finite]).all()
    finally:
        harness.set(out_of_range="nan", min_depth=0.1, max_depth=MAX_DEPTH)


def test_sparse_points_scale_from_a_published_anchor_cloud(harness: Harness):
    rgb = rh.pattern_image(HEIGHT, WIDTH, seed=14)
    metric = harness.predictor.predict(rgb) * np.float32(1.5)  # the "true" scale is 1.5 x the model's
    cloud = PointCloudBuilder().build(metric, CAMERA, Header(frame_id=FRAME_ID), organized=False, stride=4)
    harness.set(scale_anchor="sparse_points", max_depth=50.0)
    try:
        def anchored() -> bool:
            _, image = harness.frame(rgb, before=lambda: harness.pubs["anchor_points"].publish(cloud))
            values = image_msg_to_depth(image)
            return np.allclose(values, metric, rtol=1e-3)

        # The cloud and the image travel on two topics: poll until a frame came after its cloud.
        rh.wait_until(anchored, 60.0, "a depth image scaled by the anchor cloud's 1.5")
        values = harness.diagnostics(lambda v: v.get(diag.KEY_SCALE_ANCHOR) == "sparse_points"
                                     and v.get(diag.KEY_ANCHOR_FIT, "none").startswith("1.5"))
        assert float(values[diag.KEY_ANCHOR_SCALE]) == pytest.approx(1.5, rel=1e-3)
        assert float(values[diag.KEY_ANCHOR_INLIERS]) == pytest.approx(1.0)
        assert int(values[diag.KEY_ANCHOR_CLOUDS]) >= 1
        # Without new clouds the scale is kept.
        _, image = harness.frame(rgb)
        np.testing.assert_allclose(image_msg_to_depth(image), metric, rtol=1e-3)
    finally:
        harness.set(scale_anchor="none", max_depth=MAX_DEPTH)


def test_stamped_embedding_carries_the_image_stamp(harness: Harness):
    rgb = rh.pattern_image(HEIGHT, WIDTH, seed=15)
    stamp, stamped = harness.frame(rgb, wait_on="embedding_stamped")
    assert rh.same_stamp(stamped.header.stamp, stamp) and stamped.header.frame_id == FRAME_ID
    expected = harness.predictor.infer(rgb[None], with_embedding=True).embedding[0].numpy()
    assert (stamped.encoding, stamped.height, stamped.width, stamped.step) == ("32FC1", 1, expected.size,
                                                                               4 * expected.size)
    np.testing.assert_allclose(np.frombuffer(bytes(stamped.data), "<f4"), expected, rtol=1e-4, atol=1e-6)
    depth = harness.subs["depth"].wait_for_stamp(stamp)
    assert rh.same_stamp(depth.header.stamp, stamped.header.stamp)
    # The unstamped array still goes out (the same numbers).
    plain = rh.wait_until(lambda: next((m for m in harness.subs["embedding"].messages
                                     if np.allclose(np.asarray(m.data), expected, rtol=1e-4, atol=1e-6)), None),
                       10.0, "the unstamped embedding of the frame")
    assert plain.layout.dim[0].size == expected.size


# ---- a backend without auxiliary heads -------------------------------------------------------------
def test_exported_graph_backend_refuses_confidence_at_start_and_at_runtime(tmp_path):
    checkpoint, weights = scaled_aux_checkpoint(tmp_path)
    domain = rh.module_domain_id(__name__) + 1
    namespace = rh.unique_namespace()
    base = rh.tiny_node_overrides(weights, backend="onnxruntime", optimize=False)

    refused = rh.NodeProcess(rh.depth_node_command(namespace=namespace, checkpoint=str(checkpoint),
                                             overrides={**base, "publish_confidence": True}),
                          rh.node_environment(domain), tmp_path / "refused.log")
    assert refused.wait_exit(timeout=180) == 2
    assert "backend torch" in refused.log() and "publish_confidence" in refused.log()

    command = rh.depth_node_command(namespace=namespace, checkpoint=str(checkpoint),
                                 overrides={**base, "cameras": ["front", "rear"]})
    node = rh.NodeProcess(command, rh.node_environment(domain), tmp_path / "node.log")
    client = rh.RosTestClient(domain)
    try:
        node.wait_for_log(r"\[INFO\].*SPACE-CLIP ViT-B-16", timeout=180)
        for camera in ("front", "rear"):  # a scale anchor per camera, fed by its own anchor_points
            client.wait_for_endpoints(f"{namespace}/{camera}/anchor_points", "subscriptions", lambda info: True)
        name = f"{namespace}/space_clip_depth"
        (result,) = client.set_parameters(name, {"publish_confidence": True})
        assert not result.successful and "backend torch" in result.reason
        (result,) = client.set_parameters(name, {"points_min_confidence": 0.5})
        assert not result.successful and "auxiliary heads" in result.reason
        assert client.get_parameters(name, ["publish_confidence"]) == {"publish_confidence": False}
        (result,) = client.set_parameters(name, {"flying_pixel_threshold": 0.04})  # others still change
        assert result.successful
    finally:
        client.close()
        code = node.stop()
        print(node.log())
    assert code == 0
