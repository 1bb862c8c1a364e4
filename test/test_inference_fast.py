"""Inference fast paths against plain fp32 eager, on the tiny real open_clip model (CPU).

Stated tolerances (docs/benchmarks.md), on a random-weights model whose decoder has realistic
batch-norm statistics and depths (median about 4 m), for a synthetic camera frame:
  exact re-writes (SDPA attention, folded batch norm, channels-last), ONNX Runtime fp32:
      median relative error <= 1e-5 and max abs error <= 1e-3 m (float rounding only);
  int8 encoder Linear layers (torch or ONNX Runtime, the CPU default):
      median relative error <= 3 % and max abs error <= 0.5 m.
GPU-only paths (half weights, CUDA graphs, pinned upload, device point cloud) run only with CUDA.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from space_clip_ros.data.frame_sources import camera_from_fov
from space_clip_ros.inference.benchmarking.timing import TimingStats, time_interleaved
from space_clip_ros.inference.rewrites.attention import SdpaSelfAttention, replace_multihead_attention
from space_clip_ros.inference.rewrites.fusion import fold_batch_norms, remaining_batch_norms
from space_clip_ros.inference.rewrites.resize import MatrixResize
from space_clip_ros.inference.runtime.options import (
    InferenceOptions,
    OnnxRuntimeOptions,
    TorchOptions,
    default_options,
    recommended_backend,
)
from space_clip_ros.inference.runtime.predictor import DepthPredictor
from space_clip_ros.model import SpaceClip
from space_clip_ros.msgs import CameraIntrinsics
from space_clip_ros.outputs.device_cloud import DevicePointCloudBuilder

EXACT_MEDIAN_RELATIVE = 1e-5
EXACT_MAX_ABS_M = 1e-3
INT8_MEDIAN_RELATIVE = 0.03
INT8_MAX_ABS_M = 0.5

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


pytestmark = pytest.mark.usefixtures("single_torch_thread")
REALISTIC_FRAME = (96, 128, 0)  # conftest's frame: height, width, seed
REALISTIC_SEEDS = (0, 1)  # conftest's realistic_model: torch seed, make_decoder_realistic seed


def camera(height: int, width: int) -> CameraIntrinsics:
    return camera_from_fov(width, height, 64.0).intrinsics


def agreement(depth: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(median relative error over pixels deeper than 0.1 m, max abs error in metres)."""
    valid = reference > 0.1
    relative = np.abs(depth - reference)[valid] / reference[valid]
    return float(np.median(relative)), float(np.abs(depth - reference).max())


@pytest.fixture(scope="module")
def reference_depth(eager_predictor, frame) -> np.ndarray:
    return eager_predictor.predict(frame)


@pytest.fixture(scope="module")
def onnxruntime_int8_predictor(realistic_model) -> DepthPredictor:
    """The recommended CPU path (export + quantisation take a few seconds, so built once)."""
    return DepthPredictor(realistic_model, device="cpu", backend="onnxruntime", optimize=True)


def test_realistic_model_predicts_metres(reference_depth):
    valid = reference_depth > 0.1
    assert valid.mean() > 0.9  # not a map of zeros
    assert 2.0 < np.median(reference_depth) < 6.0


@pytest.mark.parametrize("batch_first", [True, False])
def test_sdpa_attention_matches_multihead_attention(batch_first):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(64, 4, batch_first=batch_first).eval()
    sdpa = SdpaSelfAttention.from_multihead_attention(mha)
    x = torch.randn(2, 10, 64) if batch_first else torch.randn(10, 2, 64)
    with torch.no_grad():
        expected = mha(x, x, x, need_weights=False)[0]
        got, weights = sdpa(x, x, x, need_weights=False)
    assert weights is None
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # Masks mean to SDPA what they mean to nn.MultiheadAttention (boolean True: may not attend).
    causal = torch.ones(10, 10, dtype=torch.bool).triu(1)
    additive = torch.zeros(10, 10).masked_fill(causal, float("-inf"))
    with torch.no_grad():
        for mask in (causal, additive):
            expected = mha(x, x, x, need_weights=False, attn_mask=mask)[0]
            torch.testing.assert_close(sdpa(x, attn_mask=mask)[0], expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="self-attention"):
        sdpa(x, torch.randn_like(x), x)


def test_attention_replacement_keeps_encoder_output(realistic_model):
    import copy

    backbone = copy.deepcopy(realistic_model.backbone)
    assert replace_multihead_attention(backbone) == realistic_model.backbone.num_layers
    assert not any(isinstance(m, nn.MultiheadAttention) for m in backbone.modules())
    pixels = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected, got = realistic_model.backbone(pixels), backbone(pixels)
    for a, b in zip(expected.hidden, got.hidden):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.global_features, expected.global_features, rtol=1e-4, atol=1e-4)


def test_batch_norm_folding_is_exact(realistic_model):
    import copy

    decoder = copy.deepcopy(realistic_model.decoder).eval()
    folded = fold_batch_norms(decoder)
    assert folded == remaining_batch_norms(realistic_model.decoder) and remaining_batch_norms(decoder) == 0
    with torch.no_grad():
        features = realistic_model.backbone(torch.randn(1, 3, 224, 224))
        expected = realistic_model.decoder(features.hidden, features.global_features, features.grid, (64, 64)).depth
        got = decoder(features.hidden, features.global_features, features.grid, (64, 64)).depth
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="eval-mode"):
        fold_batch_norms(copy.deepcopy(realistic_model.decoder).train())


def test_matrix_resize_equals_antialiased_bicubic():
    images = torch.rand(2, 3, 75, 130)
    expected = torch.nn.functional.interpolate(images, (224, 224), mode="bicubic", align_corners=False, antialias=True)
    torch.testing.assert_close(MatrixResize((75, 130), (224, 224))(images), expected, rtol=0, atol=5e-5)


def test_exact_torch_rewrites_match_eager(realistic_model, frame, reference_depth):
    options = InferenceOptions(backend="torch", torch=TorchOptions(quantize_encoder_int8=False))
    predictor = DepthPredictor(realistic_model, device="cpu", options=options)
    median_relative, max_abs = agreement(predictor.predict(frame), reference_depth)
    assert median_relative <= EXACT_MEDIAN_RELATIVE and max_abs <= EXACT_MAX_ABS_M
    # The caller's model is not re-written.
    assert any(isinstance(m, nn.MultiheadAttention) for m in realistic_model.modules())
    assert remaining_batch_norms(realistic_model.decoder) > 0


def test_default_cpu_torch_fast_path_is_int8_within_tolerance(realistic_model, frame, reference_depth):
    predictor = DepthPredictor(realistic_model, device="cpu", optimize=True)
    assert "int8-encoder-linear" in predictor.describe()
    median_relative, max_abs = agreement(predictor.predict(frame), reference_depth)
    assert median_relative <= INT8_MEDIAN_RELATIVE and max_abs <= INT8_MAX_ABS_M


@pytest.mark.slow  # ONNX export of the model
def test_onnxruntime_fp32_matches_eager(realistic_model, eager_predictor, frame, reference_depth):
    predictor = DepthPredictor(realistic_model, device="cpu", backend="onnxruntime")
    median_relative, max_abs = agreement(predictor.predict(frame), reference_depth)
    assert median_relative <= EXACT_MEDIAN_RELATIVE and max_abs <= EXACT_MAX_ABS_M
    batch = np.stack([frame, frame[::-1].copy()])
    expected = eager_predictor.infer(batch, output_size=(40, 50), with_embedding=True)
    got = predictor.infer(batch, output_size=(40, 50), with_embedding=True)
    torch.testing.assert_close(got.depth, expected.depth, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(got.embedding, expected.embedding, rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # ONNX export of the model
def test_recommended_cpu_path_onnxruntime_int8_within_tolerance(onnxruntime_int8_predictor, frame, reference_depth):
    assert recommended_backend(torch.device("cpu")) == "onnxruntime"
    predictor = onnxruntime_int8_predictor
    assert "int8" in predictor.describe()
    median_relative, max_abs = agreement(predictor.predict(frame), reference_depth)
    assert median_relative <= INT8_MEDIAN_RELATIVE and max_abs <= INT8_MAX_ABS_M


@pytest.mark.slow  # ONNX export of the model
def test_onnxruntime_split_runners_time_encoder_and_decoder_apart(onnxruntime_int8_predictor):
    encode, decode = onnxruntime_int8_predictor.engine.split_runners()
    assert decode(encode(torch.randn(2, 3, 224, 224)), (30, 40)).shape == (2, 1, 30, 40)


def test_predictor_keeps_its_public_surface(realistic_model, onnxruntime_int8_predictor):
    predictor = onnxruntime_int8_predictor
    assert predictor.input_size == (224, 224) and predictor.mean == realistic_model.mean
    assert predictor.model is realistic_model and predictor.record is None and predictor.device.type == "cpu"
    assert predictor.model.backbone.visual.output_dim == 512


@pytest.mark.slow  # ONNX export of the model
def test_exported_backend_lets_go_of_the_torch_model(tiny_model_config, frame):
    import gc
    import weakref

    model = SpaceClip(tiny_model_config).eval()
    predictor = DepthPredictor(model, device="cpu", backend="onnxruntime")
    expected = predictor.predict(frame)
    alive = weakref.ref(model)
    del model
    predictor.release_model()
    gc.collect()
    assert alive() is None, "something still holds the torch weights"
    assert predictor.model is None and predictor.engine.split_runners() is None
    assert predictor.config.backbone == tiny_model_config.backbone and "SPACE-CLIP" in predictor.describe()
    np.testing.assert_array_equal(predictor.predict(frame), expected)


def test_backend_choices_are_checked(realistic_model):
    with pytest.raises(ValueError, match="backend must be one of"):
        DepthPredictor(realistic_model, device="cpu", backend="tvm")
    with pytest.raises(ValueError, match="contradicts"):
        DepthPredictor(realistic_model, device="cpu", backend="onnxruntime", options=InferenceOptions(backend="torch"))
    with pytest.raises(ValueError, match="compile_mode"):
        TorchOptions(compile_mode="fastest")
    with pytest.raises(ValueError, match="CUDA"):
        DepthPredictor(
            realistic_model, device="cpu", options=InferenceOptions(torch=TorchOptions(cuda_graphs=True))
        )
    assert default_options("torch", torch.device("cpu")).torch.quantize_encoder_int8
    assert not default_options("torch", torch.device("cuda")).torch.quantize_encoder_int8


def test_create_predictor_resolves_auto_settings(tiny_backbone_config):
    from space_clip_ros.inference import create_predictor

    predictor = create_predictor(None, backbone=tiny_backbone_config, device="cpu", backend="torch", optimize=False)
    assert predictor.precision == "fp32" and predictor.backend == "torch" and predictor.record is None
    assert "torch eager" in predictor.describe()


def test_tensorrt_backend_explains_what_is_missing(realistic_model):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="tensorrt"):
            DepthPredictor(realistic_model, device="cpu", backend="tensorrt")
    else:
        with pytest.raises(RuntimeError, match="CUDA"):
            DepthPredictor(realistic_model, device="cpu", backend="tensorrt")


def test_onnxruntime_backend_runs_a_given_file_and_refuses_foreign_graphs(tmp_path, realistic_model):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "foreign",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    options = InferenceOptions(backend="onnxruntime", onnxruntime=OnnxRuntimeOptions(model_path=str(path)))
    with pytest.raises(ValueError, match="not a SPACE-CLIP export"):
        DepthPredictor(realistic_model, device="cpu", options=options)


def test_device_point_cloud_equals_numpy_builder():
    from std_msgs.msg import Header

    from space_clip_ros.msgs import pointcloud2_to_xyz_grid
    from space_clip_ros.outputs.cloud import PointCloudBuilder

    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 8.0, (30, 40)).astype(np.float32)
    depth[3, 4], depth[5, 6], depth[7, 8], depth[9, 10], depth[11, 12] = np.nan, 0.0, 50.0, 0.75, 20.0
    intrinsics = camera(30, 40)
    header = Header(frame_id="camera")
    # Range limits inclusive on both sides, as the depth image's (0.75 and 20.0 are kept).
    expected = PointCloudBuilder().build(depth, intrinsics, header, max_range=20.0, min_depth=0.75)
    got = DevicePointCloudBuilder().build(torch.from_numpy(depth), intrinsics, header, max_range=20.0, min_depth=0.75)
    assert np.isfinite(pointcloud2_to_xyz_grid(got)[[9, 11], [10, 12]]).all()
    for name in ("height", "width", "point_step", "row_step", "is_dense", "is_bigendian"):
        assert getattr(got, name) == getattr(expected, name)
    def layout(msg):
        return [(f.name, f.offset, f.datatype) for f in msg.fields]

    assert layout(got) == layout(expected)
    np.testing.assert_array_equal(pointcloud2_to_xyz_grid(got), pointcloud2_to_xyz_grid(expected))
    assert bytes(got.data) == bytes(expected.data)


def test_interleaved_timing_statistics():
    calls = []
    stats = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, warmup=1, repeats=3)
    assert calls == ["a", "b"] + ["a", "b"] * 3
    assert stats["a"].repeats == 3 and stats["a"].median_ms >= 0
    summary = TimingStats.from_seconds([0.001, 0.002, 0.003, 0.004])
    assert math.isclose(summary.median_ms, 2.5) and summary.min_ms == 1.0 and summary.max_ms == 4.0


def test_a_lead_in_call_of_the_same_candidate_precedes_each_timed_call():
    import time

    calls: list[str] = []

    def slow_after_other(name: str):
        # costs 5 ms when the previous call was another candidate's (its leftovers), 0 otherwise
        def call():
            if calls and calls[-1] != name:
                time.sleep(0.005)
            calls.append(name)
        return call

    plain = time_interleaved({"a": slow_after_other("a"), "b": slow_after_other("b")}, warmup=0, repeats=3)
    assert plain["b"].min_ms >= 5  # interleaved: b always runs after a, and pays for it
    calls.clear()
    led = time_interleaved({"a": slow_after_other("a"), "b": slow_after_other("b")}, warmup=0, repeats=3,
                           lead_in=1)
    assert calls == ["a", "a", "b", "b"] * 3 and led["a"].repeats == 3
    assert led["a"].median_ms < 5 and led["b"].median_ms < 5
    with pytest.raises(ValueError, match="lead_in"):
        time_interleaved({"a": slow_after_other("a")}, warmup=0, repeats=1, lead_in=-1)


def test_compile_modes_that_capture_graphs_do_not_nest_in_cuda_graphs():
    from space_clip_ros.inference.runtime.torch_engine import compile_mode_for

    assert compile_mode_for(TorchOptions(compile_mode="max-autotune")) == "max-autotune"
    assert compile_mode_for(TorchOptions(compile_mode="default", cuda_graphs=True)) is None
    assert compile_mode_for(TorchOptions(compile_mode="max-autotune", cuda_graphs=True)) == "max-autotune-no-cudagraphs"
    with pytest.raises(ValueError, match="reduce-overhead"):
        compile_mode_for(TorchOptions(compile_mode="reduce-overhead", cuda_graphs=True))


class _FakeCuda:
    """Just enough of torch.cuda for _GraphedForward on the CPU: a "graph" records the kernels its
    capture ran (closures over the static buffers) and replay runs them again, as a real one does."""

    def __init__(self, monkeypatch) -> None:
        import contextlib

        self.capturing = None
        self.captures = 0
        self.devices: list[torch.device] = []
        fake = self

        class Stream:
            def wait_stream(self, other):
                pass

        class Graph:
            def __init__(self):
                self.kernels = []

            def replay(self):
                for kernel in self.kernels:
                    kernel()

        @contextlib.contextmanager
        def graph(cuda_graph):
            fake.capturing, fake.captures = cuda_graph, fake.captures + 1
            yield
            fake.capturing = None

        @contextlib.contextmanager
        def device(dev):
            fake.devices.append(dev)
            yield

        monkeypatch.setattr(torch.cuda, "Stream", Stream)
        monkeypatch.setattr(torch.cuda, "current_stream", lambda *args: Stream())
        monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
        monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
        monkeypatch.setattr(torch.cuda, "graph", graph)
        monkeypatch.setattr(torch.cuda, "device", device)

    def launch(self, kernel):
        kernel()
        if self.capturing is not None:
            self.capturing.kernels.append(kernel)


def test_cuda_graph_outputs_are_copied_out_before_the_next_replay(monkeypatch):
    from space_clip_ros.inference.runtime.prediction import Prediction
    from space_clip_ros.inference.runtime.torch_engine import TorchEngine, _GraphedForward

    cuda = _FakeCuda(monkeypatch)

    def forward(pixels, output_size, with_embedding, confidence_heads=()):
        depth = torch.empty(pixels.shape[0], 1, *output_size)
        embedding = torch.empty(pixels.shape[0], 3) if with_embedding else None
        cuda.launch(lambda: depth.copy_(pixels.mean(dim=(1, 2, 3)).view(-1, 1, 1, 1).expand_as(depth)))
        if embedding is not None:
            cuda.launch(lambda: embedding.copy_(pixels.mean(dim=(2, 3))))
        return Prediction(depth=depth[:, 0], embedding=embedding)  # a view of the graph's buffer, as the model's

    engine = TorchEngine.__new__(TorchEngine)  # only the output handling of run() is under test
    engine._forward, engine._outputs_reused = _GraphedForward(forward), True
    ones, twos = torch.ones(2, 3, 8, 8), torch.full((2, 3, 8, 8), 2.0)
    first = engine.run(ones, (4, 5), with_embedding=True)
    second = engine.run(twos, (4, 5), with_embedding=True)  # replays the graph captured for `first`
    assert cuda.captures == 1 and cuda.devices == [ones.device, twos.device]  # capture and replay on its device
    assert (first.depth == 1.0).all() and (first.embedding == 1.0).all(), "the replay overwrote a held result"
    assert (second.depth == 2.0).all() and (second.embedding == 2.0).all()
    assert first.depth.dtype == torch.float32 and first.depth.shape == (2, 4, 5)  # (B, H, W), as Prediction
    third = engine.run(twos[:1], (6, 7), with_embedding=False)  # other batch and size: another graph
    assert cuda.captures == 2 and third.depth.shape == (1, 6, 7) and third.embedding is None
    assert (third.depth == 2.0).all() and (first.depth == 1.0).all()


def test_tensorrt_batch_beyond_the_profile_is_refused_clearly():
    from types import SimpleNamespace

    from space_clip_ros.inference.rewrites.export import PIXELS_INPUT
    from space_clip_ros.inference.runtime.tensorrt_engine import TensorRTEngine

    engine = TensorRTEngine.__new__(TensorRTEngine)  # a fake TensorRT engine: no GPU, no tensorrt here
    engine.trt = SimpleNamespace(float32="f32", float16="f16", int32="i32", uint8="u8")
    engine.device, engine.input_name, engine.output_names = torch.device("cpu"), PIXELS_INPUT, ["depth"]
    engine.input_shape = (-1, 3, 224, 224)
    engine.engine = SimpleNamespace(
        get_tensor_dtype=lambda name: "f32",
        num_optimization_profiles=1,
        get_tensor_profile_shape=lambda name, index: [(1, 3, 224, 224), (1, 3, 224, 224), (16, 3, 224, 224)],
    )
    engine.context = SimpleNamespace(set_input_shape=lambda name, shape: shape[0] <= 16)
    with pytest.raises(ValueError, match=r"allows \(1, 3, 224, 224\) to \(16, 3, 224, 224\)"):
        engine.run(torch.zeros(17, 3, 224, 224), (48, 64), with_embedding=False)


def test_device_point_cloud_takes_half_precision_and_strided_depth():
    rng = np.random.default_rng(1)
    depth = torch.from_numpy(rng.uniform(0.5, 8.0, (30, 80)).astype(np.float32))
    strided = depth[:, ::2]  # (30, 40), not contiguous
    assert not strided.is_contiguous()
    builder = DevicePointCloudBuilder()
    expected = builder.points(strided.contiguous(), camera(30, 40))
    torch.testing.assert_close(builder.points(strided, camera(30, 40)), expected, equal_nan=True)
    half = strided.half()
    got = builder.points(half, camera(30, 40))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, builder.points(half.float(), camera(30, 40)), equal_nan=True)


# ---- GPU-only paths ----------------------------------------------------------------------------------


@needs_cuda
@pytest.mark.parametrize("precision, median_relative", [("fp16", 0.01), ("bf16", 0.03)])
def test_half_weights_on_cuda_within_tolerance(realistic_model, frame, reference_depth, precision, median_relative):
    predictor = DepthPredictor(realistic_model, device="cuda", precision=precision, optimize=True)
    assert next(predictor.model.backbone.parameters()).dtype != torch.float32
    got_relative, max_abs = agreement(predictor.predict(frame), reference_depth)
    assert got_relative <= median_relative and max_abs <= INT8_MAX_ABS_M


@needs_cuda
def test_cuda_graphs_replay_matches_eager(realistic_model, frame):
    options = InferenceOptions(torch=TorchOptions(cuda_graphs=True, half_weights=False))
    graphed = DepthPredictor(realistic_model, device="cuda", options=options)
    plain = DepthPredictor(realistic_model, device="cuda", options=InferenceOptions())
    first = graphed.predict(frame)
    second = graphed.predict(frame[::-1].copy())
    np.testing.assert_allclose(first, plain.predict(frame), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(second, plain.predict(frame[::-1].copy()), rtol=1e-4, atol=1e-3)


@needs_cuda
def test_pinned_upload_and_device_cloud_on_cuda(realistic_model):
    from space_clip_ros.inference.runtime.upload import FrameUploader

    uploader = FrameUploader(torch.device("cuda"))
    frames = [np.full((1, 8, 8, 3), value, dtype=np.uint8) for value in (1, 2, 3)]
    uploaded = [uploader.upload(f) for f in frames]
    for frame_array, tensor in zip(frames, uploaded):
        assert tensor.is_cuda and int(tensor[0, 0, 0, 0]) == int(frame_array[0, 0, 0, 0])
    depth = torch.rand(20, 30, device="cuda") + 0.5
    cloud = DevicePointCloudBuilder().points(depth, camera(20, 30))
    cpu_cloud = DevicePointCloudBuilder().points(depth.cpu(), camera(20, 30))
    torch.testing.assert_close(cloud.cpu(), cpu_cloud, equal_nan=True)


@needs_cuda
def test_cuda_graph_results_survive_the_next_call_and_follow_batch_and_size(realistic_model, frame):
    options = InferenceOptions(torch=TorchOptions(cuda_graphs=True, half_weights=False))
    graphed = DepthPredictor(realistic_model, device="cuda", options=options)
    plain = DepthPredictor(realistic_model, device="cuda", options=InferenceOptions())
    flipped = frame[::-1].copy()
    first = graphed.infer(frame[None], output_size=(48, 64), with_embedding=True)
    second = graphed.infer(flipped[None], output_size=(48, 64), with_embedding=True)  # same graph
    expected_first = plain.infer(frame[None], output_size=(48, 64), with_embedding=True)
    torch.testing.assert_close(first.depth, expected_first.depth, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(first.embedding, expected_first.embedding, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(second.depth, plain.infer(flipped[None], output_size=(48, 64)).depth, rtol=1e-4,
                               atol=1e-3)
    batch = graphed.infer(np.stack([frame, flipped]), output_size=(30, 40))
    assert batch.depth.shape == (2, 30, 40) and batch.depth.dtype == torch.float32 and batch.depth.is_cuda
    torch.testing.assert_close(batch.depth, plain.infer(np.stack([frame, flipped]), output_size=(30, 40)).depth,
                               rtol=1e-4, atol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_cuda_graphs_on_a_second_gpu_from_a_worker_thread(realistic_model, frame):
    import threading

    options = InferenceOptions(torch=TorchOptions(cuda_graphs=True, half_weights=False))
    graphed = DepthPredictor(realistic_model, device="cuda:1", options=options)
    plain = DepthPredictor(realistic_model, device="cuda:1", options=InferenceOptions())
    results = {}

    def work():  # a new thread's current device is cuda:0, as in the node's inference worker
        results["first"] = graphed.predict(frame)
        results["second"] = graphed.predict(frame[::-1].copy())

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    np.testing.assert_allclose(results["first"], plain.predict(frame), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(results["second"], plain.predict(frame[::-1].copy()), rtol=1e-4, atol=1e-3)


@needs_cuda
def test_reduce_overhead_compile_results_survive_the_next_call(realistic_model, frame):
    options = InferenceOptions(torch=TorchOptions(compile_mode="reduce-overhead", half_weights=False))
    compiled = DepthPredictor(realistic_model, device="cuda", options=options)
    plain = DepthPredictor(realistic_model, device="cuda", options=InferenceOptions())
    flipped = frame[::-1].copy()
    held = [compiled.infer(image[None]).depth for image in (frame, flipped, frame, flipped)]  # warm-up, record, replay
    torch.testing.assert_close(held[0], plain.infer(frame[None]).depth, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(held[1], plain.infer(flipped[None]).depth, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(held[2], held[0])
