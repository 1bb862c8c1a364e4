"""The managed depth node (``depth_lifecycle_node``) over real DDS, driven the way nav2_lifecycle_manager
drives it: ``<node>/change_state`` and ``<node>/get_state`` (lifecycle_msgs/srv/ChangeState, GetState)
through configure (first failing: the checkpoint is not there yet), activate, deactivate, activate
again, cleanup and shutdown, with every output checked in each state.

One node process serves the module. It starts with a checkpoint path whose files the test writes
only after the first configure has failed, as a robot whose model arrives late would.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ros_helpers as rh
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from ros_helpers import CX, CY, DEPTH_SCALE, FRAME_ID, FX, FY, HEIGHT, MAX_DEPTH, MIN_DEPTH, TRAIN_FOCAL, WIDTH
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from space_clip_ros.msgs import image_msg_to_depth, pointcloud2_to_xyz_grid
from space_clip_ros.ros import diagnostics as diag

pytestmark = [pytest.mark.ros, pytest.mark.timeout(600), pytest.mark.slow]  # a node process over DDS per module

QUIET_S = 1.5  # how long a test waits for outputs that must not come


@dataclass
class Harness:
    node: rh.NodeProcess
    client: rh.RosTestClient
    directory: Path
    namespace: str
    node_name: str
    image_topic: str
    pubs: dict[str, Any]
    subs: dict[str, Any]
    predictor: Any = None
    _seconds: int = 2000

    def next_stamp(self) -> Any:
        self._seconds += 1
        return rh.make_stamp(self._seconds, 500)

    def change_state(self, transition: int, timeout: float = 120.0) -> bool:
        """ChangeState (the lifecycle manager's call); whether the transition succeeded."""
        request = ChangeState.Request()
        request.transition.id = transition
        return self.client._call(ChangeState, f"{self.node_name}/change_state", request, timeout).success

    def state(self) -> int:
        return self.client._call(GetState, f"{self.node_name}/get_state", GetState.Request(), 30.0).current_state.id

    def camera_frame(self, stamp: Any, seed: int = 0) -> tuple[Image, np.ndarray]:
        rgb = rh.pattern_image(HEIGHT, WIDTH, seed=seed)
        self.pubs["camera_info"].publish(rh.camera_info_message(WIDTH, HEIGHT, FX, FY, CX, CY, FRAME_ID, stamp))
        message = rh.image_message(rgb, "rgb8", stamp, FRAME_ID)
        self.pubs["image"].publish(message)
        return message, rgb

    def answered_frame(self, wait_on: str = "points", attempts: int = 30) -> tuple[Any, np.ndarray]:
        """Publish frames (with their CameraInfo) until ``wait_on`` answers one; (stamp, its RGB)."""
        answered = rh.publish_until_answered(lambda stamp: self.camera_frame(stamp, seed=stamp.sec)[1],
                                             self.subs[wait_on], (self.next_stamp() for _ in range(attempts)),
                                             per_attempt_s=2.0)
        assert answered is not None, f"no {wait_on} answer; node log:\n{self.node.log()}"
        stamp, rgb, _ = answered
        return stamp, rgb

    def assert_no_outputs(self) -> None:
        """Frames sent now get no output of any kind."""
        stamps = [self.next_stamp() for _ in range(3)]
        for stamp in stamps:
            self.camera_frame(stamp)
            time.sleep(QUIET_S / len(stamps))
        time.sleep(QUIET_S)
        for key in ("depth", "depth_info", "points"):
            for stamp in stamps:
                assert self.subs[key].find(lambda m, s=stamp: rh.same_stamp(m.header.stamp, s)) is None, key


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    directory = tmp_path_factory.mktemp("lifecycle")
    domain = rh.module_domain_id(__name__)
    namespace = rh.unique_namespace()
    image_topic = f"{namespace}/camera/color/image_raw"
    info_topic = f"{namespace}/camera/color/camera_info"
    # The files rh.make_tiny_checkpoint writes into ``directory``, not written yet.
    checkpoint, weights = directory / "tiny_decoder", directory / "tiny_vit.safetensors"
    command = rh.depth_node_command(
        namespace=namespace, image=image_topic, camera_info=info_topic, checkpoint=str(checkpoint), device="cpu",
        # The model exactly as trained (torch, fp32), as the test process's predictor runs it.
        overrides=rh.tiny_node_overrides(weights, backend="torch", optimize=False, max_depth=MAX_DEPTH),
        executable="depth_lifecycle_node",
    )
    node = rh.NodeProcess(command, rh.node_environment(domain), directory / "lifecycle_node.log")
    client = rh.RosTestClient(domain, name="lifecycle_client")
    try:
        node.wait_for_log(r"\[INFO\].*unconfigured: 'configure' loads the model", timeout=120)
        pubs = {"image": client.publisher(image_topic, Image), "camera_info": client.publisher(info_topic, CameraInfo)}
        subs = {key: client.collect(f"{namespace}/{topic}", kind) for key, topic, kind in (
            ("depth", "depth/image", Image), ("depth_info", "depth/camera_info", CameraInfo),
            ("points", "points", PointCloud2))}
        subs["diagnostics"] = client.collect("/diagnostics", DiagnosticArray)
        yield Harness(node=node, client=client, directory=directory, namespace=namespace,
                      node_name=f"{namespace}/space_clip_depth", image_topic=image_topic, pubs=pubs, subs=subs)
    finally:
        rh.shut_down(node, client, "lifecycle node did not end cleanly")


# ---- tests, in file order: each leaves the node in the state the next one starts from -------------------
def test_starts_unconfigured_with_no_topics(harness: Harness):
    assert harness.state() == State.PRIMARY_STATE_UNCONFIGURED
    assert harness.client.node.count_publishers(f"{harness.namespace}/depth/image") == 0
    assert harness.client.node.count_subscribers(harness.image_topic) == 0


def test_configure_fails_without_the_checkpoint_and_stays_unconfigured(harness: Harness):
    log_start = len(harness.node.log())
    assert harness.change_state(Transition.TRANSITION_CONFIGURE) is False
    harness.node.wait_for_log(r"\[ERROR\].*configure failed, staying unconfigured: cannot load the model: .*",
                              start=log_start)
    assert harness.state() == State.PRIMARY_STATE_UNCONFIGURED


def test_configure_loads_the_model_and_publishes_nothing_while_inactive(harness: Harness):
    checkpoint, weights = rh.make_tiny_checkpoint(harness.directory, train_focal=TRAIN_FOCAL,
                                               train_image_size=(HEIGHT, WIDTH))
    harness.predictor = rh.local_predictor(checkpoint, weights)
    assert harness.change_state(Transition.TRANSITION_CONFIGURE) is True
    assert harness.state() == State.PRIMARY_STATE_INACTIVE
    harness.node.wait_for_log(r"\[INFO\].*configured \(resident memory \d+ -> \d+ MB\): SPACE-CLIP .*trained decoder")
    harness.client.wait_for_publishers(f"{harness.namespace}/depth/image")
    # Inactive: the cameras are not subscribed, and nothing is published.
    assert harness.client.node.count_subscribers(harness.image_topic) == 0
    harness.assert_no_outputs()


def _assert_every_output(harness: Harness, stamp: Any, rgb: np.ndarray) -> None:
    depth_msg = harness.subs["depth"].wait_for_stamp(stamp)
    info_msg = harness.subs["depth_info"].wait_for_stamp(stamp)
    cloud = harness.subs["points"].wait_for_stamp(stamp)
    depth = image_msg_to_depth(depth_msg)
    expected = harness.predictor.predict(rgb) * np.float32(DEPTH_SCALE)
    expected = np.where((expected >= MIN_DEPTH) & (expected <= MAX_DEPTH), expected, np.nan)
    both = np.isfinite(depth) & np.isfinite(expected)
    assert both.sum() > 0.5 * depth.size and (np.isfinite(depth) != np.isfinite(expected)).sum() <= 2
    np.testing.assert_allclose(depth[both], expected[both], rtol=1e-4, atol=1e-5)
    assert (info_msg.width, info_msg.height) == (WIDTH, HEIGHT) and list(info_msg.d) == [0.0] * 5
    np.testing.assert_allclose(np.asarray(info_msg.k)[[0, 2, 4, 5]], [FX, CX, FY, CY])
    np.testing.assert_allclose(np.asarray(info_msg.p)[[0, 2, 5, 6]], [FX, CX, FY, CY])
    points = pointcloud2_to_xyz_grid(cloud)
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    z = depth.astype(np.float64)
    expected_points = np.stack([(cols - CX) * z / FX, (rows - CY) * z / FY, z], axis=-1)
    np.testing.assert_allclose(points, expected_points, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_activate_subscribes_and_publishes_every_output(harness: Harness):
    assert harness.change_state(Transition.TRANSITION_ACTIVATE) is True
    assert harness.state() == State.PRIMARY_STATE_ACTIVE
    stamp, rgb = harness.answered_frame()
    _assert_every_output(harness, stamp, rgb)
    name = f"{harness.node_name}: depth estimation"
    values = rh.wait_until(lambda: next((v for m in reversed(harness.subs["diagnostics"].messages)
                                      if (v := rh.diagnostic_values(m, name)) is not None), None), 30.0, "diagnostics")
    assert int(values[diag.KEY_PROCESSED]) >= 1 and values[diag.KEY_DECODER_WEIGHTS].startswith("trained: ")


def test_deactivate_stops_every_output_and_activate_brings_them_back(harness: Harness):
    assert harness.change_state(Transition.TRANSITION_DEACTIVATE) is True
    assert harness.state() == State.PRIMARY_STATE_INACTIVE
    rh.wait_until(lambda: harness.client.node.count_subscribers(harness.image_topic) == 0, 30.0,
               "the node to unsubscribe from the camera")
    harness.assert_no_outputs()

    assert harness.change_state(Transition.TRANSITION_ACTIVATE) is True
    stamp, rgb = harness.answered_frame()
    _assert_every_output(harness, stamp, rgb)
    assert harness.change_state(Transition.TRANSITION_DEACTIVATE) is True


def test_cleanup_frees_the_model_and_the_publishers(harness: Harness):
    log_start = len(harness.node.log())
    assert harness.change_state(Transition.TRANSITION_CLEANUP) is True
    assert harness.state() == State.PRIMARY_STATE_UNCONFIGURED
    match = harness.node.wait_for_log(r"\[INFO\].*model released \(resident memory (\d+) -> (\d+) MB\)",
                                      start=log_start)
    before, after = int(match.group(1)), int(match.group(2))
    print(f"resident memory of the lifecycle node at cleanup (tiny model): {before} -> {after} MB")
    assert after <= before
    rh.wait_until(lambda: harness.client.node.count_publishers(f"{harness.namespace}/depth/image") == 0, 30.0,
               "the node to remove its publishers")


def test_shutdown_ends_the_process(harness: Harness):
    assert harness.change_state(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN) is True
    assert harness.node.wait_exit(timeout=30) == 0
    log = harness.node.log()
    assert re.search(r"\[INFO\].*finalized: the process ends", log)
    assert "Traceback" not in log and "[FATAL]" not in log
