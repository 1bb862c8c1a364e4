"""Reusable helpers for tests that run a node as its own process and talk to it over real DDS.

* :class:`NodeProcess` starts a console-script node (e.g. ``depth_node``) the way ``ros2 run`` /
  ``ros2 launch`` would, captures its output (ROS logs go to stderr) in a file, waits for log
  lines, measures its memory and stops it.
* :func:`depth_node_command` builds the depth node's command line from the launch file's own
  remappings and parameter overrides, so the tests start it exactly as the launch file does.
* :class:`RosTestClient` is an rclpy context + node spinning in a background thread: publishers,
  :class:`MessageCollector` subscriptions, and parameter service calls.
* Message factories for images, compressed images and CameraInfo, and :func:`make_tiny_checkpoint`
  (a small, fast, deterministic model whose decoder predicts depths of a few metres).

The process, command-line, waiting and rclpy-thread pieces are the demo's (``space_clip_ros.demo``:
``processes.ManagedProcess``, ``processes.depth_node_command``, ``processes.wait_until``,
``recorder.SpinningNode``); this module adds the tests' defaults, log waits and assertions.

Isolation: each test module gets its own ROS domain id (:func:`module_domain_id`) and a unique
namespace (:func:`unique_namespace`), so parallel runs and other modules do not cross-talk.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from space_clip_ros.data.tiny_model import TINY_VISION_OVERRIDES, tiny_model_config
from space_clip_ros.demo import package_files, processes
from space_clip_ros.demo.processes import SIGTERM_TIMEOUT_S, ManagedProcess
from space_clip_ros.demo.recorder import SpinningNode

REPO_ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = REPO_ROOT / "config" / "depth.yaml"
RVIZ_FILE = REPO_ROOT / "config" / "depth.rviz"
LAUNCH_FILE = REPO_ROOT / "launch" / "depth.launch.py"
DOCS_FILE = REPO_ROOT / "docs" / "ros_node.md"

DEFAULT_TIMEOUT_S = 60.0

# The camera the single-camera node tests publish as: 96x64 pixels, its intrinsics, and the
# training focal length recorded in their tiny checkpoints (depth scale FX / TRAIN_FOCAL = 0.8).
HEIGHT, WIDTH = 64, 96
FRAME_ID = "camera_color_optical_frame"
FX = FY = 80.0
CX, CY = 47.5, 31.5
TRAIN_FOCAL = 100.0
DEPTH_SCALE = FX / TRAIN_FOCAL
MIN_DEPTH, MAX_DEPTH = 0.1, 3.0  # max_depth cuts the tiny model's far pixels: NaN and valid both occur


# ---- processes --------------------------------------------------------------------------------
def module_domain_id(module_name: str) -> int:
    """A ROS domain id for one test module, derived from the session's and the module's name."""
    base = int(os.environ.get("ROS_DOMAIN_ID", "0"))
    return 1 + (base + zlib.crc32(module_name.encode())) % 100


def unique_namespace(prefix: str = "t") -> str:
    return f"/{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"


def node_environment(domain_id: int, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The demo's environment for a node (unbuffered, uncoloured logs; DDS on this machine) on ``domain_id``."""
    return processes.node_environment({"ROS_DOMAIN_ID": str(domain_id), **(extra or {})})


def tiny_node_overrides(weights: Path | str, **extra: Any) -> dict[str, Any]:
    """Depth-node parameters for :func:`make_tiny_checkpoint`'s tiny backbone (its weights file), plus ``extra``."""
    return {"pretrained": str(weights), "vision_overrides": json.dumps(TINY_VISION_OVERRIDES), **extra}


def load_launch_module(path: Path = LAUNCH_FILE) -> ModuleType:
    """The repository's launch file as a module (the demo's loader, pointed at this checkout)."""
    return package_files.load_launch_module(path)


def depth_node_command(
    *,
    namespace: str = "",
    image: str = "/camera/color/image_raw",
    camera_info: str = "/camera/color/camera_info",
    params_file: Path | str = PARAMS_FILE,
    checkpoint: str = "",
    device: str = "cpu",
    overrides: Mapping[str, Any] | None = None,
    executable: str = "depth_node",
) -> list[str]:
    """The depth node's command line, built from the launch file's remappings and parameters (the
    demo's :func:`~space_clip_ros.demo.processes.depth_node_command`, with the tests' defaults).

    ``overrides`` are extra ``-p`` parameters (e.g. ``vision_overrides`` for the tiny backbone).
    """
    return processes.depth_node_command(
        load_launch_module(), namespace=namespace, image=image, camera_info=camera_info, params_file=params_file,
        checkpoint=checkpoint, device=device, overrides=overrides, executable=executable,
    )


class NodeProcess(ManagedProcess):
    """A node started as its own process from the repository root, its output (stdout + stderr)
    captured to a file: the demo's :class:`ManagedProcess`, plus waits on its log and exit."""

    def __init__(self, command: Sequence[str], env: Mapping[str, str], log_path: Path) -> None:
        super().__init__(Path(command[0]).name, command, log_path, env, cwd=REPO_ROOT)

    def wait_for_log(self, pattern: str, timeout: float = DEFAULT_TIMEOUT_S, start: int = 0) -> re.Match:
        """The first match of regex ``pattern`` in the log after character ``start``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.log(), start)
            if match:
                return match
            if not self.running:
                match = regex.search(self.log(), start)  # lines written just before exiting
                if match:
                    return match
                raise AssertionError(
                    f"node exited (code {self.process.returncode}) before logging /{pattern}/:\n{self.log()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no /{pattern}/ in the node's log within {timeout} s:\n{self.log()}")
            time.sleep(0.1)

    def wait_exit(self, timeout: float = DEFAULT_TIMEOUT_S) -> int:
        return self.process.wait(timeout=timeout)

    def rss_bytes(self) -> int:
        import psutil

        return psutil.Process(self.pid).memory_info().rss

    def stop(self, sigint_timeout: float = 20.0, sigterm_timeout: float = SIGTERM_TIMEOUT_S) -> int:
        # Longer than the demo waits after SIGINT: on a busy test machine a clean shutdown (exit
        # code 0, which the tests check) can take a while.
        return super().stop(sigint_timeout, sigterm_timeout)


# ---- waiting ---------------------------------------------------------------------------------------
def wait_until(condition: Callable[[], Any], timeout: float, what: str,
               details: Callable[[], str] = lambda: "", interval: float = 0.05) -> Any:
    """Poll ``condition()`` until it returns something truthy (returned) or ``timeout`` s pass.

    DDS discovery, delivery and process start-up take a varying time, so a test never looks once:
    it polls (the demo's :func:`~space_clip_ros.demo.processes.wait_until`), and when it gives up it
    says what it was waiting for (``what``) and what it saw last (``details()``, e.g. the node's log
    or the graph it found).
    """
    result = processes.wait_until(condition, timeout, poll_s=interval)
    if not result:
        seen = details()
        raise AssertionError(f"waited {timeout} s for {what}" + (f"; last seen: {seen}" if seen else ""))
    return result


# ---- an rclpy client in the test process ----------------------------------------------------------
class MessageCollector:
    """Keeps every message a subscription receives (thread-safe reads)."""

    def __init__(self) -> None:
        self._messages: list[Any] = []
        self._lock = threading.Lock()

    def __call__(self, message: Any) -> None:
        with self._lock:
            self._messages.append(message)

    @property
    def messages(self) -> list[Any]:
        with self._lock:
            return list(self._messages)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()

    def find(self, predicate: Callable[[Any], bool]) -> Any | None:
        return next((message for message in self.messages if predicate(message)), None)

    def poll(self, predicate: Callable[[Any], bool], timeout: float) -> Any | None:
        """The first matching message, waiting up to ``timeout`` s for one to arrive; None if none did."""
        return processes.wait_until(lambda: self.find(predicate), timeout, poll_s=0.02)

    def wait_for(self, predicate: Callable[[Any], bool], timeout: float = DEFAULT_TIMEOUT_S,
                 what: str = "a matching message") -> Any:
        found = self.poll(predicate, timeout)
        if found is None:
            raise AssertionError(f"no {what} within {timeout} s ({len(self.messages)} messages received)")
        return found

    def wait_for_stamp(self, stamp: Any, timeout: float = DEFAULT_TIMEOUT_S) -> Any:
        return self.wait_for(lambda m: same_stamp(m.header.stamp, stamp), timeout,
                             what=f"message stamped {stamp.sec}.{stamp.nanosec:09d}")


def publish_until_answered(
    publish: Callable[[Any], Any], collector: MessageCollector, stamps: Iterable[Any], per_attempt_s: float
) -> tuple[Any, Any, Any] | None:
    """Publish a frame per stamp (``publish(stamp)``) until ``collector`` receives a message with that
    stamp, since early frames can be lost while discovery settles.

    Returns (stamp, what ``publish`` returned, the answer), or None when no stamp was answered.
    """
    for stamp in stamps:
        sent = publish(stamp)
        answer = collector.poll(lambda m, s=stamp: same_stamp(m.header.stamp, s), per_attempt_s)
        if answer is not None:
            return stamp, sent, answer
    return None


class RosTestClient(SpinningNode):
    """An rclpy context, node and executor thread of its own (the demo recorder's), on a given domain."""

    def __init__(self, domain_id: int, name: str = "test_client") -> None:
        super().__init__(f"{name}_{os.getpid()}", domain_id=domain_id)

    @staticmethod
    def qos(reliable: bool = True, depth: int = 100):
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

        return QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=depth,
            reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        )

    def collect(self, topic: str, message_type: type, reliable: bool = True, depth: int = 100) -> MessageCollector:
        collector = MessageCollector()
        self.node.create_subscription(message_type, topic, collector, self.qos(reliable, depth))
        return collector

    def publisher(self, topic: str, message_type: type, reliable: bool = True, depth: int = 10):
        return self.node.create_publisher(message_type, topic, self.qos(reliable, depth))

    @staticmethod
    def wait_for_subscribers(publisher, count: int = 1, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        wait_until(lambda: publisher.get_subscription_count() >= count, timeout,
                   f"{count} subscriber(s) on {publisher.topic_name}",
                   lambda: f"{publisher.get_subscription_count()} subscriber(s)")

    def wait_for_publishers(self, topic: str, count: int = 1, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        wait_until(lambda: self.node.count_publishers(topic) >= count, timeout, f"{count} publisher(s) on {topic}",
                   lambda: f"{self.node.count_publishers(topic)} publisher(s)")

    def wait_for_endpoints(self, topic: str, kind: str, predicate: Callable[[Any], bool],
                           timeout: float = DEFAULT_TIMEOUT_S) -> list[Any]:
        """The graph's ``kind`` ("publishers" or "subscriptions") endpoints on ``topic`` once at least one
        satisfies ``predicate``: discovery fills the graph over time, so it is polled, not read once."""
        lookup = (self.node.get_publishers_info_by_topic if kind == "publishers"
                  else self.node.get_subscriptions_info_by_topic)

        def matching() -> list[Any]:
            return [info for info in lookup(topic) if predicate(info)]

        def seen() -> str:
            return "; ".join(f"{info.node_name}: {info.qos_profile.reliability.name}" for info in lookup(topic)) \
                or "no endpoints"

        return wait_until(matching, timeout, f"matching {kind} on {topic}", seen)

    def _call(self, service_type: type, service_name: str, request: Any, timeout: float) -> Any:
        client = self.node.create_client(service_type, service_name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise AssertionError(f"service {service_name} not available within {timeout} s")
            future = client.call_async(request)
            deadline = time.monotonic() + timeout
            while not future.done():
                if time.monotonic() > deadline:
                    raise AssertionError(f"no answer from {service_name} within {timeout} s")
                time.sleep(0.02)
            return future.result()
        finally:
            self.node.destroy_client(client)

    def set_parameters(self, node_name: str, values: Mapping[str, Any], atomically: bool = False,
                       timeout: float = DEFAULT_TIMEOUT_S) -> list:
        """SetParameters (or SetParametersAtomically) on ``node_name``; the SetParametersResult(s)."""
        from rcl_interfaces.srv import SetParameters, SetParametersAtomically
        from rclpy.parameter import Parameter

        parameters = [Parameter(name, value=value).to_parameter_msg() for name, value in values.items()]
        if atomically:
            request = SetParametersAtomically.Request(parameters=parameters)
            return [self._call(SetParametersAtomically, f"{node_name}/set_parameters_atomically",
                               request, timeout).result]
        request = SetParameters.Request(parameters=parameters)
        return list(self._call(SetParameters, f"{node_name}/set_parameters", request, timeout).results)

    def get_parameters(self, node_name: str, names: Iterable[str],
                       timeout: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        names = list(names)
        response = self._call(GetParameters, f"{node_name}/get_parameters", GetParameters.Request(names=names),
                              timeout)
        return {name: parameter_value_to_python(value) for name, value in zip(names, response.values)}


# ---- messages ---------------------------------------------------------------------------------
def make_stamp(sec: int, nanosec: int = 0):
    from builtin_interfaces.msg import Time

    return Time(sec=int(sec), nanosec=int(nanosec))


def same_stamp(a: Any, b: Any) -> bool:
    return a.sec == b.sec and a.nanosec == b.nanosec


def pattern_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A (H, W, 3) uint8 RGB picture with gradients and blocks (something for the model to see)."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    cols = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    picture = np.stack([np.broadcast_to(rows, (height, width)), np.broadcast_to(cols, (height, width)),
                        (rows + cols) / 2], axis=-1)
    block = max(height // 4, 1)
    for _ in range(4):
        y, x = rng.integers(0, max(height - block, 1)), rng.integers(0, max(width - block, 1))
        picture[y:y + block, x:x + block] = rng.integers(0, 255, 3)
    return picture.astype(np.uint8)


def image_message(rgb: np.ndarray, encoding: str, stamp: Any, frame_id: str):
    """An Image of ``rgb`` in rgb8, bgr8, mono8 (via space_clip_ros.msgs) or rgba8 / bgra8."""
    import cv2
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from space_clip_ros.msgs import rgb_to_image_msg

    header = Header(stamp=stamp, frame_id=frame_id)
    if encoding in ("rgb8", "bgr8", "mono8"):
        return rgb_to_image_msg(rgb, header, encoding=encoding)
    if encoding in ("rgba8", "bgra8"):
        code = cv2.COLOR_RGB2RGBA if encoding == "rgba8" else cv2.COLOR_RGB2BGRA
        pixels = cv2.cvtColor(rgb, code)
        height, width = rgb.shape[:2]
        return Image(header=header, height=height, width=width, encoding=encoding, is_bigendian=0,
                     step=width * 4, data=pixels.tobytes())
    raise ValueError(f"test helper cannot make encoding {encoding}")


def raw_image_message(encoding: str, width: int, height: int, step: int, data: bytes, stamp: Any,
                      frame_id: str):
    """An Image with exactly these fields (for malformed-input tests)."""
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    return Image(header=Header(stamp=stamp, frame_id=frame_id), height=height, width=width,
                 encoding=encoding, is_bigendian=0, step=step, data=data)


def compressed_message(rgb: np.ndarray, fmt: str, stamp: Any, frame_id: str):
    from std_msgs.msg import Header

    from space_clip_ros.msgs import rgb_to_compressed_msg

    return rgb_to_compressed_msg(rgb, Header(stamp=stamp, frame_id=frame_id), fmt)


def camera_info_message(width: int, height: int, fx: float, fy: float, cx: float, cy: float,
                        frame_id: str, stamp: Any | None = None):
    """A distortion-free CameraInfo with these intrinsics, built field by field (no validation),
    so that tests can also make deliberately broken ones (zero focal length)."""
    from sensor_msgs.msg import CameraInfo
    from std_msgs.msg import Header

    return CameraInfo(
        header=Header(stamp=stamp or make_stamp(0), frame_id=frame_id),
        width=width,
        height=height,
        distortion_model="plumb_bob",
        d=[0.0] * 5,
        k=[fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0],
        r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        p=[fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0],
    )


# ---- a small trained-looking model ------------------------------------------------------------
def make_tiny_checkpoint(directory: Path, *, train_focal: float | None = None,
                         train_image_size: tuple[int, int] | None = None,
                         depth_offset_m: float = 2.5, depth_gain: float = 100.0) -> tuple[Path, Path]:
    """A tiny backbone weights file and a decoder checkpoint for it; (checkpoint, weights) paths.

    The decoder's last convolution is scaled so that depth varies over a few metres around
    ``depth_offset_m`` (a random decoder predicts ~0 everywhere, which would test nothing).
    Both the node and the test load the same files, so they compute the same depth.
    """
    import torch

    from space_clip_ros.model import SpaceClip, build_backbone, make_record, save_checkpoint, save_vision_weights

    directory = Path(directory)
    torch.manual_seed(0)
    weights = save_vision_weights(build_backbone(tiny_model_config().backbone), directory / "tiny_vit.safetensors")
    model = SpaceClip(tiny_model_config(pretrained=str(weights)))
    last_conv = model.decoder.head.net[1]
    with torch.no_grad():
        last_conv.weight.mul_(depth_gain)
        last_conv.bias.fill_(depth_offset_m)
    record = make_record(
        model,
        train_focal=train_focal,
        train_image_size=list(train_image_size) if train_image_size else None,
        dataset="ros test fixture",
    )
    checkpoint = directory / "tiny_decoder"
    save_checkpoint(checkpoint, model.decoder.state_dict(), record)
    return checkpoint, weights


def local_predictor(checkpoint: Path, weights: Path):
    """The same model the node loads, in the test process (CPU)."""
    from space_clip_ros.inference.runtime.predictor import DepthPredictor

    backbone = tiny_model_config(pretrained=str(weights)).backbone
    return DepthPredictor.from_checkpoint(checkpoint, backbone=backbone, device="cpu")


def diagnostic_values(array_msg: Any, name_contains: str) -> dict[str, str] | None:
    """KeyValues of the first status whose name contains ``name_contains``."""
    for status in array_msg.status:
        if name_contains in status.name:
            return {kv.key: kv.value for kv in status.values}
    return None


def ceil_div(a: int, b: int) -> int:
    return int(math.ceil(a / b))


def shut_down(node: NodeProcess, client: RosTestClient, what: str = "depth node did not shut down cleanly") -> None:
    """A module fixture's teardown: close the test client, stop the node, print its log (pytest shows
    it when a test failed) and check that the node exited cleanly (code 0)."""
    client.close()
    code = node.stop()
    print(node.log())
    assert code == 0, f"{what} (exit code {code})"
