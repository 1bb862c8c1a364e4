"""The depth node's small parts on their own: mailbox, log limiter, diagnostics, log forwarding,
QoS, topic naming, backbone selection. No ROS graph, no model."""

from __future__ import annotations

import logging
import math
import threading
import time

import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.qos import DurabilityPolicy, HistoryPolicy, ReliabilityPolicy

from space_clip_ros.ros import diagnostics as diag
from space_clip_ros.ros.frame_slot import LatestFrameSlot, take_waiting
from space_clip_ros.ros.log_limiter import RepeatLimiter
from space_clip_ros.ros.logging_bridge import forward_package_logs, stop_forwarding
from space_clip_ros.ros.model_setup import backbone_config
from space_clip_ros.ros.parameters import DepthNodeSettings
from space_clip_ros.ros.qos import output_qos, sensor_input_qos
from space_clip_ros.ros.topics import TOPICS, camera_topics, compressed_image_topic, render_markdown_table


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# ---- mailbox ------------------------------------------------------------------------------------
def test_slot_keeps_only_the_newest_frame_and_counts_the_dropped():
    slot: LatestFrameSlot[int] = LatestFrameSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True
    assert slot.put(3) is True
    assert slot.take(timeout=0) == 3
    assert slot.dropped == 2
    assert slot.take(timeout=0.05) is None  # empty: waits, then gives up
    assert slot.put(4) is False and slot.dropped == 2


def test_slot_wakes_a_waiting_taker_and_close_releases_it():
    slot: LatestFrameSlot[str] = LatestFrameSlot()
    taken = []
    worker = threading.Thread(target=lambda: taken.append(slot.take(timeout=5)))
    worker.start()
    time.sleep(0.05)
    slot.put("frame")
    worker.join(timeout=2)
    assert taken == ["frame"]

    started = time.monotonic()
    worker = threading.Thread(target=lambda: taken.append(slot.take(timeout=5)))
    worker.start()
    slot.close()
    worker.join(timeout=2)
    assert taken[-1] is None and time.monotonic() - started < 2 and slot.closed


def test_slots_sharing_a_condition_give_the_worker_every_waiting_frame_at_once():
    condition = threading.Condition()
    front: LatestFrameSlot[str] = LatestFrameSlot(condition)
    rear: LatestFrameSlot[str] = LatestFrameSlot(condition)
    side: LatestFrameSlot[str] = LatestFrameSlot(condition)
    assert take_waiting([front, rear, side], condition, timeout=0.05) == []  # nothing: waits, gives up
    front.put("f1")
    front.put("f2")  # latest frame wins, per camera
    side.put("s1")
    assert take_waiting([front, rear, side], condition, timeout=0) == [(0, "f2"), (2, "s1")]
    assert front.dropped == 1 and side.dropped == 0

    taken = []
    worker = threading.Thread(target=lambda: taken.append(take_waiting([front, rear, side], condition, timeout=5)))
    worker.start()
    time.sleep(0.05)
    rear.put("r1")  # any camera's frame wakes the worker
    worker.join(timeout=2)
    assert taken == [[(1, "r1")]]

    rear.put("r2")
    rear.close()
    assert take_waiting([front, rear, side], condition, timeout=5) == []  # closed: nothing more


# ---- log limiter --------------------------------------------------------------------------------
def test_repeat_limiter_logs_each_text_once_per_period_and_counts_repeats():
    clock = FakeClock()
    limiter = RepeatLimiter(period_s=5.0, clock=clock)
    assert limiter.should_log("bad encoding") == (True, 0)
    assert limiter.should_log("bad encoding") == (False, 0)
    assert limiter.should_log("zero size") == (True, 0)  # a different problem shows at once
    clock.now += 1.0
    assert limiter.should_log("bad encoding") == (False, 0)
    clock.now += 5.0
    assert limiter.should_log("bad encoding") == (True, 2)


def test_repeat_limiter_memory_is_bounded():
    clock = FakeClock()
    limiter = RepeatLimiter(period_s=5.0, clock=clock, max_keys=3)
    for index in range(10):
        clock.now += 0.01
        assert limiter.should_log(f"text {index}")[0]
    assert len(limiter._last_logged) == 3


# ---- diagnostics --------------------------------------------------------------------------------
def test_rate_meter_and_latency_window():
    clock = FakeClock()
    meter = diag.RateMeter(window_s=5.0, clock=clock)
    assert meter.rate() == 0.0
    for _ in range(11):
        meter.tick()
        clock.now += 0.1
    assert meter.rate() == pytest.approx(10.0, rel=0.1)
    clock.now += 10.0
    assert meter.rate() == 0.0  # everything left the window

    window = diag.LatencyWindow(size=100)
    assert math.isnan(window.percentile_ms(50))
    for ms in range(1, 101):
        window.add(ms / 1000.0)
    assert window.percentile_ms(50) == pytest.approx(50.5)
    assert window.percentile_ms(95) == pytest.approx(95.05)
    window.add(1.0)  # the oldest (1 ms) leaves the window
    assert window.percentile_ms(0) == pytest.approx(2.0)


def _array(stats: diag.PipelineStats, points: bool = True):
    status = diag.diagnostic_status(
        stats.snapshot(mark_reported=True), "/ns/space_clip_depth: depth estimation", "cpu",
        {diag.KEY_DEVICE: "cpu (fp32)"}, points_enabled=points,
    )
    return diag.diagnostic_array([status], Time(sec=5))


def test_diagnostics_levels_and_values():
    clock = FakeClock()
    stats = diag.PipelineStats(clock=clock)
    array = _array(stats)
    (status,) = array.status
    assert status.level == DiagnosticStatus.WARN and status.message == "no input images"
    assert array.header.stamp.sec == 5 and status.hardware_id == "cpu"

    for _ in range(3):
        stats.frame_received()
        clock.now += 0.1
    stats.frame_skipped()
    stats.frame_dropped()
    stats.frame_published(latency_s=0.2, inference_s=0.1, stamp_age_s=None, batch_size=2)
    stats.frame_published(latency_s=0.2, inference_s=0.1, stamp_age_s=None)
    (status,) = _array(stats).status
    assert status.level == DiagnosticStatus.WARN and "CameraInfo" in status.message
    values = {kv.key: kv.value for kv in status.values}
    assert values[diag.KEY_RECEIVED] == "3" and values[diag.KEY_PROCESSED] == "2"
    assert values[diag.KEY_BATCH_LAST] == "1" and values[diag.KEY_BATCH_LARGEST] == "2"
    assert values[diag.KEY_DROPPED] == "1" and values[diag.KEY_SKIPPED] == "1"
    assert values[diag.KEY_LATENCY_P50] == "200.0" and values[diag.KEY_INFERENCE_P95] == "100.0"
    assert values[diag.KEY_STAMP_AGE_P50] == "n/a" and values[diag.KEY_DEVICE] == "cpu (fp32)"

    stats.camera_info_received()
    assert _array(stats).status[0].level == DiagnosticStatus.OK
    stats.error("frame 1.0 dropped: unsupported encoding")
    (status,) = _array(stats).status
    assert status.level == DiagnosticStatus.ERROR and "unsupported encoding" in status.message
    # The error period was reported: the next report is OK again, the total stays.
    (status,) = _array(stats).status
    assert status.level == DiagnosticStatus.OK
    assert {kv.key: kv.value for kv in status.values}[diag.KEY_ERRORS] == "1"


# ---- log forwarding -------------------------------------------------------------------------------
class RecordingLogger:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def _log(self, level):
        return lambda message: self.lines.append((level, message)) or True

    def __getattr__(self, level):
        return self._log(level)


def test_package_logs_reach_the_ros_logger_at_their_severity():
    ros_logger = RecordingLogger()
    handler = forward_package_logs(ros_logger)
    try:
        logging.getLogger("space_clip_ros.model.factory").warning("decoder has %s weights", "RANDOM")
        logging.getLogger("space_clip_ros.model.backbone").info("loaded")
        logging.getLogger("space_clip_ros.x").error("broken")
        logging.getLogger("space_clip_ros.x").debug("hidden below INFO")
        logging.getLogger("other_package").warning("not ours")
    finally:
        stop_forwarding(handler)
    assert ros_logger.lines == [("warning", "decoder has RANDOM weights"), ("info", "loaded"), ("error", "broken")]
    logging.getLogger("space_clip_ros.x").warning("after stop")
    assert len(ros_logger.lines) == 3


# ---- QoS and topics ---------------------------------------------------------------------------------
def test_qos_profiles():
    sensor = sensor_input_qos(7)
    assert sensor.reliability == ReliabilityPolicy.BEST_EFFORT
    assert sensor.history == HistoryPolicy.KEEP_LAST and sensor.depth == 7
    assert sensor.durability == DurabilityPolicy.VOLATILE
    assert output_qos("reliable").reliability == ReliabilityPolicy.RELIABLE
    assert output_qos("best_effort").reliability == ReliabilityPolicy.BEST_EFFORT
    with pytest.raises(ValueError, match="reliability"):
        output_qos("sometimes")


def _resolver(remaps: dict[str, str], namespace: str = "/robot"):
    def resolve(name: str, only_expand: bool = False) -> str:
        expanded = name if name.startswith("/") else f"{namespace}/{name}"
        return expanded if only_expand else remaps.get(expanded, expanded)

    return resolve


def test_compressed_topic_follows_the_image_remapping_like_image_transport():
    assert compressed_image_topic(_resolver({})) == "/robot/image/compressed"
    remapped_image = _resolver({"/robot/image": "/camera/color/image_raw"})
    assert compressed_image_topic(remapped_image) == "/camera/color/image_raw/compressed"
    explicit = _resolver({"/robot/image": "/a", "/robot/image/compressed": "/b/jpeg"})
    assert compressed_image_topic(explicit) == "/b/jpeg"
    # A camera's image topic, the same way.
    front = _resolver({"/robot/front/image": "/cam_front/image_raw"})
    assert compressed_image_topic(front, camera_topics("front").image) == "/cam_front/image_raw/compressed"


def test_each_camera_has_every_topic_under_its_name():
    single, front = camera_topics(""), camera_topics("front")
    assert (single.image, single.camera_info, single.name("points")) == ("image", "camera_info", "points")
    assert (front.image, front.camera_info) == ("front/image", "front/camera_info")
    assert front.outputs["depth/image"] == "front/depth/image" and front.outputs["points"] == "front/points"
    assert len(front.outputs) == len(single.outputs)
    assert all(name.startswith("front/") for name in front.outputs.values())


def test_topic_table():
    table = render_markdown_table()
    for topic in TOPICS:
        assert f"| `{topic.name}` | {topic.message_type} |" in table
    assert {t.name for t in TOPICS if t.direction == "publishes"} >= {
        "depth/image", "depth/camera_info", "points", "depth/colored", "clip/image_embedding", "/diagnostics"}


# ---- backbone selection ----------------------------------------------------------------------------
def test_backbone_comes_from_the_checkpoint_unless_parameters_describe_one():
    assert backbone_config(DepthNodeSettings.defaults()) is None
    tiny = backbone_config(DepthNodeSettings.from_values({"vision_overrides": '{"width": 64}'}))
    assert (tiny.name, tiny.pretrained, tiny.vision_overrides) == ("ViT-B-16", None, {"width": 64})
    siglip = backbone_config(DepthNodeSettings.from_values({"backbone": "ViT-B-16-SigLIP", "pretrained": "webli"}))
    assert (siglip.name, siglip.pretrained, siglip.vision_overrides) == ("ViT-B-16-SigLIP", "webli", {})


@pytest.mark.slow  # ONNX export of the model
def test_node_runs_an_exported_onnx_model_like_the_checkpoint(tmp_path, tiny_model_config):
    """backend / exported_model parameters: the node's predictor runs a space-clip-export file."""
    import dataclasses

    import numpy as np

    from space_clip_ros.inference.rewrites.export import ExportOptions, export_onnx
    from space_clip_ros.model import SpaceClip, make_record, save_checkpoint, save_vision_weights
    from space_clip_ros.model.config import ModelConfig
    from space_clip_ros.ros.model_setup import build_predictor, inference_options

    # The backbone's weights come from a file, so the checkpoint, the export and the node agree.
    weights = save_vision_weights(SpaceClip(tiny_model_config).backbone, tmp_path / "vision.safetensors")
    backbone = dataclasses.replace(tiny_model_config.backbone, pretrained=str(weights))
    model = SpaceClip(ModelConfig(backbone=backbone, decoder=tiny_model_config.decoder)).eval()
    save_checkpoint(tmp_path / "ckpt", model.decoder.state_dict(), make_record(model))
    onnx_path = tmp_path / "model.onnx"
    export_onnx(model, onnx_path, ExportOptions())
    common = {"checkpoint": str(tmp_path / "ckpt"), "device": "cpu"}
    torch_predictor = build_predictor(DepthNodeSettings.from_values({**common, "backend": "torch", "optimize": False}))
    ort_settings = DepthNodeSettings.from_values({**common, "backend": "onnxruntime", "exported_model": str(onnx_path)})
    assert inference_options(ort_settings).onnxruntime.model_path == str(onnx_path)
    ort_predictor = build_predictor(ort_settings)
    image = np.random.default_rng(3).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    np.testing.assert_allclose(ort_predictor.predict(image), torch_predictor.predict(image), rtol=1e-4, atol=1e-4)

    assert ort_predictor.model is None and torch_predictor.model is not None  # the graph holds the weights

    with pytest.raises(FileNotFoundError, match="space-clip-export"):
        inference_options(DepthNodeSettings.from_values({**common, "backend": "onnxruntime",
                                                          "exported_model": str(tmp_path / "none.onnx")}))
    with pytest.raises(ValueError, match="needs backend onnxruntime or tensorrt"):
        inference_options(DepthNodeSettings.from_values({**common, "exported_model": str(onnx_path)}))


def test_an_interrupt_while_the_node_starts_is_a_clean_stop_and_a_real_failure_is_not(run_python):
    """SIGINT during start-up shuts rclpy's context down, so the node's next publisher fails: that
    must end the process with 0 and say it stopped, not a FATAL 'cannot load the model' and 1 (seen
    when a test stopped a node right after its model was loaded)."""
    result = run_python("""
        import rclpy
        from space_clip_ros.ros.node_main import run_node

        errors = [((RuntimeError,), "cannot load the model", 1)]

        def interrupted_context():
            rclpy.try_shutdown()  # what rclpy's SIGINT handler does while the node is being made
            raise RuntimeError("Failed to create publisher: rcl node's context is invalid")

        def ctrl_c():
            raise KeyboardInterrupt

        def broken():
            raise RuntimeError("checkpoint does not fit this model")

        for create in (interrupted_context, ctrl_c, broken):
            print("exit", create.__name__, run_node("t", [], create, startup_errors=errors, command_line_exit_code=2))

        # SIGINT just after the node was made, while the executor builds its wait set (seen once in a
        # DDS test): rclpy's handler has shut the context down and the executor raises RCLError.
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy

        def spin_into_a_shut_down_context(self):
            rclpy.try_shutdown()
            raise _rclpy.RCLError("failed to initialize wait set: the given context is not valid")

        SingleThreadedExecutor.spin = spin_into_a_shut_down_context
        print("exit after start", run_node("t", [], lambda: rclpy.create_node("made"), startup_errors=errors,
                                           command_line_exit_code=2))

        def spin_failing(self):  # a real error while running still propagates
            raise _rclpy.RCLError("something else went wrong")

        SingleThreadedExecutor.spin = spin_failing
        try:
            run_node("t", [], lambda: rclpy.create_node("made"), startup_errors=errors, command_line_exit_code=2)
        except _rclpy.RCLError as exc:
            print("raised", exc)
    """)
    assert result.returncode == 0, result.stderr
    assert "exit interrupted_context 0" in result.stdout and "exit ctrl_c 0" in result.stdout
    assert "exit broken 1" in result.stdout and "exit after start 0" in result.stdout
    assert "raised something else went wrong" in result.stdout
    assert result.stderr.count("stopped while starting") == 2
    assert "[FATAL]" in result.stderr and "cannot load the model: checkpoint does not fit this model" in result.stderr
