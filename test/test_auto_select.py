"""Backend auto (inference/runtime/auto_select.py) and the CPU fast path's pieces it chooses among.

The selection is tested with an injected timer (which candidate is "fastest" is then known), an
injected builder where a candidate must fail or lie outside the tolerance, and the real tiny
model otherwise; the cache is a file in tmp_path.
"""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import torch

from space_clip_ros.data.formats import write_rgb
from space_clip_ros.inference.benchmarking.synthetic import make_decoder_realistic, synthetic_camera_image
from space_clip_ros.inference.rewrites.attention import SdpaSelfAttention
from space_clip_ros.inference.runtime import auto_select
from space_clip_ros.inference.runtime.auto_select import (
    EXACT_PATH,
    AutoCache,
    InferencePath,
    cache_key,
    candidate_paths,
    key_hash,
    predictor_for,
    select_predictor,
)
from space_clip_ros.inference.runtime.cpu_features import bf16_supported, cpu_model_and_flags
from space_clip_ros.inference.runtime.options import (
    BACKEND_CHOICES,
    PRECISION_CHOICES,
    InferenceOptions,
    OnnxRuntimeOptions,
    TorchOptions,
)
from space_clip_ros.inference.runtime.predictor import DepthPredictor
from space_clip_ros.inference.runtime.tolerance import DEPTH_TOLERANCE, depth_agreement
from space_clip_ros.model import SpaceClip, make_record

SIZE = (48, 64)  # depth (H, W) the tests measure at
TORCH_INT8 = InferencePath("torch", "fp32", int8=True)
TORCH_FP32 = InferencePath("torch", "fp32")  # the exact re-writes only
THREADS = 1  # torch threads of the candidates: quick on a busy machine


@pytest.fixture(scope="module")
def tiny_model(tiny_model_config):
    torch.manual_seed(0)
    model = SpaceClip(tiny_model_config).eval()
    make_decoder_realistic(model, synthetic_camera_image(96, 128))  # depths of metres, not zeros
    return model


def select(model, **arguments) -> DepthPredictor:
    """``select_predictor`` on the CPU at SIZE with THREADS, other arguments as given."""
    return select_predictor(model, None, "cpu", **{"output_size": SIZE, "threads": THREADS, **arguments})


class Timer:
    """An injected ``measure``: fixed latencies per path name, and a count of its calls."""

    def __init__(self, latencies: dict[str, float]) -> None:
        self.latencies, self.calls = latencies, 0

    def __call__(self, runs):
        self.calls += 1
        for run in runs.values():
            run()  # the candidates do run, as the real timer's rounds would
        return {name: self.latencies[name] for name in runs}


class ScaledEngine:
    """A wrong engine: the real one's depth times ``factor``."""

    def __init__(self, engine, factor: float) -> None:
        self.engine, self.factor, self.name = engine, factor, engine.name

    def run(self, *args, **kwargs):
        prediction = self.engine.run(*args, **kwargs)
        return dataclasses.replace(prediction, depth=prediction.depth * self.factor)


def test_auto_picks_the_fastest_candidate_by_the_timer(tiny_model):
    timer = Timer({TORCH_INT8.name: 30.0, TORCH_FP32.name: 10.0})
    predictor = select(tiny_model, candidates=[TORCH_INT8, TORCH_FP32],
                                 measure=timer)
    choice = predictor.auto_choice
    assert timer.calls == 1 and choice.measured_now
    assert choice.path == TORCH_FP32 and choice.latency_ms == 10.0
    assert not predictor.options.torch.quantize_encoder_int8 and predictor.options.torch.sdpa_attention
    assert choice.candidates == {TORCH_FP32.name: "10.0 ms", TORCH_INT8.name: "30.0 ms"}

    timer = Timer({TORCH_INT8.name: 5.0, TORCH_FP32.name: 10.0})
    predictor = select(tiny_model, candidates=[TORCH_INT8, TORCH_FP32],
                                 measure=timer)
    assert predictor.auto_choice.path == TORCH_INT8 and predictor.options.torch.quantize_encoder_int8
    assert "int8-encoder-linear-per-channel" in predictor.describe()


def test_auto_rejects_a_candidate_outside_the_tolerance_and_skips_one_that_fails(tiny_model):
    def build(path: InferencePath) -> DepthPredictor:
        if path.backend == "tensorrt":
            raise RuntimeError("no TensorRT here")
        predictor = DepthPredictor(tiny_model, device="cpu", options=path.options(torch.device("cpu"), THREADS))
        if path == TORCH_INT8:  # 20 % too deep: far outside 3 % median relative error
            predictor.engine = ScaledEngine(predictor.engine, 1.2)
        return predictor

    trt = InferencePath("tensorrt", "fp16")
    timer = Timer({TORCH_INT8.name: 1.0, TORCH_FP32.name: 10.0})
    predictor = select(tiny_model, candidates=[TORCH_INT8, trt, TORCH_FP32],
                                 build=build, measure=timer)
    choice = predictor.auto_choice
    assert choice.path == TORCH_FP32, "the fastest one is wrong, so the next is chosen"
    rejected = choice.candidates[TORCH_INT8.name]
    assert re.fullmatch(r"rejected: median relative depth error (1[89]|2[01])\.\d\d% > 3%", rejected), rejected
    assert choice.candidates[trt.name] == "failed: RuntimeError: no TensorRT here"

    # Nothing valid: the exact model runs.
    predictor = select(tiny_model, candidates=[TORCH_INT8, trt],
                                 build=build, measure=timer)
    assert predictor.auto_choice.path == EXACT_PATH and predictor.auto_choice.latency_ms is None
    assert not predictor.options.torch.sdpa_attention


def test_the_choice_is_cached_and_a_second_start_does_not_measure(tmp_path, tiny_model_config, tiny_model):
    cache = AutoCache(tmp_path / "auto.json")
    built: list[str] = []
    model = tiny_model

    def build(path: InferencePath) -> DepthPredictor:
        built.append(path.name)
        return DepthPredictor(model, device="cpu", options=path.options(torch.device("cpu"), THREADS))

    timer = Timer({TORCH_INT8.name: 5.0, TORCH_FP32.name: 10.0})
    first = select(tiny_model, cache=cache, build=build, measure=timer,
                             candidates=[TORCH_INT8, TORCH_FP32])
    assert timer.calls == 1 and first.auto_choice.measured_now
    saved = json.loads((tmp_path / "auto.json").read_text())
    (entry,) = saved["entries"].values()
    assert entry["name"] == TORCH_INT8.name and entry["latency_ms"] == 5.0
    assert entry["key"]["machine"]["cpu_flags"] == list(cpu_model_and_flags()[1])
    assert entry["key"]["output_size"] == list(SIZE)

    # A restart: a new model object of the same configuration, a timer that must not be called.
    def never(runs):
        raise AssertionError("a cached choice was measured again")

    built.clear()
    model = again = SpaceClip(tiny_model_config).eval()
    make_decoder_realistic(again, synthetic_camera_image(96, 128))
    second = select(again, cache=cache, build=build, measure=never,
                              candidates=[TORCH_INT8, TORCH_FP32])
    assert built == [TORCH_INT8.name], "only the cached path is built"
    assert not second.auto_choice.measured_now and second.auto_choice.latency_ms == 5.0
    assert "cached in" in second.auto_choice.describe()

    # Another output size is another key: measured.
    timer = Timer({TORCH_INT8.name: 5.0, TORCH_FP32.name: 1.0})
    third = select(again, output_size=(96, 128), cache=cache, build=build, measure=timer,
                             candidates=[TORCH_INT8, TORCH_FP32])
    assert timer.calls == 1 and third.auto_choice.path == TORCH_FP32
    assert len(json.loads((tmp_path / "auto.json").read_text())["entries"]) == 2


def test_the_cache_key_follows_model_weights_sizes_and_candidates(tiny_model_config, tiny_model):
    cpu = torch.device("cpu")
    record = make_record(tiny_model)
    base = key_hash(cache_key(tiny_model, record, cpu, "auto", SIZE, None, [TORCH_INT8]))
    assert base == key_hash(cache_key(tiny_model, record, cpu, "auto", SIZE, None, [TORCH_INT8]))
    assert base != key_hash(cache_key(tiny_model, record, cpu, "auto", (96, 128), None, [TORCH_INT8]))
    assert base != key_hash(cache_key(tiny_model, record, cpu, "fp32", SIZE, None, [TORCH_INT8]))
    assert base != key_hash(cache_key(tiny_model, record, cpu, "auto", SIZE, 1, [TORCH_INT8]))
    assert base != key_hash(cache_key(tiny_model, record, cpu, "auto", SIZE, None, [TORCH_INT8, TORCH_FP32]))
    assert base != key_hash(cache_key(tiny_model, None, cpu, "auto", SIZE, None, [TORCH_INT8]))  # untrained
    # Other trained weights (same configuration): another key.
    retrained = SpaceClip(tiny_model_config).eval()
    assert base != key_hash(cache_key(retrained, make_record(retrained), cpu, "auto", SIZE, None, [TORCH_INT8]))
    # Another decoder configuration: another key.
    wider = dataclasses.replace(tiny_model_config, decoder=dataclasses.replace(tiny_model_config.decoder,
                                                                               film_hidden=16))
    other = SpaceClip(wider).eval()
    assert key_hash(cache_key(other, None, cpu, "auto", SIZE, None, [TORCH_INT8])) != key_hash(
        cache_key(tiny_model, None, cpu, "auto", SIZE, None, [TORCH_INT8]))


def test_an_unreadable_cache_is_measured_again(tmp_path, tiny_model):
    path = tmp_path / "auto.json"
    path.write_text("{not json")
    timer = Timer({TORCH_FP32.name: 1.0})
    select(tiny_model, cache=AutoCache(path), measure=timer,
                     candidates=[TORCH_FP32])
    assert timer.calls == 1 and json.loads(path.read_text())["version"] == auto_select.CACHE_VERSION


def test_real_selection_on_the_tiny_model_is_within_tolerance_and_reused(tmp_path, tiny_model):
    """The device's own candidates, the real timer: whatever wins agrees with the exact model."""
    cache_path = tmp_path / "auto.json"
    predictor = predictor_for(tiny_model, None, device="cpu", output_size=SIZE, cache_path=cache_path, threads=THREADS)
    choice = predictor.auto_choice
    names = [path.name for path in candidate_paths(torch.device("cpu"))]
    assert set(choice.candidates) == set(names) and choice.name in names
    assert choice.latency_ms > 0
    exact = DepthPredictor(tiny_model, device="cpu")  # torch eager fp32
    frames = np.stack([synthetic_camera_image(*SIZE, seed=seed) for seed in (5, 6)])
    assert DEPTH_TOLERANCE.problem(depth_agreement(predictor.infer(frames).depth, exact.infer(frames).depth)) is None
    again = predictor_for(tiny_model, None, device="cpu", output_size=SIZE, cache_path=cache_path, threads=THREADS)
    assert not again.auto_choice.measured_now and again.auto_choice.path == choice.path


def test_forced_and_exact_settings_do_not_measure(tiny_model):
    exact = predictor_for(tiny_model, device="cpu", optimize=False, cache_path=None)
    assert exact.auto_choice is None and exact.backend == "torch" and not exact.options.torch.sdpa_attention
    forced = predictor_for(tiny_model, device="cpu", backend="torch", cache_path=None)
    assert forced.auto_choice is None and forced.options.torch.quantize_encoder_int8
    with pytest.raises(ValueError, match="needs backend onnxruntime or tensorrt"):
        predictor_for(tiny_model, device="cpu", exported_model="model.onnx")


def test_candidates_of_a_cpu():
    names = [path.name for path in candidate_paths(torch.device("cpu"))]
    assert names[:1] == ["torch int8"] and {"onnxruntime int8", "onnxruntime fp32"} <= set(names)
    assert "onnxruntime int8 spinning" in names and "onnxruntime fp32 spinning" not in names
    spinning = next(path for path in candidate_paths(torch.device("cpu")) if path.spinning)
    assert spinning.options(torch.device("cpu")).onnxruntime.allow_spinning
    assert not InferencePath("onnxruntime", "fp32", int8=True).options(torch.device("cpu")).onnxruntime.allow_spinning
    assert ("torch int8 bf16" in names) == bf16_supported()
    assert [path.name for path in candidate_paths(torch.device("cpu"), "fp32")] == [
        name for name in names if "bf16" not in name]


def test_onnxruntime_sessions_stop_spinning_when_a_run_ends(monkeypatch):
    import onnxruntime

    from space_clip_ros.inference.runtime.onnxruntime_engine import make_session

    opened = []
    monkeypatch.setattr(onnxruntime, "InferenceSession", lambda source, options, providers: opened.append(options))
    for spin in (False, True):
        make_session(b"", torch.device("cpu"), dataclasses.replace(OnnxRuntimeOptions(), allow_spinning=spin))
    assert [o.get_session_config_entry("session.intra_op.allow_spinning") for o in opened] == ["0", "1"]
    assert {o.get_session_config_entry("session.force_spinning_stop") for o in opened} == {"1"}


def test_the_tools_offer_the_runtime_choices():
    from space_clip_ros.cli import common

    assert common.BACKEND_CHOICES == BACKEND_CHOICES and common.PRECISION_CHOICES == PRECISION_CHOICES


# ---- the CPU fast path's pieces ----------------------------------------------------------------------


def test_bf16_attention_products_agree_with_sdpa():
    torch.manual_seed(0)
    attention = SdpaSelfAttention(64, 4).eval()
    tokens = torch.randn(2, 50, 64)
    with torch.inference_mode():
        exact, _ = attention(tokens)
        attention.compute_dtype = torch.bfloat16
        rounded, _ = attention(tokens)
    assert rounded.dtype == torch.float32
    torch.testing.assert_close(rounded, exact, atol=3e-2, rtol=3e-2)


@pytest.mark.skipif(not bf16_supported(), reason="no bf16 arithmetic on this CPU")
def test_bf16_decoder_within_tolerance_and_runs_the_auxiliary_heads(tiny_model_config):
    """Plumbing and types; the depth error of bf16 on trained and synthetic decoders is measured in
    docs/benchmarks.md (a random decoder with realistic statistics amplifies rounding far more than a
    trained one, and ``auto`` refuses bf16 where it is outside the tolerance)."""
    torch.manual_seed(0)
    model = SpaceClip(tiny_model_config).eval()
    with torch.no_grad():  # depth of about 2 m with a little structure, like a trained decoder's
        model.decoder.head.net[1].weight.mul_(10.0)
        model.decoder.head.net[1].bias.fill_(2.0)
    options = InferenceOptions(backend="torch", torch=TorchOptions(quantize_encoder_int8=True, bf16_decoder=True,
                                                                  bf16_attention=True))
    fast = DepthPredictor(model, device="cpu", options=options)
    assert {"bf16-decoder", "bf16-attention"} <= set(fast.engine.applied)
    exact = DepthPredictor(model, device="cpu")
    frames = np.stack([synthetic_camera_image(*SIZE, seed=seed) for seed in (1, 2)])
    prediction = fast.infer(frames, output_size=(30, 50))
    assert prediction.depth.dtype == torch.float32 and prediction.depth.shape == (2, 30, 50)
    agreement = depth_agreement(prediction.depth, exact.infer(frames, output_size=(30, 50)).depth)
    assert DEPTH_TOLERANCE.problem(agreement) is None, agreement
    assert fast.engine.auxiliary_heads == len(model.decoder.aux_heads)
    with torch.inference_mode():  # the auxiliary maps come back in fp32 at the output size too
        features = fast.model.forward_features(fast.prepare_inputs(frames))
        out = fast.model.decode(features, (30, 50), aux_heads=(0,))
    assert [a.dtype for a in out.aux] == [torch.float32] and out.aux[0].shape == (2, 1, 30, 50)


def test_cpu_bf16_precision_without_hardware_support_runs_fp32(monkeypatch, caplog):
    from space_clip_ros.inference.runtime import options as options_module

    monkeypatch.setattr("space_clip_ros.inference.runtime.cpu_features.bf16_supported", lambda: False)
    options = options_module.default_options("torch", torch.device("cpu"), "bf16")
    assert not options.torch.bf16_decoder and "no bf16 arithmetic" in caplog.text


def test_onnxruntime_int8_weights_follow_the_cpu(tmp_path, tiny_model, monkeypatch):
    import onnx

    from space_clip_ros.inference.rewrites.export import ExportOptions, export_onnx
    from space_clip_ros.inference.rewrites.quantize import quantize_onnx_int8
    from space_clip_ros.inference.runtime.onnxruntime_engine import int8_signed_weights
    from space_clip_ros.inference.runtime.options import OnnxRuntimeOptions

    for vnni in (True, False):
        monkeypatch.setattr("space_clip_ros.inference.runtime.cpu_features.has_int8_dot_product", lambda v=vnni: v)
        assert int8_signed_weights(OnnxRuntimeOptions(quantize_int8=True)) is vnni
    assert int8_signed_weights(OnnxRuntimeOptions(int8_signed_weights=False)) is False
    source = tmp_path / "model.onnx"
    export_onnx(tiny_model, source, ExportOptions())
    for signed, dtype in ((True, onnx.TensorProto.INT8), (False, onnx.TensorProto.UINT8)):
        target = tmp_path / f"int8_{signed}.onnx"
        quantize_onnx_int8(source, target, signed_weights=signed)
        graph = onnx.load(str(target)).graph
        quantized = [t for t in graph.initializer if t.name.endswith("_quantized")]
        assert quantized and {t.data_type for t in quantized} == {dtype}


# ---- the depth node's parameters ---------------------------------------------------------------------


def test_node_parameters_default_to_auto_and_feed_the_diagnostics(tmp_path, monkeypatch):
    from space_clip_ros.data.tiny_model import TINY_VISION_OVERRIDES
    from space_clip_ros.ros.model_setup import (
        KEY_INFERENCE_PATH,
        KEY_PATH_LATENCY,
        build_predictor,
        model_facts,
        predictor_settings,
    )
    from space_clip_ros.ros.parameters import DepthNodeSettings

    defaults = DepthNodeSettings.defaults()
    assert (defaults.backend, defaults.optimize, defaults.precision, defaults.cuda_graphs) == ("auto", True, "auto",
                                                                                                False)
    assert predictor_settings(defaults)["torch_only"] is False
    confidence = DepthNodeSettings.from_values({"publish_confidence": True})
    assert predictor_settings(confidence)["torch_only"] is True  # the confidence map runs auxiliary heads
    sized = DepthNodeSettings.from_values({"output_width": 320, "output_height": 240})
    assert predictor_settings(sized)["output_size"] == (240, 320)
    assert predictor_settings(defaults)["calibration_images"] is None
    framed = DepthNodeSettings.from_values({"calibration_images": str(tmp_path / "frames")})
    assert predictor_settings(framed)["calibration_images"] == str(tmp_path / "frames")

    calibrated: list[bool] = []

    def candidates(device, precision="auto", calibrated_flag=False):
        calibrated.append(calibrated_flag)
        return [TORCH_INT8]

    monkeypatch.setattr(auto_select, "candidate_paths", candidates)
    settings = DepthNodeSettings.from_values({"device": "cpu", "vision_overrides": json.dumps(TINY_VISION_OVERRIDES),
                                              "auto_cache": str(tmp_path / "auto.json")})
    predictor = build_predictor(settings)
    facts = model_facts(predictor, "")
    assert facts[KEY_INFERENCE_PATH] == "torch int8 (backend auto, measured at this start)"
    assert float(facts[KEY_PATH_LATENCY]) > 0
    again = model_facts(build_predictor(settings), "")
    assert again[KEY_INFERENCE_PATH] == "torch int8 (backend auto, cached)"
    assert calibrated == [False, False]
    for seed in range(2):
        write_rgb(tmp_path / "frames" / f"{seed}.png", synthetic_camera_image(48, 64, seed=seed))
    build_predictor(settings.replace(calibration_images=str(tmp_path / "frames")))
    assert calibrated[-1] is True, "the node's calibration_images reach backend auto"
    forced = model_facts(build_predictor(settings.replace(backend="torch", optimize=False)), "")
    assert forced[KEY_INFERENCE_PATH].endswith("(forced by the parameters)")
    assert forced[KEY_PATH_LATENCY] == "not measured"
