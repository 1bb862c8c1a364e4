"""The depth node's parameters: one table read by the node, config/depth.yaml's test and the docs.

Each :class:`ParameterSpec` says what a parameter is (type, default, valid values, whether it can
change while the node runs) and how to check a value; :data:`PARAMETERS` is the whole table.
The node declares exactly these (with descriptors built here), refuses values that fail
:func:`check_value` or :func:`check_consistency`, and reads them back as one typed
:class:`DepthNodeSettings` snapshot per frame. :func:`render_markdown_table` writes the table that
docs/ros_node.md carries (a test keeps the two equal). No rclpy here: only message types.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
)

from space_clip_ros.inference.predictor import DEVICES, PRECISIONS
from space_clip_ros.msgs import COLORMAP_NAMES, DEPTH_ENCODINGS

ParameterValue = bool | int | float | str

IMAGE_TRANSPORTS = ("raw", "compressed")
RELIABILITIES = ("reliable", "best_effort")

_CUDA_INDEX = re.compile(r"^cuda:\d+$")


def _check_device(value: str) -> str | None:
    if value in DEVICES or _CUDA_INDEX.match(value):
        return None
    return f"must be one of {', '.join(DEVICES)} or cuda:N, got '{value}'"


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


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter of the depth node.

    Attributes:
        name: the ROS parameter name.
        default: the default value; its Python type is the parameter's type.
        description: what it does (shown by ``ros2 param describe`` and in the docs).
        group: heading it is listed under in config/depth.yaml and the docs.
        read_only: fixed at start-up (model, device, topics, QoS); runtime changes are refused.
        min_value, max_value: inclusive range of an int or float parameter.
        choices: the allowed values of a string parameter.
        extra_check: further check of a value, returning the reason it is refused (or None).
        constraint_text: human-readable rule for values an extra check enforces.
    """

    name: str
    default: ParameterValue
    description: str
    group: str
    read_only: bool = False
    min_value: int | float | None = None
    max_value: int | float | None = None
    choices: tuple[str, ...] = ()
    extra_check: Callable[[Any], str | None] | None = None
    constraint_text: str = ""

    @property
    def type_name(self) -> str:
        """ROS parameter type name: bool, integer, double or string."""
        return {bool: "bool", int: "integer", float: "double", str: "string"}[type(self.default)]

    @property
    def constraints(self) -> str:
        """The valid values in words (for descriptors and docs)."""
        parts = []
        if self.min_value is not None and self.max_value is not None:
            parts.append(f"{self.min_value} to {self.max_value}")
        if self.choices:
            parts.append("one of: " + ", ".join(self.choices))
        if self.constraint_text:
            parts.append(self.constraint_text)
        return "; ".join(parts)

    def check(self, value: Any) -> str | None:
        """None if ``value`` is valid for this parameter, else the reason it is not."""
        expected = type(self.default)
        # bool is an int in Python; a ROS bool is never an integer or double parameter.
        type_ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            type_ok = True
        if not type_ok:
            article = "an" if self.type_name == "integer" else "a"
            return f"{self.name} must be {article} {self.type_name}, got {type(value).__name__} {value!r}"
        if expected is float and not math.isfinite(value):
            return f"{self.name} must be finite, got {value}"
        if self.min_value is not None and value < self.min_value:
            return f"{self.name} must be >= {self.min_value}, got {value}"
        if self.max_value is not None and value > self.max_value:
            return f"{self.name} must be <= {self.max_value}, got {value}"
        if self.choices and value not in self.choices:
            return f"{self.name} must be one of {', '.join(self.choices)}; got '{value}'"
        if self.extra_check is not None:
            reason = self.extra_check(value)
            if reason is not None:
                return f"{self.name} {reason}"
        return None

    def descriptor(self) -> ParameterDescriptor:
        """The ParameterDescriptor the node declares this parameter with."""
        when = " Read-only: set at start-up." if self.read_only else " Can change at runtime."
        text = self.description + when
        descriptor = ParameterDescriptor(
            name=self.name,
            type=getattr(ParameterType, "PARAMETER_" + self.type_name.upper()),
            description=text,
            additional_constraints=self.constraints,
            read_only=self.read_only,
        )
        if isinstance(self.default, float) and self.min_value is not None:
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=float(self.min_value), to_value=float(self.max_value), step=0.0)
            ]
        elif self.type_name == "integer" and self.min_value is not None:
            descriptor.integer_range = [
                IntegerRange(from_value=int(self.min_value), to_value=int(self.max_value), step=1)
            ]
        return descriptor


_MODEL = "model"
_INPUT = "input and QoS"
_DEPTH = "depth image"
_POINTS = "point cloud"
_EXTRA = "extra outputs"

#: Every parameter of the depth node, in the order config/depth.yaml and the docs list them.
PARAMETERS: tuple[ParameterSpec, ...] = (
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
        _MODEL, read_only=True, extra_check=_check_device,
        constraint_text="auto, cpu, cuda or cuda:N",
    ),
    ParameterSpec(
        "precision", "fp32",
        "Arithmetic precision: fp32, or fp16/bf16 autocast on CUDA (fp32 on a CPU).",
        _MODEL, read_only=True, choices=tuple(PRECISIONS),
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
    # ---- depth image --------------------------------------------------------------------------
    ParameterSpec(
        "frame_id", "",
        "frame_id written into every output header. Empty: the input image's header.frame_id "
        "(the camera's optical frame).",
        _DEPTH,
    ),
    ParameterSpec(
        "depth_encoding", "32FC1",
        "depth/image encoding (REP 118): 32FC1 metres with NaN where invalid, or 16UC1 "
        "millimetres with 0 where invalid.",
        _DEPTH, choices=DEPTH_ENCODINGS,
    ),
    ParameterSpec(
        "min_depth", 0.1,
        "Depths below this (metres) are invalid (NaN / 0) in the depth image and absent from the cloud.",
        _DEPTH, min_value=0.0, max_value=1000.0, constraint_text="< max_depth",
    ),
    ParameterSpec(
        "max_depth", 10.0,
        "Depths above this (metres) are invalid (NaN / 0) in the depth image and absent from the cloud.",
        _DEPTH, min_value=0.001, max_value=1000.0, constraint_text="> min_depth",
    ),
    ParameterSpec(
        "output_width", 0,
        "Width of the depth outputs in pixels. 0 (with output_height 0): the input image's size.",
        _DEPTH, min_value=0, max_value=8192, constraint_text="0 together with output_height, or both > 0",
    ),
    ParameterSpec(
        "output_height", 0,
        "Height of the depth outputs in pixels. 0 (with output_width 0): the input image's size.",
        _DEPTH, min_value=0, max_value=8192, constraint_text="0 together with output_width, or both > 0",
    ),
    ParameterSpec(
        "focal_rescale", True,
        "Rescale depth by the camera's focal length relative to the training camera's "
        "(checkpoint record; needs camera_info). Off: depth as the model predicts it.",
        _DEPTH,
    ),
    # ---- point cloud --------------------------------------------------------------------------
    ParameterSpec(
        "publish_points", True,
        "Publish sensor_msgs/PointCloud2 on 'points' (once a CameraInfo has arrived).",
        _POINTS,
    ),
    ParameterSpec(
        "points_organized", True,
        "true: organised cloud (rows x columns of the strided depth grid, NaN where invalid, "
        "is_dense false), as depth_image_proc publishes; false: one row of valid points only.",
        _POINTS,
    ),
    ParameterSpec(
        "points_stride", 1,
        "Decimation: use every Nth pixel in both directions.",
        _POINTS, min_value=1, max_value=64,
    ),
    ParameterSpec(
        "points_max_range", 0.0,
        "Leave out points farther than this along the optical axis (metres). 0: max_depth.",
        _POINTS, min_value=0.0, max_value=1000.0,
    ),
    ParameterSpec(
        "points_rgb", False,
        "Add the packed rgb field (XYZRGB, colours from the input image).",
        _POINTS,
    ),
    # ---- extra outputs ------------------------------------------------------------------------
    ParameterSpec(
        "publish_colored", False,
        "Publish a bgr8 colour-mapped depth picture on 'depth/colored' for viewing.",
        _EXTRA,
    ),
    ParameterSpec(
        "colormap", "turbo",
        "OpenCV colour map of depth/colored (near = warm for turbo/jet).",
        _EXTRA, choices=COLORMAP_NAMES,
    ),
    ParameterSpec(
        "publish_embedding", False,
        "Publish the CLIP image embedding of each frame (same encoder pass as the depth) on "
        "'clip/image_embedding'.",
        _EXTRA,
    ),
)

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
    image_transport: str
    qos_depth: int
    publisher_reliability: str
    process_every_n: int
    frame_id: str
    depth_encoding: str
    min_depth: float
    max_depth: float
    output_width: int
    output_height: int
    focal_rescale: bool
    publish_points: bool
    points_organized: bool
    points_stride: int
    points_max_range: float
    points_rgb: bool
    publish_colored: bool
    colormap: str
    publish_embedding: bool

    @classmethod
    def from_values(cls, values: Mapping[str, ParameterValue]) -> DepthNodeSettings:
        """Settings from a name -> value mapping; missing names take the table's defaults."""
        merged = {spec.name: values.get(spec.name, spec.default) for spec in PARAMETERS}
        for spec in PARAMETERS:
            if isinstance(spec.default, float):
                merged[spec.name] = float(merged[spec.name])  # ROS may hand over an int for 10
        return cls(**merged)

    @classmethod
    def defaults(cls) -> DepthNodeSettings:
        return cls.from_values({})

    @property
    def output_size(self) -> tuple[int, int] | None:
        """(height, width) of the depth outputs, or None for the input image's size."""
        if self.output_width > 0 and self.output_height > 0:
            return self.output_height, self.output_width
        return None

    @property
    def cloud_max_range(self) -> float:
        """Farthest z a cloud point may have (metres)."""
        return self.points_max_range if self.points_max_range > 0.0 else self.max_depth

    @property
    def vision_overrides_dict(self) -> dict[str, Any]:
        return json.loads(self.vision_overrides) if self.vision_overrides else {}

    def replace(self, **changes: ParameterValue) -> DepthNodeSettings:
        return dataclasses.replace(self, **changes)


def check_value(name: str, value: Any) -> str | None:
    """None if ``value`` is valid for parameter ``name``, else the reason (unknown names too)."""
    spec = PARAMETERS_BY_NAME.get(name)
    if spec is None:
        return f"unknown parameter '{name}'; the depth node has: {', '.join(PARAMETERS_BY_NAME)}"
    return spec.check(value)


def check_consistency(values: Mapping[str, ParameterValue]) -> str | None:
    """Rules between parameters (for a complete set of values); None when they hold."""
    min_depth, max_depth = float(values["min_depth"]), float(values["max_depth"])
    if not min_depth < max_depth:
        return f"min_depth ({min_depth}) must be smaller than max_depth ({max_depth})"
    width, height = int(values["output_width"]), int(values["output_height"])
    if (width == 0) != (height == 0):
        return (
            f"output_width ({width}) and output_height ({height}) must both be 0 (input size) "
            "or both > 0"
        )
    return None


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


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _format_default(value: ParameterValue) -> str:
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value}`"


def render_markdown_table(specs: Iterable[ParameterSpec] = PARAMETERS) -> str:
    """The parameter table of docs/ros_node.md (name, type, default, valid values, runtime, description)."""
    lines = [
        "| parameter | type | default | valid values | runtime change | description |",
        "|---|---|---|---|---|---|",
    ]
    for spec in specs:
        lines.append(
            "| "
            + " | ".join(
                [
                    f"`{spec.name}`",
                    spec.type_name,
                    _format_default(spec.default),
                    _markdown_cell(spec.constraints or "any"),
                    "no (read-only)" if spec.read_only else "yes, next frame",
                    _markdown_cell(spec.description),
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"
