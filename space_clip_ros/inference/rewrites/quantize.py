"""Dynamic int8 quantisation of the encoder's matrix products, for CPUs.

Dynamic quantisation stores the Linear weights as 8-bit integers and quantises each call's
activations on the fly, so it needs no calibration data. It covers the ViT's four Linear layers
per block (qkv, attention output, MLP in and out), about 95 % of the encoder's arithmetic; the
attention's activation-activation products stay in float.

ONNX Runtime path: unsigned 8-bit weights (one scale per output channel) with unsigned 8-bit
activations. Measured on ViT-B/16 here (AVX2 CPU without VNNI), depth against fp32: u8 x u8
median relative error 0.35 %; u8 x s8 (the quantiser's default) 14 %, because the AVX2 u8 x s8
kernel sums pairs of products in saturating 16-bit lanes; u8 x s8 with 7-bit weights
(``reduce_range``) 1.6 %. Speed of the three is within 5-10 %.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings

import torch
from torch import nn

logger = logging.getLogger(__name__)


def quantize_linear_int8(module: nn.Module) -> nn.Module:
    """Return ``module`` with every ``nn.Linear`` replaced by a dynamically quantised int8 Linear.

    Uses ``torch.ao.quantization.quantize_dynamic`` (deprecated in favour of torchao, which is not
    installed here, but still shipped and working in torch 2.15). Raises RuntimeError with a clear
    message when this torch build has no quantised CPU engine.
    """
    engines = torch.backends.quantized.supported_engines
    if not any(engine in engines for engine in ("x86", "fbgemm", "qnnpack", "onednn")):
        raise RuntimeError(f"this torch build has no quantised CPU engine (engines: {engines})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        return torch.ao.quantization.quantize_dynamic(module, {nn.Linear}, dtype=torch.qint8, inplace=False)


ENCODER_NODE_PREFIX = "/model/backbone/"  # node names of the encoder in graphs made by export.py


@contextlib.contextmanager
def _quiet_root_logger():
    """ONNX Runtime's quantiser logs a line per tensor, and generic advice, on the root logger; keep
    that out of our logs (its errors still pass)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def encoder_weight_matmuls(model_path: str | os.PathLike, node_prefix: str = ENCODER_NODE_PREFIX) -> list[str]:
    """Names of the encoder's MatMul nodes whose second input is a weight (an initializer)."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    weights = {initializer.name for initializer in graph.initializer}
    return [
        node.name
        for node in graph.node
        if node.op_type == "MatMul" and node.name.startswith(node_prefix) and node.input[1] in weights
    ]


def quantize_onnx_int8(
    source: str | os.PathLike, destination: str | os.PathLike, node_prefix: str = ENCODER_NODE_PREFIX
) -> int:
    """Quantise the encoder's weight MatMuls of an exported graph to 8 bits; returns how many.

    Only MatMuls with a constant weight are quantised: the attention's query-key and
    attention-value products would be quantised on both sides, which costs far more accuracy than
    it saves time. The decoder (FiLM, convolutions) stays float, as in the torch int8 path.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    nodes = encoder_weight_matmuls(source, node_prefix)
    if not nodes:
        raise ValueError(
            f"{source} has no encoder MatMul nodes named '{node_prefix}...' (not a space-clip-export graph?)"
        )
    with _quiet_root_logger():
        quantize_dynamic(
            str(source),
            str(destination),
            op_types_to_quantize=["MatMul"],
            nodes_to_quantize=nodes,
            weight_type=QuantType.QUInt8,  # u8 x u8: no saturating 16-bit sums on AVX2 (module notes)
            per_channel=True,  # one scale per output column: same speed, smaller error tail
            reduce_range=False,
            extra_options={"MatMulConstBOnly": True},
        )
    logger.info("quantised %d encoder weight MatMuls of %s to int8 -> %s", len(nodes), source, destination)
    return len(nodes)
