"""Dynamic int8 quantisation of the encoder's matrix products, for CPUs.

Dynamic quantisation stores the Linear weights as 8-bit integers and quantises each call's
activations on the fly, so it needs no calibration data. It covers the ViT's four Linear layers
per block (qkv, attention output, MLP in and out), about 95 % of the encoder's arithmetic; the
attention's activation-activation products stay in float.

Torch path: ``torch.ao`` dynamic quantisation with one weight scale per output channel (per
tensor is available, but its error is larger at the same speed).

ONNX Runtime path: one scale per output channel, unsigned 8-bit activations, and the weights'
type chosen by the CPU (``signed_weights``). Without VNNI (AVX2 only), measured on ViT-B/16 on a
Zen 3, depth against fp32: u8 x u8 median relative error 0.35 %; u8 x s8 (the quantiser's
default) 14 %, because the AVX2 u8 x s8 kernel sums pairs of products in saturating 16-bit lanes;
u8 x s8 with 7-bit weights (``reduce_range``) 1.6 %; speed within 5-10 %. With VNNI (AVX-512 or
AVX VNNI, AMX) the u8 x s8 products sum into 32 bits without saturation and ONNX Runtime's u8 x s8
kernels were about 23 % faster than u8 x u8 (Zen 5), so s8 weights are used there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings

import torch
from torch import nn

logger = logging.getLogger(__name__)


def quantize_linear_int8(module: nn.Module, per_channel: bool = True) -> nn.Module:
    """Return ``module`` with every ``nn.Linear`` replaced by a dynamically quantised int8 Linear.

    ``per_channel``: one weight scale per output channel (``per_channel_dynamic_qconfig``), else
    one per tensor. Uses ``torch.ao.quantization.quantize_dynamic`` (deprecated in favour of
    torchao, which is not installed here, but still shipped and working in torch 2.15). Raises
    RuntimeError with a clear message when this torch build has no quantised CPU engine.
    """
    engines = torch.backends.quantized.supported_engines
    if not any(engine in engines for engine in ("x86", "fbgemm", "qnnpack", "onednn")):
        raise RuntimeError(f"this torch build has no quantised CPU engine (engines: {engines})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

        qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
        return torch.ao.quantization.quantize_dynamic(module, {nn.Linear: qconfig}, dtype=torch.qint8, inplace=False)


ENCODER_NODE_PREFIX = "/model/backbone/"  # node names of the encoder in graphs made by export.py


@contextlib.contextmanager
def quiet_root_logger():
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
    source: str | os.PathLike,
    destination: str | os.PathLike,
    node_prefix: str = ENCODER_NODE_PREFIX,
    signed_weights: bool = False,
) -> int:
    """Quantise the encoder's weight MatMuls of an exported graph to 8 bits; returns how many.

    Only MatMuls with a constant weight are quantised: the attention's query-key and
    attention-value products would be quantised on both sides, which costs far more accuracy than
    it saves time. The decoder (FiLM, convolutions) stays float, as in the torch int8 path.
    ``signed_weights``: s8 weights (u8 x s8 products), for CPUs with VNNI only (module notes);
    the default u8 weights are right on every CPU.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    nodes = encoder_weight_matmuls(source, node_prefix)
    if not nodes:
        raise ValueError(
            f"{source} has no encoder MatMul nodes named '{node_prefix}...' (not a space-clip-export graph?)"
        )
    with quiet_root_logger():
        quantize_dynamic(
            str(source),
            str(destination),
            op_types_to_quantize=["MatMul"],
            nodes_to_quantize=nodes,
            # u8 x u8: no saturating 16-bit sums on AVX2; u8 x s8 where VNNI sums exactly (module notes)
            weight_type=QuantType.QInt8 if signed_weights else QuantType.QUInt8,
            per_channel=True,  # one scale per output column: same speed, smaller error tail
            reduce_range=False,
            extra_options={"MatMulConstBOnly": True},
        )
    logger.info("quantised %d encoder weight MatMuls of %s to int8 (%s weights) -> %s", len(nodes), source,
                "s8" if signed_weights else "u8", destination)
    return len(nodes)
