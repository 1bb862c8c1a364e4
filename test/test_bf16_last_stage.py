"""The decoder's last stage in bf16 after an ONNX Runtime graph (``OnnxRuntimeOptions.bf16_last_stage``).

Real parts: the tiny open_clip model, graphs exported by the TorchScript exporter and quantised by
ONNX Runtime, calibration frames written and read as PNG files. bf16 arithmetic runs wherever torch
has it (emulated on CPUs without AVX512-BF16 / AMX: slower, same rounding), so only the offer of
the path depends on the CPU.

Depth accuracy is checked on a *trained* decoder (the training tests' tiny street run): the
synthetic "realistic" decoder has its depth spread by a last convolution scaled up ~1000x, which
amplifies bf16 rounding in the last stage to 11 % (tiny model) where the trained decoder stays at
0.1 % (docs/benchmarks.md). That is what ``auto``'s check on the real model is for.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
import torch
from test_train_helpers import trained_run

from space_clip_ros.inference.benchmarking.synthetic import make_decoder_realistic, synthetic_camera_image
from space_clip_ros.inference.rewrites.export import (
    EMBEDDING_OUTPUT,
    LAST_STAGE_OUTPUTS,
    PIXELS_INPUT,
    ExportOptions,
    export_onnx,
)
from space_clip_ros.inference.rewrites.precision import last_stage_in
from space_clip_ros.inference.rewrites.split import cut_before_last_stage
from space_clip_ros.inference.runtime import auto_select
from space_clip_ros.inference.runtime.auto_select import InferencePath, candidate_paths
from space_clip_ros.inference.runtime.cpu_features import bf16_supported
from space_clip_ros.inference.runtime.options import InferenceOptions, OnnxRuntimeOptions, inference_options
from space_clip_ros.inference.runtime.predictor import DepthPredictor
from space_clip_ros.inference.runtime.tolerance import DEPTH_TOLERANCE, depth_agreement
from space_clip_ros.model import SpaceClip, load_model
from space_clip_ros.model.preprocess import pixels_from_frames

pytestmark = pytest.mark.usefixtures("single_torch_thread")
SIZE = (48, 64)  # depth (H, W)
REALISTIC_FRAME = (96, 128, 0)  # conftest's frame: height, width, seed
REALISTIC_SEEDS = (0, 0)  # conftest's realistic_model: torch seed, make_decoder_realistic seed
BF16_INT8_DECODER = InferencePath("onnxruntime", "bf16", int8=True, int8_decoder=True)


@pytest.fixture(scope="module")
def trained_model() -> SpaceClip:
    model, _record = load_model(trained_run().run_dir / "best.safetensors")
    return model.eval()


def _decoder_variants(config):
    """The reference decoder, one whose structural path reaches the last stage, one without it."""
    every_stage = dataclasses.replace(config.decoder, structural_layers=(3, 2, 1, 0))
    return {
        "reference": config,
        "structural skip in the last stage": dataclasses.replace(config, decoder=every_stage),
        "no structural path": dataclasses.replace(
            config, decoder=dataclasses.replace(config.decoder, use_structural_pathway=False)),
    }


@pytest.mark.parametrize("variant", ["reference", "structural skip in the last stage", "no structural path"])
def test_the_decoder_in_two_parts_is_its_forward(tiny_model_config, frame, variant):
    torch.manual_seed(0)
    model = make_decoder_realistic(SpaceClip(_decoder_variants(tiny_model_config)[variant]).eval(), frame)
    frames = np.stack([frame, synthetic_camera_image(96, 128, seed=7)])
    pixels = pixels_from_frames(frames, model.input_size, model.mean, model.std)
    with torch.inference_mode():
        features = model.forward_features(pixels)
        whole = model.decoder(features.hidden, features.global_features, features.grid, (40, 50)).depth
        inputs = model.decoder.last_stage_inputs(features.hidden, features.global_features, features.grid)
        parts = model.decoder.finish(inputs, (40, 50))
    assert (inputs.structural_skip is not None) == (variant == "structural skip in the last stage")
    assert (whole > 0.1).float().mean() > 0.5  # metres, not a map of zeros
    assert torch.equal(parts, whole)


@pytest.mark.parametrize("variant", ["reference", "structural skip in the last stage"])
def test_the_cut_graph_gives_the_last_stage_inputs(tmp_path, tiny_model_config, variant):
    import onnxruntime

    torch.manual_seed(0)
    model = SpaceClip(_decoder_variants(tiny_model_config)[variant]).eval()
    whole, cut = tmp_path / "whole.onnx", tmp_path / "cut.onnx"
    export_onnx(model, whole, ExportOptions(dynamic_batch=True, with_embedding=True))
    cut_before_last_stage(whole, cut, model.decoder.config)
    session = onnxruntime.InferenceSession(str(cut), providers=["CPUExecutionProvider"])
    expected_names = [*LAST_STAGE_OUTPUTS[: 2 if variant == "reference" else 3], EMBEDDING_OUTPUT]
    assert [output.name for output in session.get_outputs()] == expected_names
    last = f"semantic_stages.{len(model.decoder.semantic_stages) - 1}"
    names = [node.name for node in onnx.load(str(cut)).graph.node]
    assert not any(f"/decoder/{last}/" in name or "/decoder/head/" in name for name in names)

    pixels = torch.randn(2, 3, *model.input_size)
    got = session.run(None, {PIXELS_INPUT: pixels.numpy()})
    with torch.inference_mode():
        features = model.forward_features(pixels)
        inputs = model.decoder.last_stage_inputs(features.hidden, features.global_features, features.grid)
        embedding = model.image_embedding(features.global_features)
    wanted = [t for t in (inputs.x, inputs.semantic_skip, inputs.structural_skip) if t is not None] + [embedding]
    for array, tensor in zip(got, wanted):
        torch.testing.assert_close(torch.from_numpy(array), tensor, rtol=1e-4, atol=1e-4)


def test_the_cut_refuses_a_graph_without_the_embedding(tmp_path, tiny_model_config):
    model = SpaceClip(tiny_model_config).eval()
    export_onnx(model, tmp_path / "depth_only.onnx", ExportOptions())
    with pytest.raises(ValueError, match="not a whole SPACE-CLIP graph with the embedding"):
        cut_before_last_stage(tmp_path / "depth_only.onnx", tmp_path / "cut.onnx", model.decoder.config)


def test_the_last_stage_copy_is_exact_in_fp32_and_within_tolerance_in_bf16(trained_model):
    fp32 = last_stage_in(trained_model.decoder, torch.float32)
    bf16 = last_stage_in(trained_model.decoder, torch.bfloat16)
    frames = np.stack([synthetic_camera_image(96, 128, seed=seed) for seed in (3, 4)])
    pixels = pixels_from_frames(frames, trained_model.input_size, trained_model.mean, trained_model.std)
    with torch.inference_mode():
        features = trained_model.forward_features(pixels)
        inputs = trained_model.decoder.last_stage_inputs(features.hidden, features.global_features, features.grid)
        exact = trained_model.decoder.finish(inputs, SIZE)
        torch.testing.assert_close(fp32.finish(inputs, SIZE), exact, rtol=1e-4, atol=1e-4)  # batch norm folded
        rounded = bf16.finish(inputs, SIZE)
    assert rounded.dtype == torch.float32 and rounded.shape == exact.shape
    agreement = depth_agreement(rounded, exact)
    assert agreement["median_relative_error"] < 0.01 and DEPTH_TOLERANCE.problem(agreement) is None, agreement
    assert agreement["median_relative_error"] > 0  # it is rounded to bf16, not the fp32 stage
    assert next(trained_model.decoder.parameters()).dtype == torch.float32, "the model's decoder stays fp32"


@pytest.mark.slow  # exports and quantises a graph
def test_onnxruntime_with_the_bf16_last_stage_serves_depth_and_embedding(tmp_path, trained_model):
    # int8 encoder MatMuls and the bf16 last stage; the int8 decoder is test_decoder_int8's (on this
    # model, calibrated on synthetic frames, it alone reaches 3 m at a far pixel)
    onnxruntime = OnnxRuntimeOptions(quantize_int8=True, bf16_last_stage=True, intra_op_threads=1, torch_threads=1,
                                     graph_cache=str(tmp_path / "graphs"))
    options = InferenceOptions("onnxruntime", onnxruntime=onnxruntime)
    fast = DepthPredictor(trained_model, device="cpu", options=options)
    assert "decoder's last stage and head in bf16 in torch" in fast.describe()
    assert fast.engine.split_runners() is None  # one graph and a torch part: not split into two graphs
    exact = DepthPredictor(trained_model, device="cpu")
    held_out = np.stack([synthetic_camera_image(96, 128, seed=seed) for seed in (20, 21)])
    got = fast.infer(held_out, SIZE, with_embedding=True)
    expected = exact.infer(held_out, SIZE, with_embedding=True)
    agreement = depth_agreement(got.depth, expected.depth)
    assert DEPTH_TOLERANCE.problem(agreement) is None, agreement
    assert got.depth.shape == (2, *SIZE) and got.depth.dtype == torch.float32
    torch.testing.assert_close(got.embedding, expected.embedding, rtol=0.05, atol=0.05)  # int8 encoder

    # A second engine reads the kept graph (no export) and computes the same depth.
    again = DepthPredictor(trained_model, device="cpu", options=options)
    torch.testing.assert_close(again.infer(held_out, SIZE).depth, got.depth)


def test_the_bf16_last_stage_needs_the_model_not_a_file(tmp_path, realistic_model):
    path = tmp_path / "model.onnx"
    export_onnx(realistic_model, path, ExportOptions())
    options = InferenceOptions("onnxruntime", onnxruntime=OnnxRuntimeOptions(model_path=str(path),
                                                                             bf16_last_stage=True))
    with pytest.raises(ValueError, match="bf16_last_stage .* needs the model, not an exported model_path"):
        DepthPredictor(realistic_model, device="cpu", options=options)


def test_auto_offers_the_bf16_last_stage_with_the_int8_decoder_on_a_cpu_with_bf16(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(auto_select, "has_int8_dot_product", lambda: True)
    monkeypatch.setattr(auto_select, "bf16_supported", lambda: True)
    offered = candidate_paths(cpu, calibrated=True)
    assert BF16_INT8_DECODER in offered and dataclasses.replace(BF16_INT8_DECODER, spinning=True) in offered
    assert BF16_INT8_DECODER.name == "onnxruntime int8 int8-decoder bf16"
    assert BF16_INT8_DECODER not in candidate_paths(cpu)  # no frames: no int8 decoder to follow
    assert BF16_INT8_DECODER not in candidate_paths(cpu, "fp32", calibrated=True)
    monkeypatch.setattr(auto_select, "bf16_supported", lambda: False)
    assert not any(path.backend == "onnxruntime" and path.precision == "bf16"
                   for path in candidate_paths(cpu, calibrated=True))


def test_precision_bf16_on_onnxruntime_means_the_bf16_last_stage_where_the_cpu_has_bf16():
    cpu = torch.device("cpu")
    options = inference_options("onnxruntime", cpu, True, precision="bf16", threads=2).onnxruntime
    assert options.bf16_last_stage == bf16_supported()
    # torch runs a part of the model then, on the cores ONNX Runtime has; otherwise its small work on one
    assert options.torch_threads == (2 if bf16_supported() else 1)
    plain = inference_options("onnxruntime", cpu, True, precision="fp32", threads=2).onnxruntime
    assert not plain.bf16_last_stage and plain.torch_threads == 1
    path_options = BF16_INT8_DECODER.options(cpu, 2).onnxruntime
    assert path_options.bf16_last_stage == bf16_supported() and path_options.quantize_decoder_int8
