"""ONNX export of the whole model, checked through onnxruntime (CPU) against the torch model.

Stated tolerance: the exported graph reproduces torch fp32 depth within 1e-3 m max abs error
(float rounding; measured ~1e-4 m) for both input kinds - normalised pixels, and uint8 camera
frames with the antialiased bicubic resize inside the graph as two matrix products.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from space_clip_ros.cli.export import main as export_main
from space_clip_ros.inference.rewrites.export import ExportOptions, export_onnx, trtexec_command
from space_clip_ros.inference.rewrites.quantize import encoder_weight_matmuls, quantize_onnx_int8
from space_clip_ros.inference.runtime.options import InferenceOptions, OnnxRuntimeOptions
from space_clip_ros.inference.runtime.predictor import DepthPredictor
from space_clip_ros.model import BackboneConfig, ModelConfig, SpaceClip, load_model, make_record, save_checkpoint
from space_clip_ros.model.backbone import save_vision_weights

MAX_ABS_M = 1e-3


pytestmark = pytest.mark.usefixtures("single_torch_thread")
REALISTIC_FRAME = (60, 80, 4)  # conftest's frame: height, width, seed
REALISTIC_SEEDS = (1, 2)  # conftest's realistic_model: torch seed, make_decoder_realistic seed


@pytest.fixture(scope="module")
def model(realistic_model) -> SpaceClip:
    return realistic_model


def session(path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_pixels_graph_matches_torch(tmp_path, model):
    path = tmp_path / "pixels.onnx"
    export_onnx(model, path, ExportOptions(output_size=(48, 64), with_embedding=True, dynamic_batch=True))
    runner = session(path)
    assert [i.name for i in runner.get_inputs()] == ["pixels"]
    assert [o.name for o in runner.get_outputs()] == ["depth", "embedding"]
    pixels = torch.randn(3, 3, 224, 224)
    with torch.inference_mode():
        out = model(pixels, output_size=(48, 64))
        embedding = model.image_embedding(out.global_features)
    depth, got_embedding = runner.run(None, {"pixels": pixels.numpy()})
    assert depth.shape == (3, 1, 48, 64)
    np.testing.assert_allclose(depth, out.depth.numpy(), rtol=0, atol=MAX_ABS_M)
    np.testing.assert_allclose(got_embedding, embedding.numpy(), rtol=1e-4, atol=1e-4)


def test_uint8_image_graph_preprocesses_like_the_predictor(tmp_path, model, eager_predictor, frame):
    path = tmp_path / "image.onnx"
    export_onnx(model, path, ExportOptions(image_size=frame.shape[:2], dynamic_batch=True))
    runner = session(path)
    inputs = runner.get_inputs()
    assert inputs[0].name == "image" and inputs[0].type == "tensor(uint8)" and inputs[0].shape[1:] == [60, 80, 3]
    batch = np.stack([frame, frame[:, ::-1].copy()])
    depth = runner.run(["depth"], {"image": batch})[0]
    expected = eager_predictor.infer(batch).depth.numpy()
    assert depth.shape == (2, 1, 60, 80)
    np.testing.assert_allclose(depth[:, 0], expected, rtol=0, atol=MAX_ABS_M)

    # The predictor runs such a file directly (uint8 frames in, preprocessing in the graph).
    options = InferenceOptions(backend="onnxruntime", onnxruntime=OnnxRuntimeOptions(model_path=str(path)))
    predictor = DepthPredictor(model, device="cpu", options=options)
    np.testing.assert_allclose(predictor.predict(frame), expected[0], rtol=0, atol=MAX_ABS_M)
    with pytest.raises(ValueError, match="60x80 frames"):
        predictor.predict(np.zeros((30, 40, 3), dtype=np.uint8))


def test_fixed_batch_graph_and_trtexec_line(tmp_path, model):
    path = tmp_path / "fixed.onnx"
    export_onnx(model, path, ExportOptions(batch_size=2))
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    dims = [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 3, 224, 224]
    assert trtexec_command(path, ExportOptions(), (224, 224)).startswith(f"trtexec --onnx={path} --fp16")
    dynamic = trtexec_command(path, ExportOptions(image_size=(480, 640), dynamic_batch=True), (224, 224))
    assert "--minShapes=image:1x480x640x3" in dynamic and "--maxShapes=image:8x480x640x3" in dynamic


def test_int8_quantisation_touches_encoder_weight_matmuls_only(tmp_path, model):
    path, int8_path = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    export_onnx(model, path, ExportOptions())
    names = encoder_weight_matmuls(path)
    assert len(names) == 4 * model.backbone.num_layers  # qkv, attention out, MLP in, MLP out
    assert quantize_onnx_int8(path, int8_path) == len(names)
    quantized_ops = {node.op_type for node in onnx.load(str(int8_path)).graph.node}
    assert "MatMulInteger" in quantized_ops and "ConvInteger" not in quantized_ops


@pytest.mark.slow  # exports and checks a whole graph
def test_export_cli_with_checkpoint_and_check(tmp_path, model, frame, capsys):
    weights = save_vision_weights(model.backbone, tmp_path / "tiny_vision.safetensors")
    backbone = BackboneConfig(
        name="ViT-B-16", pretrained=str(weights), vision_overrides=dict(model.config.backbone.vision_overrides)
    )
    local = SpaceClip(ModelConfig(backbone=backbone, decoder=model.config.decoder))
    local.decoder.load_state_dict(model.decoder.state_dict())
    checkpoint = tmp_path / "ckpt"
    save_checkpoint(checkpoint, local.decoder.state_dict(), make_record(local))

    out = tmp_path / "exported" / "robot.onnx"
    code = export_main([
        "--checkpoint", str(checkpoint), "--out", str(out), "--image-size", "60", "80",
        "--with-embedding", "--dynamic-batch", "--int8",
    ])
    printed = capsys.readouterr().out
    assert code == 0 and out.is_file() and out.with_suffix(".int8.onnx").is_file()
    assert "onnxruntime check: max abs depth difference" in printed and "trtexec --onnx=" in printed
    reloaded, _ = load_model(checkpoint)
    expected = DepthPredictor(reloaded, device="cpu").predict(frame)
    np.testing.assert_allclose(session(out).run(["depth"], {"image": frame[None]})[0][0, 0], expected, atol=MAX_ABS_M)

    assert export_main(["--checkpoint", str(tmp_path / "missing"), "--out", str(out)]) == 2
