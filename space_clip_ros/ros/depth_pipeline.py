"""The depth node's pipeline: every camera's frames in, their outputs out, one model for all.

Both node classes (:class:`~space_clip_ros.ros.depth_node.DepthNode` and the managed
:class:`~space_clip_ros.ros.depth_lifecycle_node.DepthLifecycleNode`) hold one
:class:`DepthPipeline`. They create the topics (``ros.depth_endpoints``) and hand each message to
:meth:`DepthPipeline.on_image` / :meth:`DepthPipeline.on_camera_info`, which store and return;
one worker thread takes the newest frame of every camera that has one waiting
(:func:`~space_clip_ros.ros.frame_slot.take_waiting`), prepares each
(:class:`~space_clip_ros.outputs.camera_input.CameraInput`: decoded, paired with its CameraInfo by
stamp, undistorted), runs them through one encoder + decoder pass
(:meth:`~space_clip_ros.outputs.frame_processor.DepthFrameProcessor.predict`), builds each camera's
outputs at its own size and hands them to the node's publish function. Each camera keeps its
mailbox (latest frame wins), counters, CameraInfo history, undistortion maps, scale anchor and log
limits: a :class:`CameraChannel`.

No rclpy here: the node gives a logger, a clock and the publish function.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from space_clip_ros.inference.rewrites.decoder_int8 import CalibrationFrameRecorder
from space_clip_ros.inference.runtime.memory import current_memory, second_selection_memory_problem
from space_clip_ros.inference.runtime.predictor import DepthPredictor
from space_clip_ros.msgs.camera_info_history import format_stamp
from space_clip_ros.msgs.header import stamp_ns
from space_clip_ros.outputs.anchoring import DepthScaleAnchor
from space_clip_ros.outputs.builder import DepthOutputs
from space_clip_ros.outputs.camera_input import CameraFrame, CameraInput
from space_clip_ros.outputs.frame_processor import DepthFrameProcessor
from space_clip_ros.outputs.options import OutputOptions
from space_clip_ros.outputs.scale_anchor import sparse_points_from_cloud
from space_clip_ros.ros.diagnostics import KEY_CAMERA, PipelineStats, diagnostic_array, diagnostic_status
from space_clip_ros.ros.frame_slot import LatestFrameSlot, take_waiting
from space_clip_ros.ros.log_limiter import RepeatLimiter
from space_clip_ros.ros.logging_bridge import RosLogger
from space_clip_ros.ros.parameters import DepthNodeSettings
from space_clip_ros.ros.topics import CameraTopics, camera_topics

#: Seconds between repeats of the same error (per camera and kind of problem).
ERROR_REPEAT_PERIOD_S = 5.0
#: Seconds between repeats of a warning about a frame without CameraInfo (per camera).
CAMERA_INFO_WARN_PERIOD_S = 10.0
WORKER_JOIN_TIMEOUT_S = 10.0
WORKER_POLL_S = 0.5

#: Publishes one camera's outputs; False when the node is going away (nothing was published).
PublishOutputs = Callable[["CameraChannel", DepthOutputs], bool]
#: Builds the predictor chosen with the kept camera frames, and its diagnostics values.
Recalibrate = Callable[[], tuple[DepthPredictor, Mapping[str, str]]]


def path_name(predictor: DepthPredictor) -> str:
    """The inference path a predictor runs: backend auto's name for it, else its engine's description."""
    choice = predictor.auto_choice
    return choice.name if choice is not None else predictor.engine.describe()


@dataclass(frozen=True)
class ReceivedFrame:
    message: Image | CompressedImage
    receipt_time: float  # time.monotonic() when the subscription callback got it


class CameraChannel:
    """One camera of the pipeline: its topics, mailbox, counters, input state and scale anchor.

    ``name`` is a name of the ``cameras`` parameter, or "" for the single camera of a node without it.
    """

    def __init__(self, name: str, camera_info_tolerance_s: float) -> None:
        self.name = name
        self.topics: CameraTopics = camera_topics(name)
        self.input = CameraInput(camera_info_tolerance_s)
        self.anchor = DepthScaleAnchor()
        self.stats = PipelineStats()
        self.slot: LatestFrameSlot[ReceivedFrame] | None = None  # while the pipeline runs
        self.frames_seen = 0
        self.camera_info_topic = self.topics.camera_info  # the resolved name, once the node knows it
        self._size_mismatches_warned: set[tuple[tuple[int, int], tuple[int, int]]] = set()

    @property
    def log_prefix(self) -> str:
        """What each log line about this camera starts with ("" for the single camera)."""
        return f"{self.name}: " if self.name else ""

    def first_size_mismatch(self, camera_info_size: tuple[int, int], image_size: tuple[int, int]) -> bool:
        """True the first time this pair of (CameraInfo size, image size) is seen."""
        key = (camera_info_size, image_size)
        if key in self._size_mismatches_warned:
            return False
        self._size_mismatches_warned.add(key)
        return True


class DepthPipeline:
    """Cameras in, depth outputs out (see the module notes).

    Args:
        predictor: the model (one for every camera).
        settings: returns the node's current parameters (a new snapshot after each change); read once
            per batch of frames.
        logger: the node's logger.
        now_ns: the node's clock, in nanoseconds (for the age of the image stamps).
        model_facts: static diagnostics values (device, model, weights).
        frame_recorder: keeps camera frames for a later calibration (``calibration_images: auto``).
        recalibrate: once ``frame_recorder`` has kept its set, called in a background thread; returns
            the predictor chosen with those frames (the int8 decoder calibrated on them, where the CPU
            and the parameters allow it) and its diagnostics values. The pipeline switches to it
            between two batches when its path differs; depth keeps coming meanwhile.
    """

    def __init__(
        self,
        predictor: DepthPredictor,
        settings: Callable[[], DepthNodeSettings],
        logger: RosLogger,
        now_ns: Callable[[], int],
        model_facts: Mapping[str, str],
        frame_recorder: CalibrationFrameRecorder | None = None,
        recalibrate: Recalibrate | None = None,
    ) -> None:
        self.predictor = predictor
        self._frame_recorder = frame_recorder
        self._recalibrate = recalibrate
        self.recalibration: threading.Thread | None = None
        self._settings = settings
        self._logger = logger
        self._now_ns = now_ns
        self._model_facts = dict(model_facts)
        current = settings()
        self.cameras = [CameraChannel(name, current.camera_info_tolerance) for name in current.cameras or ("",)]
        self._processor = DepthFrameProcessor(predictor)
        self._errors = RepeatLimiter(period_s=ERROR_REPEAT_PERIOD_S)
        self._camera_info_warnings = RepeatLimiter(period_s=CAMERA_INFO_WARN_PERIOD_S)
        self._largest_batch = 1
        self._publish: PublishOutputs | None = None
        self._condition: threading.Condition | None = None
        self._worker: threading.Thread | None = None

    # ---- running -----------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._worker is not None

    def start(self, publish: PublishOutputs) -> None:
        """Open each camera's mailbox and start the worker; outputs go to ``publish``."""
        if self.running:
            return
        self._publish = publish
        self._condition = threading.Condition()
        for camera in self.cameras:
            camera.slot = LatestFrameSlot(self._condition)
        slots = [camera.slot for camera in self.cameras]
        self._worker = threading.Thread(target=self._run_worker, args=(slots,), name="depth_inference", daemon=True)
        self._worker.start()

    def stop(self) -> None:
        """Stop the worker after the batch it is on; frames still waiting are dropped."""
        if not self.running:
            return
        slots = [camera.slot for camera in self.cameras]
        for camera in self.cameras:
            camera.slot = None  # callbacks from now on store nothing
        for slot in slots:
            slot.close()
        if self._worker.is_alive():
            self._worker.join(timeout=WORKER_JOIN_TIMEOUT_S)
        self._worker = None

    # ---- the subscriptions' side: store and return -------------------------------------------------
    def on_image(self, camera: CameraChannel, message: Image | CompressedImage) -> None:
        camera.stats.frame_received()
        camera.frames_seen += 1
        if (camera.frames_seen - 1) % self._settings().process_every_n != 0:
            camera.stats.frame_skipped()
            return
        slot = camera.slot
        if slot is not None and slot.put(ReceivedFrame(message=message, receipt_time=time.monotonic())):
            camera.stats.frame_dropped()

    def on_anchor_points(self, camera: CameraChannel, message: PointCloud2) -> None:
        """Metric anchor points (optical frame) for ``scale_anchor: sparse_points``: the camera's next
        frame fits its scale to them. Ignored (not even decoded) while the option is off."""
        if self._settings().outputs_for(camera.name).scale_anchor != "sparse_points":
            return
        try:
            points = sparse_points_from_cloud(message)
        except ValueError as exc:  # PointCloudError: a cloud without float32 x, y, z
            self._report_error(camera, f"anchor_points rejected: {exc}", f"anchor_points rejected: {exc}")
            return
        camera.anchor.set_anchor_points(points)
        camera.stats.anchor_cloud_received()

    def options_problem(self, settings: DepthNodeSettings) -> str | None:
        """Why this pipeline's model cannot serve ``settings``' outputs (a confidence map from a backend
        without the decoder's auxiliary heads), or None. The node refuses such settings at start-up and
        at runtime."""
        for camera in self.cameras:
            if settings.outputs_for(camera.name).wants_confidence:
                problem = self.predictor.confidence_problem()
                if problem is not None:
                    return f"publish_confidence / points_min_confidence: {problem}"
        return None

    def on_camera_info(self, camera: CameraChannel, message: CameraInfo) -> None:
        had_one = camera.input.has_camera_info
        try:
            camera.input.add_camera_info(message, undistort=self._settings().undistort)
        except ValueError as exc:  # CameraInfoError: what is wrong with it
            kept = "keeping the previous one" if had_one else "no point clouds until a valid one arrives"
            self._report_error(camera, f"camera_info rejected: {exc} ({kept})", f"camera_info rejected: {exc}")
            return
        camera.stats.camera_info_received()

    # ---- the worker --------------------------------------------------------------------------------
    def _run_worker(self, slots: list[LatestFrameSlot[ReceivedFrame]]) -> None:
        while not slots[0].closed:
            waiting = take_waiting(slots, self._condition, timeout=WORKER_POLL_S)
            if waiting:
                self._process([(self.cameras[index], frame) for index, frame in waiting])

    def _process(self, received: list[tuple[CameraChannel, ReceivedFrame]]) -> None:
        settings = self._settings()
        ready: list[tuple[CameraChannel, ReceivedFrame, CameraFrame, OutputOptions]] = []
        for camera, frame in received:
            try:
                prepared = camera.input.frame(frame.message, undistort=settings.undistort)
            except Exception as exc:  # noqa: BLE001 - one failing frame must not stop the others
                self._frame_failed(camera, frame, exc)
                continue
            ready.append((camera, frame, prepared, settings.outputs_for(camera.name)))
        if not ready:
            return
        if self._frame_recorder is not None and not self._frame_recorder.done:
            completed = False
            for _, _, prepared, _ in ready:
                completed = self._frame_recorder.offer(prepared.rgb) or completed
            if completed and self._recalibrate is not None:
                self._start_recalibration()
        self._report_batch(ready)
        processor = self._processor  # one predictor per batch, also across a switch
        try:
            predictions = processor.predict([item[2].rgb for item in ready], [item[3] for item in ready])
        except Exception as exc:  # noqa: BLE001
            for camera, frame, _, _ in ready:
                self._frame_failed(camera, frame, exc)
            return
        for (camera, frame, prepared, options), prediction in zip(ready, predictions):
            try:
                outputs = processor.build(prediction, prepared.header, prepared.calibration, options,
                                          rgb=prepared.rgb, anchor=camera.anchor)
            except Exception as exc:  # noqa: BLE001
                self._frame_failed(camera, frame, exc)
                continue
            if self._publish is None or not self._publish(camera, outputs):
                return  # shutting down: publishers are going away
            stamp_age_ns = self._now_ns() - stamp_ns(prepared.header.stamp)
            camera.stats.frame_published(
                latency_s=time.monotonic() - frame.receipt_time,
                inference_s=outputs.inference_s,
                stamp_age_s=stamp_age_ns / 1e9 if stamp_age_ns >= 0 else None,  # other clock (sim time): no age
                batch_size=prediction.batch_size,
            )
            camera.stats.frame_quality(outputs, options)
            self._report_camera_info_state(camera, prepared)

    def _report_batch(self, ready: list[tuple[CameraChannel, ReceivedFrame, CameraFrame, OutputOptions]]) -> None:
        """Say so (once per new size) when more frames than ever share one pass."""
        if len(ready) <= self._largest_batch:
            return
        self._largest_batch = len(ready)
        frames = ", ".join(f"{camera.name} {format_stamp(stamp_ns(prepared.header.stamp))}"
                           for camera, _, prepared, _ in ready)
        self._logger.info(f"one encoder + decoder pass for {len(ready)} frames ({frames}): the cameras whose "
                          "frames were waiting share it")

    # ---- switching to the path calibrated on the kept frames ------------------------------------------
    def _start_recalibration(self) -> None:
        problem = second_selection_memory_problem(*current_memory())
        if problem is not None:
            self._logger.warning(f"this camera's frames are kept, but the path is not chosen again now: {problem}; "
                                 "the next start uses the kept frames")
            return
        self._logger.info("this camera's frames are kept: choosing the inference path again with them, in the "
                          "background (depth keeps coming on the current path meanwhile)")
        self.recalibration = threading.Thread(target=self._recalibrate_in_background, name="depth_recalibration",
                                              daemon=True)
        self.recalibration.start()

    def _recalibrate_in_background(self) -> None:
        current = path_name(self.predictor)
        # auto sets torch's process-wide threads for each candidate and then for its choice: the current
        # path gets its setting back unless the pipeline switches
        threads = torch.get_num_threads()
        try:
            predictor, facts = self._recalibrate()
        except Exception as exc:  # noqa: BLE001 - whatever failed, the current path keeps serving
            torch.set_num_threads(threads)
            self._logger.warning(f"choosing the path with the kept camera frames failed ({type(exc).__name__}: "
                                 f"{exc}); staying on {current} (the next start tries again)")
            return
        if not self.switch_to(predictor, facts):
            torch.set_num_threads(threads)

    def switch_to(self, predictor: DepthPredictor, facts: Mapping[str, str]) -> bool:
        """Serve the next batches with ``predictor`` (diagnostics ``facts``) when its path differs from
        the current one and it can serve the outputs asked for; True when it switched."""
        current, chosen = path_name(self.predictor), path_name(predictor)
        if chosen == current:
            self._logger.info(f"with the kept camera frames the inference path stays {current}")
            return False
        for camera in self.cameras:
            if self._settings().outputs_for(camera.name).wants_confidence and predictor.confidence_problem():
                self._logger.warning(f"not switching to {chosen}: {predictor.confidence_problem()}")
                return False
        processor = DepthFrameProcessor(predictor)
        self._model_facts = dict(facts)
        self.predictor, self._processor = predictor, processor  # the worker takes it at its next batch
        measured = f": {predictor.auto_choice.describe()}" if predictor.auto_choice is not None else ""
        self._logger.info(f"switched the inference path to {chosen} (was {current}), chosen with the kept "
                          f"camera frames{measured}")
        return True

    # ---- reporting ---------------------------------------------------------------------------------
    def _frame_failed(self, camera: CameraChannel, frame: ReceivedFrame, exc: Exception) -> None:
        stamp = format_stamp(stamp_ns(frame.message.header.stamp))
        if isinstance(exc, ValueError):  # ImageConversionError, CameraInfoError, PointCloudError: bad input
            self._report_error(camera, f"frame {stamp} dropped: {exc}", str(exc))
        else:
            self._report_error(camera, f"frame {stamp} failed: {type(exc).__name__}: {exc}", type(exc).__name__)

    def _report_error(self, camera: CameraChannel, text: str, kind: str) -> None:
        """Count an error and log it, repeats of the same ``kind`` (per camera) at most once per 5 s."""
        text = camera.log_prefix + text
        camera.stats.error(text)
        log_now, suppressed = self._errors.should_log(f"{camera.name}\n{kind}")
        if log_now:
            repeats = f" ({suppressed} more like it since the last report)" if suppressed else ""
            self._logger.error(text + repeats)

    def _report_camera_info_state(self, camera: CameraChannel, frame: CameraFrame) -> None:
        if frame.calibration is None:
            if not camera.input.has_camera_info:
                kind, text = "none yet", (
                    f"no CameraInfo received yet on {camera.camera_info_topic}: publishing depth images only; "
                    "depth/camera_info, point clouds and focal rescaling start with the first CameraInfo")
            else:
                kind, text = "no match", (
                    f"{frame.camera_info.description}: publishing this frame's depth image only (no "
                    f"depth/camera_info, no cloud); see camera_info_tolerance")
            if self._camera_info_warnings.should_log(f"{camera.name}\n{kind}")[0]:
                self._logger.warning(camera.log_prefix + text)
            return
        mismatch = frame.camera_info_size_mismatch
        if mismatch is not None and camera.first_size_mismatch(mismatch, frame.image_size):
            (info_w, info_h), (image_w, image_h) = mismatch, frame.image_size
            self._logger.warning(
                f"{camera.log_prefix}CameraInfo on {camera.camera_info_topic} is for a {info_w}x{info_h} image but "
                f"the images are {image_w}x{image_h}: its intrinsics were rescaled to the image size "
                "(check the camera driver's calibration)"
            )

    def diagnostics(self, node_name: str, stamp: Time) -> DiagnosticArray:
        """One report: a status per camera, named ``<node>: depth estimation`` (``... (<camera>)``)."""
        settings = self._settings()
        statuses = []
        for camera in self.cameras:
            name = f"{node_name}: depth estimation" + (f" ({camera.name})" if camera.name else "")
            facts = {**self._model_facts, **({KEY_CAMERA: camera.name} if camera.name else {})}
            statuses.append(diagnostic_status(
                camera.stats.snapshot(mark_reported=True), name=name, hardware_id=str(self.predictor.device),
                static_values=facts, points_enabled=settings.outputs_for(camera.name).publish_points,
            ))
        return diagnostic_array(statuses, stamp)
