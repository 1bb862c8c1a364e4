"""The depth pipeline switching to the path chosen with the camera frames it kept (``calibration_images:
auto``), without a restart: real ROS messages, real tiny predictors, a real frame recorder writing
PNG files, the pipeline's own worker thread. No DDS (test_ros_calibration_frames covers the node)."""

from __future__ import annotations

import threading

import pytest
import ros_helpers as rh
import torch
from ros_helpers import FRAME_ID, HEIGHT, WIDTH, make_stamp, pattern_image

from space_clip_ros.demo.processes import wait_until
from space_clip_ros.inference.rewrites.decoder_int8 import CalibrationFrameRecorder, calibration_files
from space_clip_ros.inference.runtime.memory import current_memory, second_selection_memory_problem
from space_clip_ros.inference.runtime.options import unoptimized_options
from space_clip_ros.inference.runtime.predictor import DepthPredictor
from space_clip_ros.model import SpaceClip
from space_clip_ros.ros.depth_pipeline import DepthPipeline, path_name
from space_clip_ros.ros.parameters import DepthNodeSettings

pytestmark = pytest.mark.usefixtures("single_torch_thread")


class RecordingLogger:
    """The node logger's four levels, kept as (level, text) lines."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def _record(self, level: str, message: str) -> bool:
        self.lines.append((level, message))
        return True

    def debug(self, message: str) -> bool:
        return self._record("debug", message)

    def info(self, message: str) -> bool:
        return self._record("info", message)

    def warning(self, message: str) -> bool:
        return self._record("warning", message)

    def error(self, message: str) -> bool:
        return self._record("error", message)

    def fatal(self, message: str) -> bool:
        return self._record("fatal", message)

    def text(self) -> str:
        return "\n".join(f"[{level}] {message}" for level, message in self.lines)


@pytest.fixture(scope="module")
def model(tiny_model_config) -> SpaceClip:
    torch.manual_seed(0)
    return SpaceClip(tiny_model_config).eval()


def exact(model: SpaceClip) -> DepthPredictor:
    return DepthPredictor(model, device="cpu", precision="fp32", options=unoptimized_options("torch"))


def run_pipeline(tmp_path, model, recalibrate, frames: int = 6):
    """A started pipeline with a recorder of 2 frames; ``frames`` frames fed one at a time. Returns the
    pipeline, its logger, the (predictor, outputs) pairs published and the stop function."""
    logger = RecordingLogger()
    settings = DepthNodeSettings.defaults()
    pipeline = DepthPipeline(exact(model), settings=lambda: settings, logger=logger, now_ns=lambda: 0,
                             model_facts={"model": "first"},
                             frame_recorder=CalibrationFrameRecorder(tmp_path / "kept", count=2, interval_s=0.0),
                             recalibrate=recalibrate)
    published: list[DepthPredictor] = []
    done = threading.Event()

    def publish(camera, outputs) -> bool:
        published.append(pipeline.predictor)
        done.set()
        return True

    pipeline.start(publish)
    (camera,) = pipeline.cameras
    for index in range(frames):
        done.clear()
        stamp = make_stamp(10 + index, 0)
        pipeline.on_image(camera, rh.image_message(pattern_image(HEIGHT, WIDTH, seed=index), "rgb8", stamp, FRAME_ID))
        assert done.wait(60), logger.text()
        if index == 1:  # the set is complete after the second frame: the choice runs in the background
            assert pipeline.recalibration is not None
            pipeline.recalibration.join(60)
    return pipeline, logger, published


def test_the_pipeline_switches_to_the_path_chosen_with_the_kept_frames(tmp_path, model):
    torch.manual_seed(1)
    calibrated = DepthPredictor(SpaceClip(model.config).eval(), device="cpu", precision="fp32",
                                options=unoptimized_options("onnxruntime"))
    kept_when_called: list[int] = []

    def recalibrate():
        kept_when_called.append(len(calibration_files(tmp_path / "kept")))
        return calibrated, {"model": "calibrated"}

    pipeline, logger, published = run_pipeline(tmp_path, model, recalibrate)
    try:
        assert kept_when_called == [2]  # called once, on the whole set
        assert published[0] is not calibrated and published[-1] is calibrated  # served before and after
        assert pipeline.predictor is calibrated
        assert f"switched the inference path to {path_name(calibrated)}" in logger.text()
        status = pipeline.diagnostics("node", make_stamp(0, 0)).status[0]
        assert {kv.key: kv.value for kv in status.values}["model"] == "calibrated"
    finally:
        pipeline.stop()


def test_the_same_path_or_a_failed_choice_keeps_the_current_predictor_serving(tmp_path, model):
    first: list[DepthPredictor] = []

    serving_threads = torch.get_num_threads()

    def same_path():
        torch.set_num_threads(serving_threads + 1)  # as auto does for its candidates
        return exact(model), {"model": "again"}

    pipeline, logger, published = run_pipeline(tmp_path / "same", model, same_path)
    try:
        first.append(published[0])
        assert all(predictor is published[0] for predictor in published)
        assert "with the kept camera frames the inference path stays torch" in logger.text()
        assert torch.get_num_threads() == serving_threads  # the current path's setting is back
    finally:
        pipeline.stop()

    def broken():
        torch.set_num_threads(serving_threads + 1)
        raise RuntimeError("calibration failed: disk full")

    pipeline, logger, published = run_pipeline(tmp_path / "broken", model, broken)
    try:
        assert len(published) == 6 and all(predictor is published[0] for predictor in published)
        assert wait_until(lambda: any(level == "warning" and "calibration failed: disk full" in text
                                      and "staying on torch" in text for level, text in logger.lines), 10)
        assert torch.get_num_threads() == serving_threads
    finally:
        pipeline.stop()


def test_choosing_again_waits_for_the_next_start_when_memory_is_short():
    gib = 2**30
    assert second_selection_memory_problem(2 * gib, 8 * gib) is None
    problem = second_selection_memory_problem(2 * gib, int(2.5 * gib))  # 2.0 x 1.25 + 0.5 GB headroom
    assert problem == "it needs about 3.0 GB free beside this process (2.0 GB) and 2.5 GB are available"
    rss, available = current_memory()
    assert rss > 50 * 2**20 and available > 0  # this interpreter holds torch
