"""Flying pixels: depths smeared across a discontinuity, which float between two surfaces.

A learned depth map is produced at a lower resolution and upsampled, so where a near object meets
a far background the prediction ramps over a few pixels instead of stepping. Back-projected, the
ramp becomes a "veil" of points hanging in free space between the two surfaces, which a costmap
marks as obstacles. This module finds those pixels so the cloud can leave them out (and, if the
node chooses, the depth image can mark them invalid).

Rule: a pixel is flying when the depth of one of its 4- or 8-neighbours differs from its own by
more than ``flying_pixel_threshold`` times the nearer of the two depths:

    |z_p - z_q| > flying_pixel_threshold * min(z_p, z_q)

The allowed jump grows with depth (a monocular network's errors are relative), and the rule is a
grazing-angle test in disguise: neighbouring pixels' rays are about 1/f radians apart, so a
relative jump t per pixel means the surface between the two points makes an angle of about
atan(1 / (t * f)) with the viewing ray (t = 0.05 at f = 500 px: about 2.3 degrees). Real surfaces
seen that obliquely are dropped too, and their points are poor anyway: a floor seen from a
height h has a relative jump per row of about z / (f * h), so it is dropped beyond z = t * f * h
(0.04 x 373 px x 1.65 m = 25 m for KITTI's camera scaled to 640 px wide).

Both pixels of a pair over the threshold are flagged, so a true step loses one pixel on each side,
and a smeared ramp loses the ramp plus its two end pixels.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from space_clip_ros.msgs.image import valid_depth_mask

#: Neighbourhoods :func:`flying_pixel_mask` accepts.
CONNECTIVITIES: tuple[int, ...] = (4, 8)

_KERNELS = {
    4: cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3)),
    8: cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3)),
}


def flying_pixel_mask(
    depth: np.ndarray, flying_pixel_threshold: float, connectivity: int = 8
) -> np.ndarray:
    """Pixels at depth discontinuities, as an (H, W) bool mask (True = flying, leave it out).

    Args:
        depth: (H, W) floating-point depth in metres (any scale: the test is relative). Pixels
            without a usable depth (NaN, +-Inf, <= 0; see ``msgs.valid_depth_mask``) are never
            flagged and never make a neighbour flagged.
        flying_pixel_threshold: relative jump above which a neighbour pair is a discontinuity
            (see the module notes); 0 turns the filter off (an all-False mask).
        connectivity: 4 (left, right, up, down) or 8 (also the diagonals).
    """
    depth = np.asarray(depth)
    if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(
            f"expected an (H, W) floating-point depth map, got shape {depth.shape} dtype {depth.dtype}"
        )
    threshold = float(flying_pixel_threshold)
    if not (math.isfinite(threshold) and threshold >= 0.0):
        raise ValueError(f"flying_pixel_threshold must be a finite value >= 0, got {flying_pixel_threshold}")
    if connectivity not in CONNECTIVITIES:
        raise ValueError(f"connectivity must be one of {CONNECTIVITIES}, got {connectivity}")
    if threshold == 0.0 or depth.size == 0:
        return np.zeros(depth.shape, dtype=bool)

    z = np.ascontiguousarray(depth, dtype=np.float32)  # OpenCV takes no column strides
    valid = valid_depth_mask(z)
    # Each stand-in below is a fresh array that OpenCV then overwrites in place (erode and dilate
    # support it), and every later step works in place too: at 640x480 a fresh 1.2 MB temporary
    # costs about as much in page faults as the arithmetic itself.
    if valid.all():
        # The usual case (a network's output is dense): no stand-ins needed.
        for_max, for_min = z.copy(), z.copy()
    else:
        # Stand-ins that can never win a max (0) or a min (+inf), so an invalid pixel flags nobody;
        # OpenCV's morphology does not define how NaN compares, so NaN must not reach it.
        invalid = ~valid
        for_max = z.copy()
        np.copyto(for_max, np.float32(0.0), where=invalid)
        for_min = z.copy()
        np.copyto(for_min, np.float32(np.inf), where=invalid)
    kernel = _KERNELS[connectivity]
    # The pair rule "|z_p - z_q| > t * min(z_p, z_q)" is monotone in z_q, so it holds for some
    # neighbour exactly when it holds for the farthest or for the nearest one: one dilation and one
    # erosion (3x3 max and min, whose default border never wins) test every neighbour at once. The
    # centre is in the kernel but can never pass the strict test.
    scale = np.float32(1.0 + threshold)
    farthest = cv2.dilate(for_max, kernel, dst=for_max)
    farthest *= np.float32(1.0) / scale
    flying = farthest > z  # a neighbour farther than (1 + t) z_p; NaN compares False
    nearest = cv2.erode(for_min, kernel, dst=for_min)
    with np.errstate(over="ignore"):
        # A border pixel whose neighbours are all invalid erodes to OpenCV's border value FLT_MAX:
        # scaled, it overflows to inf, which is as good (nothing is nearer than it).
        nearest *= scale
    flying |= z > nearest  # a neighbour nearer than z_p / (1 + t)
    flying &= valid
    return flying
