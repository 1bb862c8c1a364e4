"""Counting what the depth node does, and reporting it as a diagnostic_msgs/DiagnosticArray.

:class:`PipelineStats` is shared by the subscription callbacks, the inference worker and the
diagnostics timer (all its methods are thread-safe); :func:`diagnostic_array` turns one
:class:`StatsSnapshot` into the message. No rclpy here.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

if TYPE_CHECKING:  # annotations only: the camera simulator reads this module without torch
    from space_clip_ros.outputs.anchoring import AnchorFit
    from space_clip_ros.outputs.builder import DepthOutputs
    from space_clip_ros.outputs.options import OutputOptions


class RateMeter:
    """Events per second over the last ``window_s`` seconds."""

    def __init__(self, window_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._window_s = window_s
        self._clock = clock
        self._times: deque[float] = deque()

    def tick(self) -> None:
        self._times.append(self._clock())
        self._trim(self._times[-1])

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self._window_s:
            self._times.popleft()

    def rate(self) -> float:
        now = self._clock()
        self._trim(now)
        if len(self._times) < 2:
            # One event (or none) in the window: no interval to measure yet.
            return 0.0
        span = max(now, self._times[-1]) - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0


class LatencyWindow:
    """The last ``size`` durations (seconds), with percentiles in milliseconds."""

    def __init__(self, size: int = 200) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        self._values.append(seconds)

    def percentile_ms(self, percent: float) -> float:
        """NaN until something was measured."""
        if not self._values:
            return math.nan
        return float(np.percentile(np.fromiter(self._values, dtype=np.float64), percent) * 1000.0)


@dataclass(frozen=True)
class StatsSnapshot:
    """Everything the diagnostics report, read at one instant."""

    frames_received: int
    frames_processed: int
    frames_dropped: int
    frames_skipped: int
    errors: int
    errors_since_last_report: int
    input_rate_hz: float
    output_rate_hz: float
    latency_p50_ms: float
    latency_p95_ms: float
    inference_p50_ms: float
    inference_p95_ms: float
    stamp_age_p50_ms: float
    seconds_since_last_frame: float
    camera_info_received: bool
    last_error: str
    last_batch_size: int = 0  # frames in the encoder + decoder pass of the last processed frame
    largest_batch_size: int = 0  # the most frames a pass of this camera's frames held
    # Depth quality of the last processed frame (issue 13); None / 0 while the option is off.
    anchor: AnchorFit | None = None  # the scale anchor's fit
    frames_without_anchor_fit: int = 0  # frames that kept the previous scale
    anchor_clouds_received: int = 0
    flying_pixels: int | None = None  # left out of the cloud (flying_pixel_threshold on)
    low_confidence_pixels: int | None = None  # left out of the cloud (points_min_confidence on)


class PipelineStats:
    """Thread-safe counters, rates and latency windows of the depth pipeline."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, window_s: float = 5.0) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._input_rate = RateMeter(window_s, clock)
        self._output_rate = RateMeter(window_s, clock)
        self._latency = LatencyWindow()
        self._inference = LatencyWindow()
        self._stamp_age = LatencyWindow()
        self._received = self._processed = self._skipped = self._dropped = self._errors = 0
        self._last_batch = self._largest_batch = 0
        self._anchor: AnchorFit | None = None
        self._frames_without_fit = self._anchor_clouds = 0
        self._flying: int | None = None
        self._low_confidence: int | None = None
        self._errors_reported = 0
        self._last_frame_time: float | None = None
        self._camera_info_received = False
        self._last_error = ""

    def frame_received(self) -> None:
        with self._lock:
            self._received += 1
            self._input_rate.tick()
            self._last_frame_time = self._clock()

    def frame_skipped(self) -> None:
        with self._lock:
            self._skipped += 1

    def frame_dropped(self) -> None:
        """A waiting frame was replaced by a newer one before the worker took it."""
        with self._lock:
            self._dropped += 1

    def camera_info_received(self) -> None:
        with self._lock:
            self._camera_info_received = True

    def frame_published(self, latency_s: float, inference_s: float, stamp_age_s: float | None,
                        batch_size: int = 1) -> None:
        """One frame's outputs went out; ``latency_s`` runs from receipt to publish; ``batch_size``
        frames shared its encoder + decoder pass."""
        with self._lock:
            self._processed += 1
            self._last_batch = batch_size
            self._largest_batch = max(self._largest_batch, batch_size)
            self._output_rate.tick()
            self._latency.add(latency_s)
            self._inference.add(inference_s)
            if stamp_age_s is not None:
                self._stamp_age.add(stamp_age_s)

    def frame_quality(self, outputs: DepthOutputs, options: OutputOptions) -> None:
        """What one published frame's depth-quality options did (scale anchor fit, filtered pixels)."""
        with self._lock:
            self._anchor = outputs.anchor
            if outputs.anchor is not None and outputs.anchor.measured is None:
                self._frames_without_fit += 1
            self._flying = outputs.flying_pixels if options.flying_pixel_threshold > 0 else None
            gated = options.publish_points and options.points_min_confidence > 0
            self._low_confidence = outputs.low_confidence_pixels if gated else None

    def anchor_cloud_received(self) -> None:
        with self._lock:
            self._anchor_clouds += 1

    def error(self, text: str) -> None:
        with self._lock:
            self._errors += 1
            self._last_error = text

    def snapshot(self, mark_reported: bool = False) -> StatsSnapshot:
        """Current values; ``mark_reported`` starts a new period for ``errors_since_last_report``."""
        with self._lock:
            since_last = (
                math.inf if self._last_frame_time is None else self._clock() - self._last_frame_time
            )
            snap = StatsSnapshot(
                frames_received=self._received,
                frames_processed=self._processed,
                frames_dropped=self._dropped,
                frames_skipped=self._skipped,
                errors=self._errors,
                errors_since_last_report=self._errors - self._errors_reported,
                input_rate_hz=self._input_rate.rate(),
                output_rate_hz=self._output_rate.rate(),
                latency_p50_ms=self._latency.percentile_ms(50),
                latency_p95_ms=self._latency.percentile_ms(95),
                inference_p50_ms=self._inference.percentile_ms(50),
                inference_p95_ms=self._inference.percentile_ms(95),
                stamp_age_p50_ms=self._stamp_age.percentile_ms(50),
                seconds_since_last_frame=since_last,
                camera_info_received=self._camera_info_received,
                last_error=self._last_error,
                last_batch_size=self._last_batch,
                largest_batch_size=self._largest_batch,
                anchor=self._anchor,
                frames_without_anchor_fit=self._frames_without_fit,
                anchor_clouds_received=self._anchor_clouds,
                flying_pixels=self._flying,
                low_confidence_pixels=self._low_confidence,
            )
            if mark_reported:
                self._errors_reported = self._errors
            return snap


# Key names of the report; tests and dashboards read them.
KEY_INPUT_RATE = "input rate (Hz)"
KEY_OUTPUT_RATE = "output rate (Hz)"
KEY_RECEIVED = "frames received"
KEY_PROCESSED = "frames processed"
KEY_DROPPED = "frames dropped (superseded by a newer frame)"
KEY_SKIPPED = "frames skipped (process_every_n)"
KEY_ERRORS = "errors"
KEY_LAST_ERROR = "last error"
KEY_LATENCY_P50 = "latency receipt->publish p50 (ms)"
KEY_LATENCY_P95 = "latency receipt->publish p95 (ms)"
KEY_INFERENCE_P50 = "inference time p50 (ms)"
KEY_INFERENCE_P95 = "inference time p95 (ms)"
KEY_STAMP_AGE_P50 = "age of image stamp at publish p50 (ms)"
KEY_CAMERA_INFO = "camera_info received"
KEY_BATCH_LAST = "inference batch size (last)"
KEY_BATCH_LARGEST = "inference batch size (largest)"
KEY_CAMERA = "camera"
KEY_SCALE_ANCHOR = "scale anchor"
KEY_ANCHOR_SCALE = "scale anchor: scale applied"
KEY_ANCHOR_FIT = "scale anchor: last frame's fit"
KEY_ANCHOR_INLIERS = "scale anchor: inlier share"
KEY_ANCHOR_NORMAL = "scale anchor: ground plane normal (optical frame)"
KEY_ANCHOR_MISSES = "scale anchor: frames without a fit (previous scale kept)"
KEY_ANCHOR_CLOUDS = "scale anchor: anchor clouds received"
KEY_FLYING = "flying pixels left out of the cloud (last frame)"
KEY_LOW_CONFIDENCE = "low-confidence pixels left out of the cloud (last frame)"
KEY_DEVICE = "device"
KEY_MODEL = "model"
KEY_BACKBONE_WEIGHTS = "backbone weights"
KEY_DECODER_WEIGHTS = "decoder weights"

#: Seconds without an image after which the report turns to WARN.
STALE_INPUT_S = 5.0


def _number(value: float, digits: int = 1) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"


def quality_values(snapshot: StatsSnapshot) -> dict[str, str]:
    """The depth-quality keys of a report: present only while their option is on."""
    values: dict[str, str] = {}
    anchor = snapshot.anchor
    if anchor is not None:
        values[KEY_SCALE_ANCHOR] = anchor.mode
        values[KEY_ANCHOR_SCALE] = f"{anchor.scale:.4f}"
        values[KEY_ANCHOR_FIT] = "none (previous scale kept)" if anchor.measured is None else f"{anchor.measured:.4f}"
        values[KEY_ANCHOR_INLIERS] = "n/a" if anchor.inlier_share is None else f"{anchor.inlier_share:.3f}"
        if anchor.mode == "ground_plane":
            values[KEY_ANCHOR_NORMAL] = "n/a" if anchor.normal is None else (
                "(" + ", ".join(f"{v:.3f}" for v in anchor.normal) + ")")
        else:
            values[KEY_ANCHOR_CLOUDS] = str(snapshot.anchor_clouds_received)
        values[KEY_ANCHOR_MISSES] = str(snapshot.frames_without_anchor_fit)
    if snapshot.flying_pixels is not None:
        values[KEY_FLYING] = str(snapshot.flying_pixels)
    if snapshot.low_confidence_pixels is not None:
        values[KEY_LOW_CONFIDENCE] = str(snapshot.low_confidence_pixels)
    return values


def diagnostic_status(
    snapshot: StatsSnapshot,
    name: str,
    hardware_id: str,
    static_values: Mapping[str, str],
    points_enabled: bool,
) -> DiagnosticStatus:
    """One DiagnosticStatus describing one camera's pipeline.

    Level: ERROR when frames failed since the last report; WARN when no image arrived for
    :data:`STALE_INPUT_S` seconds or point clouds are on but no CameraInfo has come; else OK.
    """
    if snapshot.errors_since_last_report > 0:
        level, message = DiagnosticStatus.ERROR, (
            f"{snapshot.errors_since_last_report} frame(s) failed: {snapshot.last_error}"
        )
    elif snapshot.seconds_since_last_frame > STALE_INPUT_S:
        level, message = DiagnosticStatus.WARN, "no input images"
    elif points_enabled and not snapshot.camera_info_received:
        level, message = DiagnosticStatus.WARN, "no CameraInfo yet: depth images only, no point clouds"
    else:
        level, message = DiagnosticStatus.OK, (
            f"{_number(snapshot.output_rate_hz)} Hz, inference p50 {_number(snapshot.inference_p50_ms)} ms"
        )
    values = {
        KEY_INPUT_RATE: _number(snapshot.input_rate_hz, 2),
        KEY_OUTPUT_RATE: _number(snapshot.output_rate_hz, 2),
        KEY_RECEIVED: str(snapshot.frames_received),
        KEY_PROCESSED: str(snapshot.frames_processed),
        KEY_DROPPED: str(snapshot.frames_dropped),
        KEY_SKIPPED: str(snapshot.frames_skipped),
        KEY_ERRORS: str(snapshot.errors),
        KEY_LAST_ERROR: snapshot.last_error,
        KEY_LATENCY_P50: _number(snapshot.latency_p50_ms),
        KEY_LATENCY_P95: _number(snapshot.latency_p95_ms),
        KEY_INFERENCE_P50: _number(snapshot.inference_p50_ms),
        KEY_INFERENCE_P95: _number(snapshot.inference_p95_ms),
        KEY_STAMP_AGE_P50: _number(snapshot.stamp_age_p50_ms),
        KEY_CAMERA_INFO: "yes" if snapshot.camera_info_received else "no",
        KEY_BATCH_LAST: str(snapshot.last_batch_size),
        KEY_BATCH_LARGEST: str(snapshot.largest_batch_size),
        **quality_values(snapshot),
        **static_values,
    }
    return DiagnosticStatus(
        level=level,
        name=name,
        message=message,
        hardware_id=hardware_id,
        values=[KeyValue(key=key, value=value) for key, value in values.items()],
    )


def diagnostic_array(statuses: list[DiagnosticStatus], stamp: Time) -> DiagnosticArray:
    """The message of one report: every camera's status."""
    array = DiagnosticArray(status=list(statuses))
    array.header.stamp = stamp
    return array
