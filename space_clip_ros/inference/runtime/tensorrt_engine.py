"""The TensorRT backend: a TensorRT engine built from the exported ONNX graph, fed with CUDA tensors.

Needs the ``tensorrt`` Python package (TensorRT 8.6 or 10.x) and a CUDA device; both are checked
up front with an error that says what to install. The engine is loaded from a file made by
``trtexec --saveEngine`` (see docs/export.md), or built at start-up from an ONNX file or from an
on-the-fly export (building takes a minute or more; save the engine for robots).
Inputs and outputs stay on the GPU: TensorRT reads and writes torch tensors' memory directly.

Note: written against the TensorRT 10 Python API and not yet run on a GPU machine.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from ...model import SpaceClip
from ..rewrites.export import DEPTH_OUTPUT, EMBEDDING_OUTPUT, IMAGE_INPUT, PIXELS_INPUT, ExportOptions, export_onnx
from .memory import return_freed_memory_to_os
from .options import TensorRTOptions
from .prediction import NO_AUXILIARY_HEADS, Prediction

logger = logging.getLogger(__name__)


def import_tensorrt():
    """The ``tensorrt`` module, or a RuntimeError saying how to get it."""
    try:
        import tensorrt
    except ImportError as exc:
        raise RuntimeError(
            "the tensorrt backend needs NVIDIA TensorRT's Python package, which is not installed "
            "(pip install tensorrt, or the python3-libnvinfer package of JetPack on Jetson). "
            "Use backend 'torch' (fp16) or 'onnxruntime' meanwhile."
        ) from exc
    return tensorrt


def _torch_dtype(trt, dtype) -> torch.dtype:
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.uint8: torch.uint8}
    for name, torch_type in (("bfloat16", torch.bfloat16), ("int64", torch.int64)):
        if hasattr(trt, name):
            table[getattr(trt, name)] = torch_type
    if dtype not in table:
        raise ValueError(f"TensorRT tensor type {dtype} has no torch equivalent here")
    return table[dtype]


def build_serialized_engine(onnx_bytes: bytes, options: TensorRTOptions, trt_logger) -> bytes:
    """Parse an ONNX graph and build a serialised TensorRT engine (fp16 allowed when asked)."""
    trt = import_tensorrt()
    builder = trt.Builder(trt_logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # required by TensorRT 8.x
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse the ONNX graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_bytes))
    if options.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    graph_input = network.get_input(0)
    shape = tuple(graph_input.shape)
    if shape[0] == -1:  # dynamic batch: one optimisation profile from 1 to max_batch
        profile = builder.create_optimization_profile()
        rest = shape[1:]
        profile.set_shape(graph_input.name, (1, *rest), (1, *rest), (int(options.max_batch), *rest))
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build an engine (see the TensorRT log above)")
    return bytes(serialized)


class TensorRTEngine:
    """Runs a TensorRT engine of a SPACE-CLIP export on CUDA tensors."""

    name = "tensorrt"
    auxiliary_heads = 0  # exported graphs carry the depth (and embedding) outputs only

    def __init__(self, model: SpaceClip | None, device: torch.device, options: TensorRTOptions) -> None:
        trt = import_tensorrt()
        if device.type != "cuda":
            raise RuntimeError("the tensorrt backend needs a CUDA device")
        self.trt = trt
        self.device = device
        self.options = options
        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._logger)
        if options.engine_path is not None:
            serialized = Path(options.engine_path).read_bytes()
            self.origin = f"engine {options.engine_path}"
        else:
            if options.onnx_path is not None:
                onnx_bytes = Path(options.onnx_path).read_bytes()
                self.origin = f"built from {options.onnx_path}"
            elif model is not None:
                buffer = io.BytesIO()
                export_onnx(model, buffer, ExportOptions(dynamic_batch=True, with_embedding=True))
                onnx_bytes = buffer.getvalue()
                self.origin = "built from an on-the-fly export"
            else:
                raise ValueError("the tensorrt backend needs an engine_path, an onnx_path or a model")
            logger.info("building a TensorRT engine (fp16=%s); this takes a while", options.fp16)
            with torch.cuda.device(device):  # tactics are timed on the device the engine runs on
                serialized = build_serialized_engine(onnx_bytes, options, self._logger)
        with torch.cuda.device(device):
            self.engine = runtime.deserialize_cuda_engine(serialized)
            if self.engine is None:
                raise RuntimeError(
                    f"TensorRT could not load the engine ({self.origin}); was it built with this TensorRT version?"
                )
            self.context = self.engine.create_execution_context()
        del serialized
        return_freed_memory_to_os()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1 or inputs[0] not in (PIXELS_INPUT, IMAGE_INPUT):
            raise ValueError(
                f"engine inputs {inputs} are not a SPACE-CLIP export ('{PIXELS_INPUT}' or '{IMAGE_INPUT}')"
            )
        self.input_name = inputs[0]
        self.output_names = [n for n in names if n not in inputs]
        if DEPTH_OUTPUT not in self.output_names:
            raise ValueError(f"engine has no '{DEPTH_OUTPUT}' output (outputs: {self.output_names})")
        self.input_shape = tuple(self.engine.get_tensor_shape(self.input_name))

    @property
    def takes_images(self) -> bool:
        return self.input_name == IMAGE_INPUT

    @property
    def image_size(self) -> tuple[int, int] | None:
        return (int(self.input_shape[1]), int(self.input_shape[2])) if self.takes_images else None

    def run(self, inputs: torch.Tensor, output_size: tuple[int, int], with_embedding: bool,
            confidence_heads: tuple[tuple[int, float], ...] = ()) -> Prediction:
        if confidence_heads:
            raise ValueError(NO_AUXILIARY_HEADS)
        if with_embedding and EMBEDDING_OUTPUT not in self.output_names:
            raise ValueError("this engine was built from a graph without the embedding output")
        input_type = _torch_dtype(self.trt, self.engine.get_tensor_dtype(self.input_name))
        inputs = inputs.to(device=self.device, dtype=input_type).contiguous()
        if not self.context.set_input_shape(self.input_name, tuple(inputs.shape)):
            # Otherwise the output shapes stay unresolved (-1) and the allocation below fails obscurely.
            raise ValueError(self._unsupported_shape_message(tuple(inputs.shape)))
        # The execution context belongs to the device it was made on; the current device may be
        # another one (cuda:N, or a worker thread, whose current device is always cuda:0).
        with torch.cuda.device(self.device):
            self.context.set_tensor_address(self.input_name, inputs.data_ptr())
            outputs: dict[str, torch.Tensor] = {}
            for name in self.output_names:
                shape = tuple(self.context.get_tensor_shape(name))
                dtype = _torch_dtype(self.trt, self.engine.get_tensor_dtype(name))
                outputs[name] = torch.empty(shape, dtype=dtype, device=self.device)
                self.context.set_tensor_address(name, outputs[name].data_ptr())
            stream = torch.cuda.current_stream(self.device)
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed (see the TensorRT log)")
            depth = outputs[DEPTH_OUTPUT].float()
            if tuple(depth.shape[-2:]) != tuple(output_size):
                depth = F.interpolate(depth, size=tuple(output_size), mode="bilinear", align_corners=False)
            embedding = outputs[EMBEDDING_OUTPUT].float() if with_embedding else None
        return Prediction(depth=depth[:, 0], embedding=embedding)

    def _unsupported_shape_message(self, shape: tuple[int, ...]) -> str:
        message = f"the TensorRT engine does not take an input of shape {shape} (its input is {self.input_shape})"
        if -1 in self.input_shape and self.engine.num_optimization_profiles > 0:
            low, _, high = (tuple(dims) for dims in self.engine.get_tensor_profile_shape(self.input_name, 0))
            message += (
                f"; its optimisation profile allows {low} to {high}: run smaller batches, or build the engine "
                "for larger ones (TensorRTOptions.max_batch, trtexec --maxShapes)"
            )
        return message

    def describe(self) -> str:
        return f"tensorrt ({self.origin}, fp16={self.options.fp16})"
