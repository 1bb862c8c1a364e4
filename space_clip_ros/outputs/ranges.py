"""Depths outside [min_depth, max_depth]: NaN everywhere, or REP 117's +-Inf.

Two modes (output option ``out_of_range``, a parameter of the node and a flag of the bag tool):

* ``nan`` (the node's behaviour so far): every depth that is not valid becomes NaN.
* ``rep117``: REP 117's informational values, so a consumer can tell "nothing there up to
  max_depth" (which clears space) from "no idea" (which must not):

  - +Inf: an estimate beyond max_depth (also an input +Inf: already "beyond");
  - -Inf: an estimate in (0, min_depth), too close to trust (also an input -Inf);
  - NaN: no estimate at all: NaN in the input, or a finite depth <= 0, which no camera
    measures (REP 118's 16UC1 uses 0 for "no reading" as well).

Validity is one rule everywhere: ``msgs.valid_depth_mask`` (finite, > 0, within the inclusive
range [min_depth, max_depth]), applied through ``msgs.pointcloud.masked_depth`` as the point cloud
applies it; pixels valid under it are passed through unchanged in both modes.

Where the values go next:

* 16UC1 depth images (``msgs.depth_to_image_msg``) hold 0 at every invalid pixel, +-Inf
  included: REP 118 has no other code for an integer image (:func:`invalid_depth_image_value`).
* 32FC1 depth images: ``depth_to_image_msg`` writes NaN at every pixel outside the range it is
  given, +-Inf included, unless it is told to keep the infinities (``keep_infinities``), which the
  output builder does in ``rep117`` mode.
* Point clouds (``outputs.cloud.PointCloudBuilder``): +-Inf pixels fail the same validity test and make
  no point (a NaN point in an organised cloud, nothing in an unorganised one). A cloud cannot
  carry "free up to max_depth"; a consumer that wants it reads the depth image.
"""

from __future__ import annotations

import math

import numpy as np

from space_clip_ros.msgs.image import DEPTH_ENCODINGS
from space_clip_ros.msgs.pointcloud import masked_depth
from space_clip_ros.outputs.options import OUT_OF_RANGE_MODES

__all__ = ["OUT_OF_RANGE_MODES", "apply_out_of_range", "invalid_depth_image_value"]


def apply_out_of_range(
    depth: np.ndarray, min_depth: float = 0.0, max_depth: float = math.inf, mode: str = "nan"
) -> np.ndarray:
    """A new float32 copy of ``depth`` (metres, any shape) with its invalid pixels marked.

    ``mode`` is ``nan`` or ``rep117`` (see the module notes); valid depths are unchanged.
    """
    if mode not in OUT_OF_RANGE_MODES:
        raise ValueError(f"out_of_range must be one of {OUT_OF_RANGE_MODES}, got {mode!r}")
    if math.isnan(min_depth) or math.isnan(max_depth) or min_depth > max_depth:
        raise ValueError(f"need min_depth <= max_depth, got {min_depth} and {max_depth}")
    # A copy with NaN at every invalid pixel: the "nan" mode, and the caller's (or the engine's)
    # buffer stays as it was.
    out, valid = masked_depth(depth, min_depth, max_depth)
    if mode == "nan" or valid.all():
        return out
    depth = np.asarray(depth, dtype=np.float32)
    invalid = ~valid
    # Invalid and at or above max_depth means beyond it (inclusive range): that also catches an
    # input +Inf when max_depth is +Inf itself.
    too_far = invalid & (depth >= max_depth)
    # Finite depths <= 0 and NaN are "no estimate" (already NaN in ``out``); what is left of the
    # invalid pixels (a positive depth under min_depth, or -Inf) is "too close".
    no_estimate = np.isnan(depth) | ((depth <= 0.0) & np.isfinite(depth))
    too_close = invalid & ~too_far & ~no_estimate
    np.copyto(out, np.float32(np.inf), where=too_far)
    np.copyto(out, np.float32(-np.inf), where=too_close)
    return out


def invalid_depth_image_value(encoding: str) -> float:
    """What a REP 118 depth Image from ``msgs.depth_to_image_msg`` holds at an invalid pixel.

    0 in 16UC1 (millimetres: an integer image has no NaN or Inf, and REP 118 reserves 0 for "no
    reading"), for +-Inf pixels as well as NaN ones; NaN in 32FC1 when the infinities are not
    kept (see the module notes).
    """
    if encoding not in DEPTH_ENCODINGS:
        raise ValueError(f"unknown depth encoding {encoding!r}; expected one of {DEPTH_ENCODINGS}")
    return 0.0 if encoding == "16UC1" else math.nan
