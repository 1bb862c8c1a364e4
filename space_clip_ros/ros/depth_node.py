"""The ROS 2 depth node ``space_clip_depth`` (console script ``depth_node``).

Camera images in; metric depth image (REP 118), its CameraInfo, a point cloud and optional extras
out. The class is glue only: the subscription callbacks store the newest frame in a one-slot
mailbox and return; one worker thread takes frames from it and hands them to
:class:`~space_clip_ros.outputs.frame_processor.DepthFrameProcessor` (which knows no rclpy), then
publishes what comes back. Parameters, QoS, topics and diagnostics each live in their own module.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from space_clip_ros.msgs import CameraInfoError
from space_clip_ros.outputs.builder import DepthOutputs
from space_clip_ros.outputs.calibration import CameraCalibration
from space_clip_ros.outputs.frame_processor import DepthFrameProcessor
from space_clip_ros.outputs.topics import OUTPUT_TOPICS
from space_clip_ros.ros import topics
from space_clip_ros.ros.diagnostics import PipelineStats, diagnostic_array
from space_clip_ros.ros.frame_slot import LatestFrameSlot
from space_clip_ros.ros.log_limiter import RepeatLimiter
from space_clip_ros.ros.logging_bridge import forward_package_logs, stop_forwarding
from space_clip_ros.ros.model_setup import MODEL_SETUP_ERRORS, build_predictor, model_facts
from space_clip_ros.ros.node_main import run_node
from space_clip_ros.ros.parameter_table import declare_parameters
from space_clip_ros.ros.parameters import (
    PARAMETERS,
    PARAMETERS_BY_NAME,
    DepthNodeSettings,
    check_changes,
    check_consistency,
    check_value,
)
from space_clip_ros.ros.qos import diagnostics_qos, output_qos, sensor_input_qos
from space_clip_ros.ros.rclpy_compat import add_validated_parameters_callbacks

NODE_NAME = "space_clip_depth"
DIAGNOSTICS_PERIOD_S = 1.0
NO_CAMERA_INFO_WARN_PERIOD_S = 10.0
WORKER_JOIN_TIMEOUT_S = 10.0

# Exit codes of main() besides 0 (stopped normally).
EXIT_MODEL_ERROR = 1
EXIT_PARAMETER_ERROR = 2


class StartupError(RuntimeError):
    """The node cannot start with its parameters; the text says why."""


@dataclass(frozen=True)
class ReceivedFrame:
    message: Image | CompressedImage
    receipt_time: float  # time.monotonic() when the subscription callback got it


class DepthNode(Node):
    """SPACE-CLIP depth estimation over ROS 2 topics (see docs/ros_node.md)."""

    def __init__(self, **node_options) -> None:
        super().__init__(NODE_NAME, **node_options)
        self._log_forwarding = forward_package_logs(self.get_logger())
        self._values: dict[str, object] = {}
        self._all_declared = False
        # Post-set callbacks arrived in Iron; on Humble the helper applies at the end of the check.
        add_validated_parameters_callbacks(self, self._check_parameters, self._apply_parameters)
        declare_parameters(self, PARAMETERS)  # each value reaches self._values via the callbacks
        reason = check_consistency(self._values)
        if reason is not None:
            raise StartupError(reason)
        self._all_declared = True
        self._settings = DepthNodeSettings.from_values(self._values)
        self._warn_unknown_overrides()
        settings = self._settings

        self._predictor = build_predictor(settings)
        self._processor = DepthFrameProcessor(self._predictor)
        self._model_facts = model_facts(self._predictor, settings.checkpoint)

        self._stats = PipelineStats()
        self._slot: LatestFrameSlot[ReceivedFrame] = LatestFrameSlot()
        self._error_limiter = RepeatLimiter(period_s=5.0)
        self._calibration: CameraCalibration | None = None
        self._calibration_lock = threading.Lock()
        self._frames_seen = 0
        self._size_mismatches_warned: set[tuple[tuple[int, int], tuple[int, int]]] = set()

        out_qos = output_qos(settings.publisher_reliability)
        # One publisher per output topic, created even while an output is off, so that switching
        # it on at runtime needs no new publisher.
        self._output_pubs = {
            topic.name: self.create_publisher(topic.message_type, topic.name, out_qos) for topic in OUTPUT_TOPICS
        }
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, diagnostics_qos())

        in_qos = sensor_input_qos(settings.qos_depth)
        if settings.image_transport == "compressed":
            image_topic = topics.compressed_image_topic(self.resolve_topic_name)
            self._image_sub = self.create_subscription(CompressedImage, image_topic, self._on_image, in_qos)
        else:
            image_topic = self.resolve_topic_name(topics.IMAGE)
            self._image_sub = self.create_subscription(Image, topics.IMAGE, self._on_image, in_qos)
        self._camera_info_topic = self.resolve_topic_name(topics.CAMERA_INFO)
        self._camera_info_sub = self.create_subscription(
            CameraInfo, topics.CAMERA_INFO, self._on_camera_info, in_qos
        )

        self._diagnostics_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        self._worker = threading.Thread(target=self._run_worker, name="depth_inference", daemon=True)
        self._worker.start()
        outputs = settings.outputs
        self.get_logger().info(
            f"{self._predictor.describe()}. Input: {image_topic} ({settings.image_transport}) + "
            f"{self._camera_info_topic}. Output: {self.resolve_topic_name(topics.DEPTH_IMAGE)} "
            f"({outputs.depth_encoding}), {self.resolve_topic_name(topics.DEPTH_CAMERA_INFO)}, "
            f"{self.resolve_topic_name(topics.POINTS)} ({'on' if outputs.publish_points else 'off'}), "
            f"colored {'on' if outputs.publish_colored else 'off'}, "
            f"embedding {'on' if outputs.publish_embedding else 'off'}; "
            f"publishers {settings.publisher_reliability}"
        )

    # ---- parameters ------------------------------------------------------------------------------
    def _check_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        # Only our own parameters: rclpy's (use_sim_time) pass through unchecked.
        changes = {p.name: p.value for p in parameters if p.name in PARAMETERS_BY_NAME}
        if self._all_declared:
            reason = check_changes(self._values, changes)
        else:
            # While declaring, the other parameters are not there yet: the rules between
            # parameters are checked once all are declared.
            reason = next((r for r in (check_value(n, v) for n, v in changes.items()) if r), None)
        return SetParametersResult(successful=reason is None, reason=reason or "")

    def _apply_parameters(self, parameters: list[Parameter]) -> None:
        ours = [p for p in parameters if p.name in PARAMETERS_BY_NAME]
        for parameter in ours:
            self._values[parameter.name] = parameter.value
        if self._all_declared and ours:
            # One new immutable snapshot: the worker picks it up at its next frame.
            self._settings = DepthNodeSettings.from_values(self._values)
            changed = ", ".join(f"{p.name}={p.value!r}" for p in ours)
            self.get_logger().info(f"parameters changed ({changed}); in effect from the next frame")

    def _warn_unknown_overrides(self) -> None:
        # rclpy silently ignores overrides nobody declares; a typo in the YAML should not go unseen.
        overrides = getattr(self, "_parameter_overrides", {})
        unknown = sorted(name for name in overrides if not self.has_parameter(name))
        if unknown:
            self.get_logger().warning(f"ignoring unknown parameter(s) {unknown}; see docs/ros_node.md")

    # ---- subscriptions: store and return -----------------------------------------------------------
    def _on_image(self, message: Image | CompressedImage) -> None:
        self._stats.frame_received()
        self._frames_seen += 1
        if (self._frames_seen - 1) % self._settings.process_every_n != 0:
            self._stats.frame_skipped()
            return
        self._slot.put(ReceivedFrame(message=message, receipt_time=time.monotonic()))

    def _on_camera_info(self, message: CameraInfo) -> None:
        try:
            calibration = CameraCalibration.from_msg(message)  # a 3x3 check, cheap
        except CameraInfoError as exc:
            if self._calibration is not None:
                kept = "keeping the previous one"
            else:
                kept = "no point clouds until a valid one arrives"
            self._report_error(f"camera_info rejected: {exc} ({kept})", f"camera_info rejected: {exc}")
            return
        with self._calibration_lock:
            self._calibration = calibration
        self._stats.camera_info_received()

    # ---- inference worker ----------------------------------------------------------------------
    def _run_worker(self) -> None:
        while not self._slot.closed:
            frame = self._slot.take(timeout=0.5)
            if frame is not None:
                self._process(frame)

    def _process(self, frame: ReceivedFrame) -> None:
        settings = self._settings
        with self._calibration_lock:
            calibration = self._calibration
        stamp = frame.message.header.stamp
        stamp_text = f"{stamp.sec}.{stamp.nanosec:09d}"
        try:
            outputs = self._processor.process(frame.message, calibration, settings.outputs)
        except ValueError as exc:  # ImageConversionError, CameraInfoError, PointCloudError: bad input
            self._report_error(f"frame {stamp_text} dropped: {exc}", str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - one failing frame must not stop the node
            self._report_error(f"frame {stamp_text} failed: {type(exc).__name__}: {exc}", type(exc).__name__)
            return
        if not self.context.ok():
            return  # shutting down: publishers are going away
        self._publish(outputs)
        stamp_age = (self.get_clock().now() - Time.from_msg(stamp)).nanoseconds / 1e9
        self._stats.frame_published(
            latency_s=time.monotonic() - frame.receipt_time,
            inference_s=outputs.inference_s,
            stamp_age_s=stamp_age if stamp_age >= 0.0 else None,  # other clock (e.g. sim time): no age
        )
        self._report_camera_info_state(outputs, calibration)

    def _publish(self, outputs: DepthOutputs) -> None:
        for topic, message in outputs.messages():
            self._output_pubs[topic.name].publish(message)

    def _report_camera_info_state(self, outputs: DepthOutputs, calibration: CameraCalibration | None) -> None:
        if calibration is None:
            self.get_logger().warning(
                f"no CameraInfo received yet on {self._camera_info_topic}: publishing depth images only; "
                "depth/camera_info, point clouds and focal rescaling start with the first CameraInfo",
                throttle_duration_sec=NO_CAMERA_INFO_WARN_PERIOD_S,
            )
            return
        if outputs.camera_info_size_mismatch is not None:
            key = (outputs.camera_info_size_mismatch, outputs.image_size)
            if key not in self._size_mismatches_warned:  # once per pair of sizes
                self._size_mismatches_warned.add(key)
                (info_w, info_h), (image_w, image_h) = key
                self.get_logger().warning(
                    f"CameraInfo on {self._camera_info_topic} is for a {info_w}x{info_h} image but the "
                    f"images are {image_w}x{image_h}: its intrinsics were rescaled to the image size "
                    "(check the camera driver's calibration)"
                )

    def _report_error(self, text: str, kind: str) -> None:
        """Count an error and log it, repeats of the same ``kind`` at most once per 5 s."""
        self._stats.error(text)
        log_now, suppressed = self._error_limiter.should_log(kind)
        if log_now:
            repeats = f" ({suppressed} more like it since the last report)" if suppressed else ""
            self.get_logger().error(text + repeats)

    # ---- diagnostics ---------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        snapshot = self._stats.snapshot(self._slot.dropped, mark_reported=True)
        self._diagnostics_pub.publish(
            diagnostic_array(
                snapshot,
                stamp=self.get_clock().now().to_msg(),
                name=f"{self.get_fully_qualified_name()}: depth estimation",
                hardware_id=str(self._predictor.device),
                static_values=self._model_facts,
                points_enabled=self._settings.outputs.publish_points,
            )
        )

    # ---- shutdown ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the worker (after the frame it is on) and detach the log forwarding."""
        self._slot.close()
        if self._worker.is_alive():
            self._worker.join(timeout=WORKER_JOIN_TIMEOUT_S)
        stop_forwarding(self._log_forwarding)


def main(args: list[str] | None = None) -> int:
    """Entry point of ``ros2 run space_clip_ros depth_node`` (rclpy reads ``--ros-args`` itself)."""
    return run_node(
        NODE_NAME,
        args,
        DepthNode,
        startup_errors=[
            ((rclpy.exceptions.ParameterException, StartupError), "refusing to start", EXIT_PARAMETER_ERROR),
            (MODEL_SETUP_ERRORS, "cannot load the model", EXIT_MODEL_ERROR),
        ],
        command_line_exit_code=EXIT_PARAMETER_ERROR,
        on_stop=DepthNode.stop,
    )


if __name__ == "__main__":
    sys.exit(main())
