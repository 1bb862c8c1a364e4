"""What the demo records, as plain data (filled by the recorder node's callbacks; no rclpy here).

Depth frames are paired with their camera image (and the scene's exact depth, when the camera
simulator publishes it) by header stamp as they arrive: the input of a depth frame was published
moments before it, so only a short window of inputs is kept. All methods are thread-safe.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

#: Inputs kept for pairing (a depth frame follows its image by well under this many frames).
INPUT_WINDOW = 60
#: Depth frames kept with their pictures; later ones only count and time.
MAX_KEPT_FRAMES = 80


@dataclass
class RecordedFrame:
    """One depth frame with what it was computed from."""

    stamp_ns: int
    latency_s: float  # depth received at the recorder minus the image's capture stamp
    depth: np.ndarray  # (H, W) float32 metres, NaN invalid
    rgb: np.ndarray | None  # (H, W, 3) uint8 camera image of the same stamp
    ground_truth: np.ndarray | None = None  # (H, W) float32 metres, NaN/0 = none
    confidence: np.ndarray | None = None  # (H, W) float32 in (0, 1], the node's depth/confidence


@dataclass
class Recording:
    """Everything received during a demo run."""

    inputs_received: int = 0
    camera_infos_received: int = 0
    depth_frames_received: int = 0
    depth_camera_infos_received: int = 0
    clouds_received: int = 0
    colored_received: int = 0
    latencies_s: list[float] = field(default_factory=list)
    frames: list[RecordedFrame] = field(default_factory=list)
    last_cloud: object | None = None  # the newest sensor_msgs/PointCloud2
    last_colored: object | None = None  # the newest depth/colored Image
    last_depth_info: object | None = None  # the newest depth/camera_info CameraInfo
    confidence_received: int = 0
    diagnostics: dict[str, str] = field(default_factory=dict)  # newest values of the node's status
    first_depth_time: float | None = None  # wall time the first depth image arrived
    first_depth_stamp_ns: int | None = None  # its (camera) stamp: the recording window starts there
    inputs_before_first_depth: int = 0  # camera images older than the first depth image's

    @property
    def inputs_while_recording(self) -> int:
        """Camera images from the first depth image's own image on."""
        return self.inputs_received - self.inputs_before_first_depth
    _inputs: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _truths: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @staticmethod
    def _remember(window: OrderedDict, stamp_ns: int, value: object) -> None:
        window[stamp_ns] = value
        while len(window) > INPUT_WINDOW:
            window.popitem(last=False)

    def add_input(self, stamp_ns: int, rgb: np.ndarray) -> None:
        with self._lock:
            self.inputs_received += 1
            self._remember(self._inputs, stamp_ns, rgb)

    def add_ground_truth(self, stamp_ns: int, depth: np.ndarray) -> None:
        with self._lock:
            self._remember(self._truths, stamp_ns, depth)

    def add_depth(self, stamp_ns: int, received_at: float, depth: np.ndarray) -> None:
        """A depth frame received at wall time ``received_at`` (seconds, same clock as the stamps)."""
        with self._lock:
            self.depth_frames_received += 1
            latency = received_at - stamp_ns * 1e-9
            self.latencies_s.append(latency)
            if self.first_depth_time is None:
                self.first_depth_time = received_at
                self.first_depth_stamp_ns = stamp_ns
                # The recording window starts at this frame's image: later images count as "in".
                from_here = sum(1 for stamp in self._inputs if stamp >= stamp_ns)
                self.inputs_before_first_depth = self.inputs_received - from_here
            if len(self.frames) < MAX_KEPT_FRAMES:
                self.frames.append(RecordedFrame(stamp_ns, latency, depth, self._inputs.get(stamp_ns),
                                                 self._truths.get(stamp_ns)))

    def add_confidence(self, stamp_ns: int, confidence: np.ndarray) -> None:
        """A depth/confidence map: kept with the depth frame of the same stamp (it follows that frame)."""
        with self._lock:
            self.confidence_received += 1
            for frame in reversed(self.frames):
                if frame.stamp_ns == stamp_ns:
                    frame.confidence = confidence
                    break

    def add_depth_info(self, info: object) -> None:
        with self._lock:
            self.depth_camera_infos_received += 1
            self.last_depth_info = info

    def add_cloud(self, cloud: object) -> None:
        with self._lock:
            self.clouds_received += 1
            self.last_cloud = cloud

    def add_colored(self, image: object) -> None:
        with self._lock:
            self.colored_received += 1
            self.last_colored = image

    def count_camera_info(self, depth: bool) -> None:
        with self._lock:
            if depth:
                self.depth_camera_infos_received += 1
            else:
                self.camera_infos_received += 1

    def set_diagnostics(self, values: dict[str, str]) -> None:
        with self._lock:
            self.diagnostics = dict(values)

    def snapshot_counts(self) -> tuple[int, int]:
        """(inputs received, depth frames received) right now."""
        with self._lock:
            return self.inputs_received, self.depth_frames_received
