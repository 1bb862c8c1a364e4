"""The depth node's parameters: one table read by the node, config/depth.yaml's test and the docs.

Each :class:`~space_clip_ros.ros.parameter_table.ParameterSpec` says what a parameter is (type,
default, valid values, whether it can change while the node runs) and how to check a value;
:data:`PARAMETERS` is the whole table: the node's own parameters (model, input and QoS) written
here, then one per output option, made from :data:`space_clip_ros.outputs.options.OPTIONS` (the
outputs' one definition, shared with the bag tool). The node declares exactly these (descriptors
and checks are the ``parameter_table`` machinery's), refuses values that fail :func:`check_value`
or :func:`check_consistency`, and reads them back as one typed :class:`DepthNodeSettings` snapshot
per frame (its ``outputs`` is the OutputOptions the frame processor takes as it is).
:func:`render_markdown_table` writes the table that docs/ros_node.md carries (a test keeps the
two equal). No rclpy here: only message types.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from space_clip_ros.devices import device_problem
from space_clip_ros.inference.runtime.options import BACKENDS
from space_clip_ros.inference.runtime.predictor import PRECISIONS
from space_clip_ros.outputs.options import OPTIONS, OptionInfo, OutputOptions
from space_clip_ros.ros.parameter_table import (
    IMAGE_TRANSPORTS,
    RELIABILITIES,
    ParameterSpec,
    ParameterValue,
    markdown_table,
)


def _check_vision_overrides(value: str) -> str | None:
    if value == "":
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        return f"must be a JSON object (or empty), got '{value}': {exc}"
    if not isinstance(parsed, dict):
        return f"must be a JSON object such as {{\"width\": 64}}, got {type(parsed).__name__} '{value}'"
    return None


_MODEL = "model"
_INPUT = "input and QoS"


def output_parameter(option: OptionInfo) -> ParameterSpec:
    """The node parameter of an output option: same name, default, description, group and rules."""
    return ParameterSpec(
        option.name, option.default, option.description, option.group, read_only=not option.runtime,
        min_value=option.min_value, max_value=option.max_value, choices=option.choices,
        constraint_text=option.constraint_text,
    )


#: The node's own parameters (model, input and QoS), in the order config/depth.yaml and the docs list them.
NODE_PARAMETERS: tuple[ParameterSpec, ...] = (
    # ---- model: fixed for the life of the node ------------------------------------------------
    ParameterSpec(
        "checkpoint", "",
        "Decoder checkpoint (NAME, NAME.safetensors or NAME.json, as written by space-clip-train). "
        "Empty: untrained decoder with random weights (depth is meaningless; warned at start-up). "
        "A checkpoint that does not fit the backbone stops the node with the reason.",
        _MODEL, read_only=True,
    ),
    ParameterSpec(
        "backbone", "",
        "open_clip model name of the frozen vision tower, e.g. ViT-B-16. Empty: the checkpoint's "
        "(ViT-B-16 without a checkpoint). Once backbone, pretrained or vision_overrides is set, the "
        "three describe the backbone and must match the checkpoint's.",
        _MODEL, read_only=True,
    ),
    ParameterSpec(
        "pretrained", "",
        "Backbone weights: an open_clip pretrained tag (e.g. openai) or a local weights file. "
        "Empty: the checkpoint's; random weights when there is no checkpoint either.",
        _MODEL, read_only=True,
    ),
    ParameterSpec(
        "vision_overrides", "",
        "For tests/custom towers: JSON object replacing entries of open_clip's vision_cfg, e.g. "
        '{"width": 64}; only with random or local weights. Empty: none.',
        _MODEL, read_only=True, extra_check=_check_vision_overrides,
        constraint_text="empty or a JSON object",
    ),
    ParameterSpec(
        "device", "auto",
        "Where inference runs: auto (CUDA when available), cpu, cuda or cuda:N.",
        _MODEL, read_only=True, extra_check=device_problem,
        constraint_text="auto, cpu, cuda or cuda:N",
    ),
    ParameterSpec(
        "precision", "fp32",
        "Arithmetic precision: fp32, or fp16/bf16 autocast on CUDA (fp32 on a CPU).",
        _MODEL, read_only=True, choices=tuple(PRECISIONS),
    ),
    ParameterSpec(
        "backend", "torch",
        "Inference engine: torch (PyTorch), onnxruntime (an exported ONNX graph; the fast CPU path) or "
        "tensorrt (needs the tensorrt Python package).",
        _MODEL, read_only=True, choices=tuple(BACKENDS),
    ),
    ParameterSpec(
        "optimize", False,
        "Use the backend's recommended fast path on this device (batch-norm folding, SDPA, channels-last; "
        "on CPU with onnxruntime also an int8 encoder, within the tolerance of docs/benchmarks.md; fp16 "
        "weights on CUDA). false: the model exactly as trained.",
        _MODEL, read_only=True,
    ),
    ParameterSpec(
        "exported_model", "",
        "File made by space-clip-export for the onnxruntime backend (.onnx) or the tensorrt backend (.onnx or "
        "a serialised .engine/.plan). Empty: export the loaded model in memory at start-up.",
        _MODEL, read_only=True,
    ),
    # ---- input and QoS: fixed for the life of the node ----------------------------------------
    ParameterSpec(
        "image_transport", "raw",
        "raw: subscribe to sensor_msgs/Image on 'image'; compressed: subscribe to "
        "sensor_msgs/CompressedImage (JPEG/PNG) on '<image>/compressed', as image_transport names it.",
        _INPUT, read_only=True, choices=IMAGE_TRANSPORTS,
    ),
    ParameterSpec(
        "qos_depth", 5,
        "History depth of the image and camera_info subscriptions (sensor-data QoS: best effort, "
        "keep last; matches reliable and best-effort publishers).",
        _INPUT, read_only=True, min_value=1, max_value=100,
    ),
    ParameterSpec(
        "publisher_reliability", "reliable",
        "Reliability of every output publisher (keep last 5, volatile).",
        _INPUT, read_only=True, choices=RELIABILITIES,
    ),
    ParameterSpec(
        "process_every_n", 1,
        "Run inference on one in every N received frames (the others are skipped and counted).",
        _INPUT, min_value=1, max_value=1000,
    ),
)

#: Every parameter of the depth node: its own, then the output options'.
PARAMETERS: tuple[ParameterSpec, ...] = NODE_PARAMETERS + tuple(output_parameter(option) for option in OPTIONS)

PARAMETERS_BY_NAME: dict[str, ParameterSpec] = {spec.name: spec for spec in PARAMETERS}


@dataclass(frozen=True)
class DepthNodeSettings:
    """A typed snapshot of every parameter's value; the worker reads one per frame."""

    checkpoint: str
    backbone: str
    pretrained: str
    vision_overrides: str
    device: str
    precision: str
    backend: str
    optimize: bool
    exported_model: str
    image_transport: str
    qos_depth: int
    publisher_reliability: str
    process_every_n: int
    outputs: OutputOptions  # the output options' parameters, as the frame processor takes them

    @classmethod
    def from_values(cls, values: Mapping[str, ParameterValue]) -> DepthNodeSettings:
        """Settings from a name -> value mapping; missing names take the table's defaults."""
        own = {spec.name: values.get(spec.name, spec.default) for spec in NODE_PARAMETERS}
        return cls(**own, outputs=OutputOptions.from_values(values))

    @classmethod
    def defaults(cls) -> DepthNodeSettings:
        return cls.from_values({})

    def values(self) -> dict[str, ParameterValue]:
        """name -> value of every parameter, in table order."""
        return {**{spec.name: getattr(self, spec.name) for spec in NODE_PARAMETERS}, **self.outputs.values()}

    @property
    def vision_overrides_dict(self) -> dict[str, Any]:
        return json.loads(self.vision_overrides) if self.vision_overrides else {}

    def replace(self, **changes: ParameterValue) -> DepthNodeSettings:
        """These settings with some parameters (of any group) changed."""
        return DepthNodeSettings.from_values({**self.values(), **changes})


def check_value(name: str, value: Any) -> str | None:
    """None if ``value`` is valid for parameter ``name``, else the reason (unknown names too)."""
    spec = PARAMETERS_BY_NAME.get(name)
    if spec is None:
        return f"unknown parameter '{name}'; the depth node has: {', '.join(PARAMETERS_BY_NAME)}"
    return spec.check(value)


def check_consistency(values: Mapping[str, ParameterValue]) -> str | None:
    """Rules between parameters (for a complete set of values); None when they hold. They are the
    output options' (``OutputOptions.problem``): the node's own parameters have none."""
    return OutputOptions.from_values(values).problem()


def check_changes(current: Mapping[str, ParameterValue], changes: Mapping[str, Any]) -> str | None:
    """Why a set of changes to ``current`` (a complete set of values) is refused, or None.

    Each value is checked on its own, then the rules between parameters on the values the node
    would have afterwards (so min_depth and max_depth may move together in one atomic call).
    """
    for name, value in changes.items():
        reason = check_value(name, value)
        if reason is not None:
            return reason
    return check_consistency({**current, **changes})


def render_markdown_table(specs: Iterable[ParameterSpec] = PARAMETERS) -> str:
    """The parameter table of docs/ros_node.md (name, type, default, valid values, runtime, description)."""
    return markdown_table(specs)
