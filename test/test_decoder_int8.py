"""Static int8 decoder convolutions (inference/rewrites/decoder_int8.py): which convolutions, the
calibration frames, the engine, backend auto's use of camera frames and space-clip-export.

Real parts throughout: the tiny open_clip model with a realistic decoder, graphs exported and
quantised by ONNX Runtime, frames written and read as PNG files; the real RGB-D photos of
shared/data are used where present.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from space_clip_ros.cli.export import main as export_main
from space_clip_ros.data.formats import write_rgb
from space_clip_ros.inference.benchmarking.synthetic import synthetic_camera_image
from space_clip_ros.inference.rewrites import decoder_int8 as decoder_int8_module
from space_clip_ros.inference.rewrites.decoder_int8 import (
    CalibrationFrameRecorder,
    calibration_files,
    decoder_int8_convolutions,
    float_decoder_part,
    graph_inputs,
    has_calibration_frames,
    kept_frames_folder,
    quantize_onnx_decoder_int8,
    read_calibration_frames,
)
from space_clip_ros.inference.rewrites.export import PIXELS_INPUT, ExportOptions, export_onnx
from space_clip_ros.inference.runtime import auto_select
from space_clip_ros.inference.runtime.auto_select import InferencePath, candidate_paths, predictor_for, select_predictor
from space_clip_ros.inference.runtime.options import InferenceOptions, OnnxRuntimeOptions
from space_clip_ros.inference.runtime.predictor import DepthPredictor
from space_clip_ros.inference.runtime.tolerance import DEPTH_TOLERANCE, depth_agreement
from space_clip_ros.model import BackboneConfig, DecoderConfig, ModelConfig, SpaceClip, make_record, save_checkpoint
from space_clip_ros.model.backbone import save_vision_weights

pytestmark = pytest.mark.usefixtures("single_torch_thread")
SIZE = (48, 64)  # depth (H, W)
REAL_FRAMES = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_rgbd"
ORT_INT8_DECODER = InferencePath("onnxruntime", "fp32", int8=True, int8_decoder=True)


REALISTIC_FRAME = (96, 128, 0)  # conftest's frame: height, width, seed
REALISTIC_SEEDS = (0, 0)  # conftest's realistic_model: torch seed, make_decoder_realistic seed


@pytest.fixture(scope="module")
def model(realistic_model) -> SpaceClip:
    return realistic_model


def write_frames(folder: Path, seeds, size=(96, 128)) -> list[Path]:
    return [write_rgb(folder / f"frame_{seed:03d}.png", synthetic_camera_image(*size, seed=seed)) for seed in seeds]


def int8_convolution_weights(path: Path) -> tuple[set[str], set[str]]:
    """(decoder Conv nodes whose weight comes through a DequantizeLinear, those with a float weight)."""
    graph = onnx.load(str(path)).graph
    dequantized = {node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    convolutions = [node for node in graph.node if node.op_type == "Conv" and "/decoder/" in node.name]
    quantized = {node.name for node in convolutions if node.input[1] in dequantized}
    return quantized, {node.name for node in convolutions} - quantized


def test_the_rule_keeps_the_full_resolution_stage_heads_and_projections_float():
    config = DecoderConfig()  # four stages: semantic_stages.3 is the full-resolution one
    kept = ["/model/decoder/semantic_stages.3/fuse/fuse.0/Conv", "/decoder/head/net/net.1/Conv",
            "/model/decoder/aux_heads.0/net/net.0/net.0.0/Conv", "/model/decoder/semantic_proj.2/Conv",
            "/decoder/structural_proj.0/Conv"]
    quantised = ["/model/decoder/semantic_stages.2/refine/body/body.0/Conv",
                 "/model/decoder/structural_stages.1/fuse/fuse.0/Conv",
                 "/decoder/semantic_stages.0/up/conv/conv.0/Conv",
                 "/model/decoder/semantic_stages.3x/Conv"]
    assert all(float_decoder_part(name, config) for name in kept)
    assert not any(float_decoder_part(name, config) for name in quantised)
    assert not float_decoder_part("/backbone/transformer/resblocks.0/Conv", config)  # not the decoder's


def test_calibration_files_from_a_folder_a_glob_and_the_limit(tmp_path):
    files = write_frames(tmp_path / "frames", range(6))
    (tmp_path / "frames" / "notes.txt").write_text("not a frame")
    assert calibration_files(tmp_path / "frames") == files
    assert calibration_files(str(tmp_path / "frames" / "frame_00[0-2].png")) == files[:3]
    assert calibration_files(tmp_path / "frames", limit=3) == [files[0], files[2], files[5]]  # evenly spaced
    frames = read_calibration_frames(files[:2])
    assert [frame.shape for frame in frames] == [(96, 128, 3)] * 2 and frames[0].dtype == np.uint8
    for empty in (tmp_path / "none", str(tmp_path / "frames" / "*.jpg")):
        with pytest.raises(ValueError, match="no png/jpg/jpeg/bmp/ppm/pgm files"):
            calibration_files(empty)


def test_the_engine_refuses_an_int8_decoder_without_camera_frames(model):
    options = InferenceOptions(backend="onnxruntime",
                               onnxruntime=OnnxRuntimeOptions(quantize_int8=True, quantize_decoder_int8=True))
    with pytest.raises(ValueError, match="needs calibration_images: frames from the camera"):
        DepthPredictor(model, device="cpu", options=options)


@pytest.mark.slow  # exports, calibrates and quantises a graph, then an engine does it again
def test_quantised_graph_and_engine_agree_with_the_model_on_held_out_frames(tmp_path, model):
    calibration = write_frames(tmp_path / "camera", range(10, 14))
    path, quantised = tmp_path / "model.onnx", tmp_path / "model_int8_decoder.onnx"
    export_onnx(model, path, ExportOptions(dynamic_batch=True))
    feeds = [{PIXELS_INPUT: pixels} for pixels in graph_inputs(model, read_calibration_frames(calibration), False)]
    count = quantize_onnx_decoder_int8(path, quantised, model.decoder.config, feeds)
    selected = set(decoder_int8_convolutions(path, model.decoder.config))
    int8, floating = int8_convolution_weights(quantised)
    assert count == len(selected) > 0 and int8 == selected
    assert floating and all(float_decoder_part(name, model.decoder.config) for name in floating)

    options = InferenceOptions(backend="onnxruntime", onnxruntime=OnnxRuntimeOptions(
        quantize_int8=True, quantize_decoder_int8=True, calibration_images=tuple(map(str, calibration)),
        intra_op_threads=1))
    fast = DepthPredictor(model, device="cpu", options=options)
    assert "int8 decoder convolutions (static, calibrated on 4 camera frames)" in fast.describe()
    exact = DepthPredictor(model, device="cpu")
    held_out = np.stack([synthetic_camera_image(96, 128, seed=seed) for seed in (20, 21, 22)])
    agreement = depth_agreement(fast.infer(held_out, SIZE).depth, exact.infer(held_out, SIZE).depth)
    assert DEPTH_TOLERANCE.problem(agreement) is None, agreement
    assert agreement["median_relative_error"] > 0  # it is quantised, not the float graph


@pytest.mark.slow
@pytest.mark.skipif(not REAL_FRAMES.is_dir(), reason="shared/data/real_rgbd is not present")
def test_calibrated_on_real_photos_the_depth_holds_on_other_real_photos(tmp_path, model):
    """The case the module notes measure: calibration and check on a real camera's frames."""
    photos = calibration_files(str(REAL_FRAMES / "*" / "color_*.png"))
    calibrate, check = photos[0::2], photos[1::2]
    options = InferenceOptions(backend="onnxruntime", onnxruntime=OnnxRuntimeOptions(
        quantize_int8=True, quantize_decoder_int8=True, calibration_images=tuple(map(str, calibrate)),
        intra_op_threads=1))
    fast = DepthPredictor(model, device="cpu", options=options)
    exact = DepthPredictor(model, device="cpu")
    for frame in read_calibration_frames(check):
        agreement = depth_agreement(fast.infer(frame[None], SIZE).depth, exact.infer(frame[None], SIZE).depth)
        assert DEPTH_TOLERANCE.problem(agreement) is None, agreement


def test_auto_offers_the_int8_decoder_only_with_camera_frames_on_a_cpu_with_int8_dot_products(
        tmp_path, monkeypatch, caplog):
    cpu = torch.device("cpu")
    monkeypatch.setattr(auto_select, "has_int8_dot_product", lambda: True)
    assert ORT_INT8_DECODER in candidate_paths(cpu, calibrated=True)
    assert ORT_INT8_DECODER not in candidate_paths(cpu)
    monkeypatch.setattr(auto_select, "has_int8_dot_product", lambda: False)
    assert ORT_INT8_DECODER not in candidate_paths(cpu, calibrated=True)
    assert ORT_INT8_DECODER.name == "onnxruntime int8 int8-decoder"

    files = write_frames(tmp_path / "five", range(5))
    assert auto_select.split_camera_frames(tmp_path / "five") == (files[0::2], files[1::2])
    assert auto_select.split_camera_frames(None) == ([], [])
    write_frames(tmp_path / "one", [0])
    with caplog.at_level(logging.WARNING, logger=auto_select.__name__):
        assert auto_select.split_camera_frames(tmp_path / "one") == ([], [])
    assert "one frame only" in caplog.text

    options = ORT_INT8_DECODER.options(cpu, 1, files[:2])
    assert options.onnxruntime.quantize_decoder_int8 and options.onnxruntime.calibration_images == tuple(
        map(str, files[:2]))
    plain = InferencePath("onnxruntime", "fp32", int8=True).options(cpu, 1, files[:2])
    assert not plain.onnxruntime.quantize_decoder_int8 and plain.onnxruntime.calibration_images == ()


class BrightFramesWrong:
    """An engine whose depth is 20 % too deep on bright frames only (normalised pixels mean > 1)."""

    def __init__(self, engine) -> None:
        self.engine, self.name = engine, engine.name

    def run(self, pixels, *args, **kwargs):
        prediction = self.engine.run(pixels, *args, **kwargs)
        factor = 1.2 if float(pixels.float().mean()) > 1.0 else 1.0
        return dataclasses.replace(prediction, depth=prediction.depth * factor)


def test_auto_checks_every_candidate_on_the_camera_frames_too(tmp_path, model):
    bright = tmp_path / "bright"
    for seed in range(4):
        frame = np.clip(synthetic_camera_image(96, 128, seed=seed).astype(np.int16) + 200, 0, 255).astype(np.uint8)
        write_rgb(bright / f"{seed}.png", frame)
    fast, slow = InferencePath("torch", "fp32", int8=True), InferencePath("torch", "fp32")

    def build(path: InferencePath) -> DepthPredictor:
        predictor = DepthPredictor(model, device="cpu", options=path.options(torch.device("cpu"), 1))
        if path == fast:
            predictor.engine = BrightFramesWrong(predictor.engine)
        return predictor

    def measure(runs):
        return {name: (1.0 if name == fast.name else 10.0) for name in runs}

    common = {"output_size": SIZE, "threads": 1, "candidates": [fast, slow], "build": build, "measure": measure}
    assert select_predictor(model, None, "cpu", **common).auto_choice.path == fast, "synthetic frames only: fine"
    choice = select_predictor(model, None, "cpu", calibration_images=bright, **common).auto_choice
    assert choice.path == slow and choice.candidates[fast.name].startswith("rejected: median relative depth error")


@pytest.mark.slow  # the device's real candidates, measured on the tiny model
def test_real_selection_with_camera_frames_measures_the_int8_decoder_and_keys_the_cache(tmp_path, model,
                                                                                       monkeypatch):
    monkeypatch.setattr(auto_select, "has_int8_dot_product", lambda: True)  # offered on any CPU for the test
    files = write_frames(tmp_path / "camera", range(30, 34))
    cache = tmp_path / "auto.json"
    predictor = predictor_for(model, None, device="cpu", output_size=SIZE, cache_path=cache, threads=1,
                              calibration_images=str(tmp_path / "camera"))
    outcome = predictor.auto_choice.candidates[ORT_INT8_DECODER.name]
    assert outcome.endswith(" ms") or outcome.startswith("rejected: "), outcome  # built and checked
    (entry,) = auto_select.AutoCache(cache)._entries().values()
    assert entry["key"]["camera_frames"].startswith("sha256:")
    assert ORT_INT8_DECODER.name in entry["key"]["candidates"]
    # Other frames: another key, measured again.
    write_rgb(files[0], synthetic_camera_image(96, 128, seed=99))
    again = predictor_for(model, None, device="cpu", output_size=SIZE, cache_path=cache, threads=1,
                          calibration_images=str(tmp_path / "camera"))
    assert again.auto_choice.measured_now


def test_a_forced_onnxruntime_path_takes_the_camera_frames(tmp_path, model, monkeypatch, caplog):
    write_frames(tmp_path / "camera", range(3))
    calls: list[OnnxRuntimeOptions] = []

    class Recorder(DepthPredictor):
        def __init__(self, *args, options, **kwargs):
            calls.append(options.onnxruntime)
            super().__init__(*args, options=dataclasses.replace(options, backend="torch"), **kwargs)

    monkeypatch.setattr(auto_select, "DepthPredictor", Recorder)
    monkeypatch.setattr(auto_select, "has_int8_dot_product", lambda: True)
    predictor_for(model, device="cpu", backend="onnxruntime", cache_path=None,
                  calibration_images=str(tmp_path / "camera"))
    assert calls[-1].quantize_decoder_int8 and len(calls[-1].calibration_images) == 3
    monkeypatch.setattr(auto_select, "has_int8_dot_product", lambda: False)
    with caplog.at_level(logging.WARNING, logger=auto_select.__name__):
        predictor_for(model, device="cpu", backend="onnxruntime", cache_path=None,
                      calibration_images=str(tmp_path / "camera"))
    assert not calls[-1].quantize_decoder_int8 and "no VNNI / AMX" in caplog.text
    with caplog.at_level(logging.WARNING, logger=auto_select.__name__):
        predictor_for(model, device="cpu", backend="torch", cache_path=None,
                      calibration_images=str(tmp_path / "camera"))
    assert "this torch path does not use them" in caplog.text


@pytest.mark.slow  # exports and quantises a whole graph
def test_export_cli_writes_an_int8_decoder_calibrated_on_camera_frames(tmp_path, model, capsys):
    weights = save_vision_weights(model.backbone, tmp_path / "tiny_vision.safetensors")
    backbone = BackboneConfig(name="ViT-B-16", pretrained=str(weights),
                              vision_overrides=dict(model.config.backbone.vision_overrides))
    local = SpaceClip(ModelConfig(backbone=backbone, decoder=model.config.decoder))
    local.decoder.load_state_dict(model.decoder.state_dict())
    checkpoint = tmp_path / "ckpt"
    save_checkpoint(checkpoint, local.decoder.state_dict(), make_record(local))
    write_frames(tmp_path / "camera", range(3), size=(60, 80))
    out = tmp_path / "robot.onnx"

    base = ["--checkpoint", str(checkpoint), "--out", str(out), "--image-size", "60", "80", "--no-check"]
    assert export_main(base + ["--int8-decoder"]) == 2
    assert "--int8-decoder needs --int8 and --calibration-images" in capsys.readouterr().err
    assert export_main(base + ["--int8", "--int8-decoder", "--calibration-images", str(tmp_path / "camera")]) == 0
    assert "decoder convolutions calibrated on 3 camera frames" in capsys.readouterr().out
    int8, _floating = int8_convolution_weights(out.with_suffix(".int8.onnx"))
    assert int8 == set(decoder_int8_convolutions(out, model.decoder.config)) and int8
    assert not list(tmp_path.glob("*.partial"))


# ---- calibration_images: auto (the node keeps its camera's frames for the next start) --------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_recorder_keeps_spaced_frames_and_shows_only_a_whole_set(tmp_path):
    clock = FakeClock()
    folder = tmp_path / "camera_frames" / "robot__depth"
    (folder.parent / "robot__depth.partial").mkdir(parents=True)
    (folder.parent / "robot__depth.partial" / "frame_007.png").write_bytes(b"left by an interrupted run")
    recorder = CalibrationFrameRecorder(folder, count=3, interval_s=1.0, clock=clock)
    frames = [synthetic_camera_image(24, 32, seed=seed) for seed in range(5)]
    assert recorder.offer(frames[0]) is False and not folder.exists()
    clock.now = 0.5
    assert recorder.offer(frames[1]) is False  # too soon: not kept
    clock.now = 1.0
    assert recorder.offer(frames[2]) is False and not folder.exists(), "half a set is never visible"
    assert not has_calibration_frames(folder)
    clock.now = 2.5
    assert recorder.offer(frames[3]) is True and recorder.done
    kept = calibration_files(folder)
    assert [path.name for path in kept] == ["frame_000.png", "frame_001.png", "frame_002.png"]
    np.testing.assert_array_equal(read_calibration_frames(kept[1:2])[0], frames[2])  # PNG: lossless
    assert has_calibration_frames(folder) and not folder.with_name("robot__depth.partial").exists()
    clock.now = 10.0
    assert recorder.offer(frames[4]) is False and len(calibration_files(folder)) == 3


def test_the_recorder_stops_with_a_warning_when_it_cannot_write(tmp_path, caplog):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the folder should go")
    recorder = CalibrationFrameRecorder(blocker / "node", count=2, interval_s=0.0)
    with caplog.at_level(logging.WARNING, logger=decoder_int8_module.__name__):
        assert recorder.offer(synthetic_camera_image(24, 32)) is False
    assert recorder.done and recorder.failed and "stops recording" in caplog.text
    with pytest.raises(ValueError, match="at least 2 frames"):
        CalibrationFrameRecorder(tmp_path / "x", count=1)


def test_calibration_images_auto_uses_kept_frames_or_plans_to_keep_them(tmp_path):
    from space_clip_ros.ros.model_setup import CalibrationPlan, calibration_plan, predictor_settings
    from space_clip_ros.ros.parameters import DepthNodeSettings

    cache = tmp_path / "cache" / "auto.json"
    auto = DepthNodeSettings.from_values({"calibration_images": "auto", "auto_cache": str(cache)})
    folder = kept_frames_folder(cache, "/robot1/space_clip_depth")
    assert folder == tmp_path / "cache" / "camera_frames" / "robot1__space_clip_depth"
    assert calibration_plan(auto, "/robot1/space_clip_depth") == CalibrationPlan(None, folder)
    assert predictor_settings(auto)["calibration_images"] is None  # "auto" is never read as a glob
    write_frames(folder, range(2))
    assert calibration_plan(auto, "/robot1/space_clip_depth") == CalibrationPlan(str(folder))
    assert predictor_settings(auto, calibration_plan(auto, "/robot1/space_clip_depth"))[
        "calibration_images"] == str(folder)
    given = DepthNodeSettings.from_values({"calibration_images": "/data/frames/*.png"})
    assert calibration_plan(given, "/n") == CalibrationPlan("/data/frames/*.png")
    assert calibration_plan(DepthNodeSettings.defaults(), "/n") == CalibrationPlan(None)
