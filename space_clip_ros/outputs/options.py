"""What to make of a depth map: the output options, defined once.

:class:`OutputOptions` is the one definition of the depth outputs' options (encoding, depth range
and what out-of-range pixels hold, size, frame id, focal rescaling, metric scale anchor, point
cloud and its filters, colour picture, embedding, confidence). Each field carries its
metadata (:class:`OptionInfo`: description, docs group, valid values, whether it may change while
the node runs, the bag tool's command-line flag), and from it come

* the depth node's parameters of the same names (``ros.parameters`` makes a ParameterSpec of each
  :data:`OPTIONS` entry, which also gives config/depth.yaml's test and the docs tables),
* the node's settings snapshot (``DepthNodeSettings.outputs`` is an OutputOptions),
* the bag tool's options (``bags.bag_depth.BagDepthOptions.outputs``) and its flags
  (``cli.bag``, every option with a ``flag``),
* what :class:`~space_clip_ros.outputs.builder.DepthOutputBuilder` builds.

Adding an option: one field here (default and ``_option`` metadata), the code that uses it in the
builder, a test (docs/ros_node.md, "Adding an output option").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from space_clip_ros.msgs.image import COLORMAP_NAMES, DEPTH_ENCODINGS
from space_clip_ros.msgs.pointcloud import XYZ_POINT_STEP, XYZRGB_POINT_STEP

#: Largest message Fast DDS (ROS 2's default middleware) sends in one piece over its shared-memory
#: transport (its 512 KB segment); larger ones travel in fragments, and a best-effort reader loses a
#: message with any of them. Measured on the 2-core sandbox, 640x480 camera at 5 frames/s, 20 s:
#: best-effort subscribers got 0 of 99 clouds of 4.9 MB and 2-3 of 100 depth images of 1.2 MB, but
#: all 100 clouds of 0.3 MB (``points_stride: 4``); reliable subscribers got every message.
ONE_PIECE_BYTES = 512 * 1024
#: ``points_stride`` value: the smallest stride whose cloud stays within ONE_PIECE_BYTES.
POINTS_STRIDE_AUTO = 0
MAX_POINTS_STRIDE = 64

#: Headings the options are listed under (config/depth.yaml, docs).
DEPTH_IMAGE = "depth image"
SCALE_ANCHOR = "metric scale anchor"
POINT_CLOUD = "point cloud"
EXTRA_OUTPUTS = "extra outputs"

#: Values of ``out_of_range`` (``outputs.ranges.apply_out_of_range``'s modes).
OUT_OF_RANGE_MODES: tuple[str, ...] = ("nan", "rep117")
#: Values of ``scale_anchor``.
SCALE_ANCHORS: tuple[str, ...] = ("none", "ground_plane", "sparse_points")

OptionValue = bool | int | float | str


@dataclass(frozen=True)
class OptionInfo:
    """Everything about one output option but its value.

    Attributes:
        name, default: the field's name (the node parameter's name too) and default value, whose
            Python type is the option's type.
        description: what it does (parameter descriptor, docs).
        group: heading it is listed under.
        runtime: may change while the node runs (the next frame uses it).
        min_value, max_value: inclusive range of a number; choices: allowed strings.
        constraint_text: a rule between options, in words (checked by :meth:`OutputOptions.problem`).
        flag: the bag tool's command-line flag; None: the node only. A bool option defaulting to
            true gets a flag that turns it off (``--no-points``), one defaulting to false a flag
            that turns it on.
        flag_help: the flag's help text.
        flag_default_text: what the flag's help says happens when it is not given (a flag not
            given leaves the option to the bag tool, which takes the default, or for the depth
            range the checkpoint's).
    """

    name: str
    default: OptionValue
    description: str
    group: str
    runtime: bool = True
    min_value: int | float | None = None
    max_value: int | float | None = None
    choices: tuple[str, ...] = ()
    constraint_text: str = ""
    flag: str | None = None
    flag_help: str = ""
    flag_default_text: str = ""


def range_problem(
    name: str,
    value: Any,
    min_value: int | float | None = None,
    max_value: int | float | None = None,
    choices: tuple[str, ...] = (),
) -> str | None:
    """Why ``value`` of ``name`` is outside [min_value, max_value] or not one of ``choices``, or None:
    the one wording of these rules, for the output options and every node parameter
    (``ros.parameter_table.ParameterSpec.check``)."""
    if min_value is not None and value < min_value:
        return f"{name} must be >= {min_value}, got {value}"
    if max_value is not None and value > max_value:
        return f"{name} must be <= {max_value}, got {value}"
    if choices and value not in choices:
        return f"{name} must be one of {', '.join(choices)}; got '{value}'"
    return None


def _option(default: OptionValue, description: str, group: str, **info: Any) -> Any:
    """A dataclass field carrying what :data:`OPTIONS` makes its :class:`OptionInfo` of."""
    return field(default=default, metadata={"option": (description, group, info)})


@dataclass(frozen=True)
class OutputOptions:
    """The depth outputs' options; the field order is the node's parameter order."""

    # ---- depth image ------------------------------------------------------------------------------
    frame_id: str = _option(
        "",
        "frame_id written into every output header. Empty: the input image's header.frame_id "
        "(the camera's optical frame).",
        DEPTH_IMAGE, flag="--frame-id", flag_help="frame of the outputs", flag_default_text="the image's",
    )
    depth_encoding: str = _option(
        "32FC1",
        "depth/image encoding (REP 118): 32FC1 metres with NaN where invalid, or 16UC1 "
        "millimetres with 0 where invalid.",
        DEPTH_IMAGE, choices=DEPTH_ENCODINGS,
        flag="--depth-encoding", flag_help="32FC1 metres (NaN invalid) or 16UC1 millimetres (0 invalid)",
    )
    min_depth: float = _option(
        0.1,
        "Depths below this (metres) are invalid (NaN / 0) in the depth image and absent from the cloud.",
        DEPTH_IMAGE, min_value=0.0, max_value=1000.0, constraint_text="< max_depth",
        flag="--min-depth", flag_help="valid depth range, metres", flag_default_text="the checkpoint's",
    )
    max_depth: float = _option(
        10.0,
        "Depths above this (metres) are invalid (NaN / 0) in the depth image and absent from the cloud.",
        DEPTH_IMAGE, min_value=0.001, max_value=1000.0, constraint_text="> min_depth",
        flag="--max-depth", flag_help="valid depth range, metres", flag_default_text="the checkpoint's",
    )
    out_of_range: str = _option(
        "nan",
        "What depth/image holds where a pixel has no valid depth. nan: NaN (16UC1: 0). rep117: REP 117 "
        "values in 32FC1: +Inf beyond max_depth (free space up to there), -Inf below min_depth, NaN only "
        "where there is no estimate (16UC1 keeps 0 for all, REP 118). The cloud has no point at either.",
        DEPTH_IMAGE, choices=OUT_OF_RANGE_MODES,
        flag="--out-of-range", flag_help="nan, or rep117 for +-Inf out of range (32FC1)",
    )
    output_width: int = _option(
        0,
        "Width of the depth outputs in pixels. 0 (with output_height 0): the input image's size.",
        DEPTH_IMAGE, min_value=0, max_value=8192, constraint_text="0 together with output_height, or both > 0",
    )
    output_height: int = _option(
        0,
        "Height of the depth outputs in pixels. 0 (with output_width 0): the input image's size.",
        DEPTH_IMAGE, min_value=0, max_value=8192, constraint_text="0 together with output_width, or both > 0",
    )
    focal_rescale: bool = _option(
        True,
        "Rescale depth by the camera's focal length relative to the training camera's "
        "(checkpoint record; needs camera_info). Off: depth as the model predicts it.",
        DEPTH_IMAGE, flag="--no-focal-rescale",
        flag_help="do not rescale depth by the camera's focal length relative to the training camera's",
    )
    # ---- metric scale anchor ----------------------------------------------------------------------
    scale_anchor: str = _option(
        "none",
        "Correct the depth's metric scale every frame. none: as predicted; ground_plane: fit the floor "
        "(lower half of the image, RANSAC) and scale it to camera_height below the camera; sparse_points: "
        "fit the depth to metric points received on 'anchor_points' (PointCloud2 in the camera's optical "
        "frame). Frames without a credible fit keep the previous scale.",
        SCALE_ANCHOR, choices=SCALE_ANCHORS,
        flag="--scale-anchor", flag_help="none, ground_plane or sparse_points (see --anchor-points-topic)",
    )
    camera_height: float = _option(
        0.0,
        "Height of the camera's optical centre above the floor (metres), for scale_anchor ground_plane.",
        SCALE_ANCHOR, min_value=0.0, max_value=100.0, constraint_text="> 0 with scale_anchor ground_plane",
        flag="--camera-height", flag_help="camera height above the floor, metres (scale anchor ground_plane)",
    )
    scale_smoothing: float = _option(
        0.0,
        "Exponential smoothing of the anchored scale from frame to frame: new = a * previous + (1 - a) * "
        "measured; 0 takes each frame's fit as it is. A jump by more than 1.5 times is taken at once.",
        SCALE_ANCHOR, min_value=0.0, max_value=0.99,
        flag="--scale-smoothing", flag_help="smoothing factor a of the anchored scale, in [0, 0.99]",
    )
    # ---- point cloud ------------------------------------------------------------------------------
    publish_points: bool = _option(
        True,
        "Publish sensor_msgs/PointCloud2 on 'points' (once a CameraInfo has arrived).",
        POINT_CLOUD, flag="--no-points", flag_help="do not write point clouds",
    )
    points_organized: bool = _option(
        True,
        "true: organised cloud (rows x columns of the strided depth grid, NaN where invalid, "
        "is_dense false), as depth_image_proc publishes; false: one row of valid points only.",
        POINT_CLOUD, flag="--points-unorganized", flag_help="clouds of valid points only (one row)",
    )
    points_stride: int = _option(
        POINTS_STRIDE_AUTO,
        "Decimation: use every Nth pixel in both directions. 0 (auto): the smallest N that keeps the "
        "organised cloud within 512 KB, the most Fast DDS sends in one piece: a best-effort reader such as "
        "Nav2's costmap layers gets few larger clouds (measured at 640x480: 0 of 99 at N=1, 4.9 MB; all 100 at "
        "N=4, 0.3 MB); N=4 at 640x480, 6 at 1280x720, 1 up to 181x181.",
        POINT_CLOUD, min_value=0, max_value=MAX_POINTS_STRIDE, flag="--points-stride",
        flag_help="use every Nth pixel for the cloud (0: the smallest N keeping it within 512 KB)",
    )
    points_max_range: float = _option(
        0.0,
        "Leave out points farther than this along the optical axis (metres). 0: max_depth.",
        POINT_CLOUD, min_value=0.0, max_value=1000.0,
    )
    points_rgb: bool = _option(
        False,
        "Add the packed rgb field (XYZRGB, colours from the input image).",
        POINT_CLOUD, flag="--points-rgb", flag_help="add the packed rgb field to the clouds",
    )
    flying_pixel_threshold: float = _option(
        0.0,
        "Flying-pixel filter: leave out of the cloud every pixel whose depth jumps to a neighbour's by "
        "more than this fraction of the nearer depth (smeared edges that float between two surfaces; "
        "0.04 is a good start). 0: off.",
        POINT_CLOUD, min_value=0.0, max_value=10.0,
        flag="--flying-pixel-threshold", flag_help="relative depth jump that marks a flying pixel (0: off)",
    )
    flying_pixels_invalid: bool = _option(
        False,
        "Also mark the pixels the flying-pixel filter (flying_pixel_threshold) finds invalid in "
        "depth/image (NaN / 0). false: they are left out of the cloud only.",
        POINT_CLOUD, flag="--flying-pixels-invalid", flag_help="also mark flying pixels invalid in the depth image",
    )
    points_min_confidence: float = _option(
        0.0,
        "Leave out of the cloud every pixel whose confidence (see publish_confidence) is below this. "
        "0: off. Needs the torch backend.",
        POINT_CLOUD, min_value=0.0, max_value=1.0,
        flag="--points-min-confidence", flag_help="leave out points of lower confidence, in [0, 1] (0: off)",
    )
    # ---- extra outputs ----------------------------------------------------------------------------
    publish_colored: bool = _option(
        False,
        "Publish a bgr8 colour-mapped depth picture on 'depth/colored' for viewing.",
        EXTRA_OUTPUTS, flag="--colored", flag_help="write colour-mapped depth pictures (depth/colored)",
    )
    colormap: str = _option(
        "turbo",
        "OpenCV colour map of depth/colored (near = warm for turbo/jet).",
        EXTRA_OUTPUTS, choices=COLORMAP_NAMES, flag="--colormap", flag_help="colour map of depth/colored",
    )
    publish_embedding: bool = _option(
        False,
        "Publish the CLIP image embedding of each frame (same encoder pass as the depth) on "
        "'clip/image_embedding_stamped' (sensor_msgs/Image 32FC1, 1 x D, the image's header) and, "
        "without a header, on 'clip/image_embedding'.",
        EXTRA_OUTPUTS, flag="--embedding", flag_help="write the CLIP image embeddings (clip/image_embedding*)",
    )
    publish_confidence: bool = _option(
        False,
        "Publish a per-pixel confidence in [0, 1] on 'depth/confidence' (32FC1, the depth image's size, "
        "stamp and frame): agreement of the decoder's final and trained auxiliary heads, exp(-10 * "
        "mean |ln d - ln d_aux|, weighted by the heads' training loss weights). Needs the torch backend.",
        EXTRA_OUTPUTS, flag="--confidence", flag_help="write confidence maps (depth/confidence)",
    )

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> OutputOptions:
        """Options from a name -> value mapping (other names are ignored; missing ones take the
        defaults). An int given for a float option (ROS hands over 10 for 10.0) becomes a float."""
        given = {info.name: values[info.name] for info in OPTIONS if info.name in values}
        for info in OPTIONS:
            if isinstance(info.default, float) and info.name in given:
                given[info.name] = float(given[info.name])
        return cls(**given)

    def values(self) -> dict[str, OptionValue]:
        """name -> value of every option, in order."""
        return {info.name: getattr(self, info.name) for info in OPTIONS}

    def replace(self, **changes: OptionValue) -> OutputOptions:
        return OutputOptions.from_values({**self.values(), **changes})

    def problem(self) -> str | None:
        """Why these options cannot be used, or None: each value's range or choices, then the rules
        between options (the ``constraint_text`` of their :class:`OptionInfo`)."""
        for info in OPTIONS:
            reason = range_problem(info.name, getattr(self, info.name), info.min_value, info.max_value, info.choices)
            if reason is not None:
                return reason
        if not self.min_depth < self.max_depth:
            return f"min_depth ({self.min_depth}) must be smaller than max_depth ({self.max_depth})"
        if (self.output_width == 0) != (self.output_height == 0):
            return (
                f"output_width ({self.output_width}) and output_height ({self.output_height}) must both be 0 "
                "(input size) or both > 0"
            )
        if self.scale_anchor == "ground_plane" and not self.camera_height > 0.0:
            return "scale_anchor ground_plane needs camera_height > 0 (the camera's height above the floor, metres)"
        return None

    # ---- what the options mean for the builder -----------------------------------------------------
    @property
    def output_size(self) -> tuple[int, int] | None:
        """(height, width) of the depth outputs, or None for the input image's size."""
        if self.output_width > 0 and self.output_height > 0:
            return self.output_height, self.output_width
        return None

    def cloud_stride(self, height: int, width: int, with_rgb: bool) -> int:
        """The stride of the cloud of a ``height`` x ``width`` depth map (with the rgb field or not):
        ``points_stride``, or for 0 the smallest that keeps the organised cloud within
        :data:`ONE_PIECE_BYTES`."""
        if self.points_stride != POINTS_STRIDE_AUTO:
            return self.points_stride
        step = XYZRGB_POINT_STEP if with_rgb else XYZ_POINT_STEP
        stride = 1
        while -(-height // stride) * -(-width // stride) * step > ONE_PIECE_BYTES and stride < MAX_POINTS_STRIDE:
            stride += 1
        return stride

    @property
    def cloud_max_range(self) -> float:
        """Farthest z a cloud point may have (metres)."""
        return self.points_max_range if self.points_max_range > 0.0 else self.max_depth

    @property
    def wants_confidence(self) -> bool:
        """Whether the frame needs the confidence map (published, or gating the cloud)."""
        return self.publish_confidence or (self.publish_points and self.points_min_confidence > 0.0)

    @property
    def colored_colormap(self) -> str | None:
        """The colour map of the colour-mapped depth picture, or None when there is no picture."""
        return self.colormap if self.publish_colored else None


def _info(item: dataclasses.Field) -> OptionInfo:
    description, group, info = item.metadata["option"]
    return OptionInfo(item.name, item.default, description, group, **info)


#: Every output option's :class:`OptionInfo`, in field order.
OPTIONS: tuple[OptionInfo, ...] = tuple(_info(item) for item in dataclasses.fields(OutputOptions))
