"""The depth node's parameters: one table read by the node, config/depth.yaml's test and the docs.

Each :class:`~space_clip_ros.ros.parameter_table.ParameterSpec` says what a parameter is (type,
default, valid values, whether it can change while the node runs) and how to check a value;
:data:`PARAMETERS` is the whole table: the node's own parameters (model, input and QoS, cameras)
written here, then one per output option, made from :data:`space_clip_ros.outputs.options.OPTIONS`
(the outputs' one definition, shared with the bag tool). Each name of the ``cameras`` parameter
also has the parameters of :data:`CAMERA_PARAMETERS`, as ``<camera>.<name>`` (nested YAML). The
node declares exactly these (descriptors and checks are the ``parameter_table`` machinery's),
refuses values that fail :func:`check_value` or :func:`check_consistency`, and reads them back as
one typed :class:`DepthNodeSettings` snapshot per frame (:meth:`DepthNodeSettings.outputs_for` is
the OutputOptions the frame processor takes for a camera). :func:`render_markdown_table` and
:func:`render_camera_markdown_table` write the tables that docs/ros_node.md carries (a test keeps
them equal). No rclpy here: only message types.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from space_clip_ros.devices import device_problem
from space_clip_ros.inference.runtime.options import BACKEND_CHOICES, PRECISION_CHOICES
from space_clip_ros.outputs.options import OPTIONS, OptionInfo, OutputOptions
from space_clip_ros.ros.parameter_table import (
    IMAGE_TRANSPORTS,
    INPUT_RELIABILITIES,
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
_CAMERAS = "cameras"

#: What a camera name may look like: it becomes a topic prefix and a parameter prefix.
CAMERA_NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
#: The largest camera_info_tolerance (seconds).
MAX_CAMERA_INFO_TOLERANCE_S = 10.0


def _check_camera_transport(value: str) -> str | None:
    if value and value not in IMAGE_TRANSPORTS:
        return f"must be empty (the node's image_transport) or one of {', '.join(IMAGE_TRANSPORTS)}; got '{value}'"
    return None


def _check_camera_names(names: list[str]) -> str | None:
    bad = [name for name in names if not CAMERA_NAME_PATTERN.fullmatch(name)]
    if bad:
        return (f"names must start with a letter and hold only letters, digits and underscores (a topic and "
                f"parameter prefix each); got {bad}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        return f"must not repeat a name; {repeated} appear more than once"
    return None


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
        "precision", "auto",
        "Arithmetic precision. auto: the fastest one within the depth tolerance with backend auto, else fp16 "
        "on CUDA and fp32 on a CPU. fp16/bf16 on CUDA: the model's weights (optimize) or autocast. bf16 on a "
        "CPU with bf16 arithmetic (AVX-512-BF16, AMX), optimize: torch backend, decoder and attention in "
        "bf16; onnxruntime backend, the decoder's last stage and head in bf16 (in torch); fp32 elsewhere.",
        _MODEL, read_only=True, choices=PRECISION_CHOICES,
    ),
    ParameterSpec(
        "backend", "auto",
        "Inference engine. auto (with optimize): on first start, measure this device's fast paths (CPU: "
        "torch with an int8 encoder and an fp32 or bf16 decoder, onnxruntime int8 / fp32; CUDA: torch "
        "fp16/bf16 with and without CUDA graphs, torch.compile, tensorrt when installed), keep the fastest "
        "within the depth tolerance of docs/benchmarks.md and cache the choice (auto_cache), so a restart "
        "does not measure again; the choice and its latency are logged and in /diagnostics. torch, "
        "onnxruntime (an exported ONNX graph) or tensorrt (needs the tensorrt package) force one.",
        _MODEL, read_only=True, choices=BACKEND_CHOICES,
    ),
    ParameterSpec(
        "optimize", True,
        "Use a fast path: batch-norm folding, SDPA, channels-last; on a CPU an int8 encoder (and bf16, see "
        "precision), on CUDA half-precision weights; within the tolerance of docs/benchmarks.md. false: the "
        "model exactly as trained (torch eager fp32 with backend auto).",
        _MODEL, read_only=True,
    ),
    ParameterSpec(
        "cuda_graphs", False,
        "Torch backend on CUDA: capture the model in CUDA graphs (one per input shape) and replay them. "
        "Backend auto measures this path by itself.",
        _MODEL, read_only=True,
    ),
    ParameterSpec(
        "auto_cache", "",
        "JSON file where backend auto keeps its choices (per machine, model, sizes and software versions). "
        "Empty: $SPACE_CLIP_AUTO_CACHE, else $XDG_CACHE_HOME/space_clip_ros/auto_paths.json "
        "(~/.cache/...). Delete the file to measure again. The ONNX Runtime graphs, exported and quantised, "
        "are kept beside it (onnx_graphs/, at most 1.5 GB, least recently used removed), so a restart "
        "loads them in about a second instead of exporting again.",
        _MODEL, read_only=True,
    ),
    ParameterSpec(
        "calibration_images", "",
        "Frames from this camera (a folder of PNG/JPEG images, or a glob) that calibrate the int8 decoder. "
        "With two or more, on a CPU with VNNI/AMX int8 dot products, backend auto also measures onnxruntime "
        "with an int8 decoder (calibrated on every other frame) and checks every path's depth on the other "
        "frames too; backend onnxruntime uses the int8 decoder, calibrated on all of them. auto: the frames "
        "this node kept from its camera on an earlier run (camera_frames/<node> beside the auto_cache file); "
        "while there are none, it keeps 12, 1 s apart, as it runs, then chooses the path again with them in the "
        "background and switches to it without a restart (the next start uses them at once). Empty: no int8 decoder "
        "(calibrated on synthetic frames it fails on real cameras; docs/benchmarks.md).",
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
        "History depth of the image and camera_info subscriptions (keep last; camera_info is best effort, "
        "which matches reliable and best-effort publishers; the image as image_reliability says).",
        _INPUT, read_only=True, min_value=1, max_value=100,
    ),
    ParameterSpec(
        "image_reliability", "auto",
        "Reliability of the image subscription. auto: match the image topic's publishers, rechecked every "
        "second: reliable when all of them offer reliable (a large frame, e.g. 640x480 rgb8 under Fast DDS, "
        "travels in fragments; best effort loses the frame with any fragment: 0.47 of 5 frames/s arrived, "
        "reliable 4.97), else best effort (matches every publisher). best_effort or reliable force one "
        "(a reliable subscription does not match a best-effort camera driver).",
        _INPUT, read_only=True, choices=INPUT_RELIABILITIES,
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
    # ---- cameras: what each camera sends and how it is paired with its CameraInfo -------------------
    ParameterSpec(
        "cameras", [],
        "Names of the cameras this one node serves (one model in memory; the frames waiting go through one "
        "batched encoder + decoder pass). Camera N reads N/image (or N/image/compressed) and N/camera_info and "
        "publishes N/depth/image, N/depth/camera_info, N/points and the other outputs under N/; its own "
        "parameters are N.image_transport, N.output_width and N.output_height. Empty: one camera on image and "
        "camera_info, outputs in the node's namespace.",
        _CAMERAS, read_only=True, extra_check=_check_camera_names,
        constraint_text="names of letters, digits and underscores, starting with a letter; no repeats",
    ),
    ParameterSpec(
        "camera_info_tolerance", 0.0,
        "Seconds. Each image takes the CameraInfo with its own stamp; when none has arrived, the one with the "
        "nearest stamp within this tolerance, and beyond it none (depth image only, no depth/camera_info or "
        "cloud; a warning names both stamps). 0: the same stamp when it has arrived, else the latest CameraInfo "
        "whatever its stamp (for cameras that publish CameraInfo rarely, latched, or with other stamps).",
        _CAMERAS, read_only=True, min_value=0.0, max_value=MAX_CAMERA_INFO_TOLERANCE_S,
    ),
    ParameterSpec(
        "undistort", True,
        "Remove lens distortion before inference when the CameraInfo's D is not all zero (plumb_bob, "
        "rational_polynomial, equidistant; maps built once per calibration): depth, depth/camera_info (D zero, "
        "K and P of the undistorted image, which keeps K) and the cloud describe the undistorted image. "
        "false: the image as it is, D ignored.",
        _CAMERAS,
    ),
)

#: Parameters every camera of ``cameras`` has, as ``<camera>.<name>``. The values -1 and "" take the
#: node's parameter of the same name.
CAMERA_PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec(
        "image_transport", "",
        "raw or compressed, as the node's image_transport but for this camera. Empty: the node's.",
        _CAMERAS, read_only=True, extra_check=_check_camera_transport,
        constraint_text="empty (the node's), " + " or ".join(IMAGE_TRANSPORTS),
    ),
    ParameterSpec(
        "output_width", -1,
        "Width of this camera's depth outputs. -1: the node's output_width; 0 (with output_height 0): the "
        "camera's image size.",
        _CAMERAS, min_value=-1, max_value=8192, constraint_text="-1, 0 or > 0 together with output_height",
    ),
    ParameterSpec(
        "output_height", -1,
        "Height of this camera's depth outputs. -1: the node's output_height; 0 (with output_width 0): the "
        "camera's image size.",
        _CAMERAS, min_value=-1, max_value=8192, constraint_text="-1, 0 or > 0 together with output_width",
    ),
)
CAMERA_PARAMETERS_BY_NAME: dict[str, ParameterSpec] = {spec.name: spec for spec in CAMERA_PARAMETERS}


def camera_parameter_specs(camera: str) -> tuple[ParameterSpec, ...]:
    """The parameters of one camera, named ``<camera>.<name>``."""
    return tuple(dataclasses.replace(spec, name=f"{camera}.{spec.name}") for spec in CAMERA_PARAMETERS)


def parameter_spec(name: str) -> ParameterSpec | None:
    """The spec of a node parameter or of a camera's (``<camera>.<name>``), or None."""
    spec = PARAMETERS_BY_NAME.get(name)
    if spec is not None:
        return spec
    camera, _, own = name.partition(".")
    spec = CAMERA_PARAMETERS_BY_NAME.get(own)
    if spec is None or not CAMERA_NAME_PATTERN.fullmatch(camera):
        return None
    return dataclasses.replace(spec, name=name)

#: Every parameter of the depth node: its own, then the output options'.
PARAMETERS: tuple[ParameterSpec, ...] = NODE_PARAMETERS + tuple(output_parameter(option) for option in OPTIONS)

PARAMETERS_BY_NAME: dict[str, ParameterSpec] = {spec.name: spec for spec in PARAMETERS}


@dataclass(frozen=True)
class CameraSettings:
    """One camera's own parameters (``<camera>.<name>``); -1 and "" mean "the node's"."""

    name: str
    image_transport: str = ""
    output_width: int = -1
    output_height: int = -1

    @classmethod
    def from_values(cls, name: str, values: Mapping[str, ParameterValue]) -> CameraSettings:
        own = {spec.name: values.get(f"{name}.{spec.name}", spec.default) for spec in CAMERA_PARAMETERS}
        return cls(name=name, **own)

    def values(self) -> dict[str, ParameterValue]:
        """``<camera>.<name>`` -> value of each of the camera's parameters."""
        return {f"{self.name}.{spec.name}": getattr(self, spec.name) for spec in CAMERA_PARAMETERS}

    def problem(self) -> str | None:
        """Why this camera's output size cannot be used, or None."""
        width, height = self.output_width, self.output_height
        if (width == -1) != (height == -1) or (width == 0) != (height == 0):
            return (
                f"{self.name}.output_width ({width}) and {self.name}.output_height ({height}) must both be -1 (the "
                "node's size), both 0 (input size) or both > 0"
            )
        return None


@dataclass(frozen=True)
class DepthNodeSettings:
    """A typed snapshot of every parameter's value; the worker reads one per batch of frames."""

    checkpoint: str
    backbone: str
    pretrained: str
    vision_overrides: str
    device: str
    precision: str
    backend: str
    optimize: bool
    cuda_graphs: bool
    auto_cache: str
    calibration_images: str
    exported_model: str
    image_transport: str
    qos_depth: int
    image_reliability: str
    publisher_reliability: str
    process_every_n: int
    cameras: tuple[str, ...]
    camera_info_tolerance: float
    undistort: bool
    outputs: OutputOptions  # the output options' parameters (each camera's size may differ: outputs_for)
    camera_settings: tuple[CameraSettings, ...] = ()  # one per name of ``cameras``, in that order

    @classmethod
    def from_values(cls, values: Mapping[str, ParameterValue]) -> DepthNodeSettings:
        """Settings from a name -> value mapping; missing names take the table's defaults."""
        own = {spec.name: spec.value_or_default(values.get(spec.name, spec.default)) for spec in NODE_PARAMETERS}
        own["cameras"] = tuple(own["cameras"])
        own["camera_info_tolerance"] = float(own["camera_info_tolerance"])
        cameras = tuple(CameraSettings.from_values(name, values) for name in own["cameras"])
        return cls(**own, outputs=OutputOptions.from_values(values), camera_settings=cameras)

    @classmethod
    def defaults(cls) -> DepthNodeSettings:
        return cls.from_values({})

    def values(self) -> dict[str, ParameterValue]:
        """name -> value of every parameter, in table order, then the cameras' own."""
        own = {spec.name: getattr(self, spec.name) for spec in NODE_PARAMETERS}
        own["cameras"] = list(self.cameras)
        cameras = {name: value for camera in self.camera_settings for name, value in camera.values().items()}
        return {**own, **self.outputs.values(), **cameras}

    @property
    def vision_overrides_dict(self) -> dict[str, Any]:
        return json.loads(self.vision_overrides) if self.vision_overrides else {}

    def replace(self, **changes: ParameterValue) -> DepthNodeSettings:
        """These settings with some parameters (of any group) changed."""
        return DepthNodeSettings.from_values({**self.values(), **changes})

    def camera(self, name: str) -> CameraSettings:
        """The own parameters of camera ``name`` (the single camera of an empty ``cameras``: "")."""
        return next((camera for camera in self.camera_settings if camera.name == name), CameraSettings(name))

    def image_transport_for(self, camera: str) -> str:
        """raw or compressed, for camera ``camera``."""
        return self.camera(camera).image_transport or self.image_transport

    def outputs_for(self, camera: str) -> OutputOptions:
        """The output options of camera ``camera``: the node's, with the camera's own output size."""
        own = self.camera(camera)
        if own.output_width == -1:
            return self.outputs
        return self.outputs.replace(output_width=own.output_width, output_height=own.output_height)


def check_value(name: str, value: Any) -> str | None:
    """None if ``value`` is valid for parameter ``name``, else the reason (unknown names too)."""
    spec = parameter_spec(name)
    if spec is None:
        return (f"unknown parameter '{name}'; the depth node has: {', '.join(PARAMETERS_BY_NAME)} and, per "
                f"camera, <camera>.{{{', '.join(CAMERA_PARAMETERS_BY_NAME)}}}")
    return spec.check(value)


def check_consistency(values: Mapping[str, ParameterValue]) -> str | None:
    """Rules between parameters (for a complete set of values); None when they hold: the output
    options' (``OutputOptions.problem``), then each camera's output size."""
    problem = OutputOptions.from_values(values).problem()
    if problem is not None:
        return problem
    names = PARAMETERS_BY_NAME["cameras"].value_or_default(values.get("cameras"))
    return next((p for p in (CameraSettings.from_values(n, values).problem() for n in names) if p), None)


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


def render_camera_markdown_table() -> str:
    """The per-camera parameter table of docs/ros_node.md (names as ``<camera>.<name>``)."""
    return markdown_table(dataclasses.replace(spec, name=f"<camera>.{spec.name}") for spec in CAMERA_PARAMETERS)
