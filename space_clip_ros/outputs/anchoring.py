"""The metric scale anchor of one camera: its state from frame to frame, and each frame's fit.

:class:`DepthScaleAnchor` holds what the ``scale_anchor`` output option needs between frames: a
:class:`~space_clip_ros.outputs.scale_anchor.ScaleTracker` (frames without a credible fit keep
the previous scale; ``scale_smoothing`` smooths) and, for ``sparse_points``, the newest metric
anchor points not yet used. Each frame, :meth:`DepthScaleAnchor.fit` measures the scale on the
(focal-rescaled) depth map with :func:`~space_clip_ros.outputs.scale_anchor.scale_from_ground_plane`
or :func:`~space_clip_ros.outputs.scale_anchor.scale_from_sparse_points` and returns an
:class:`AnchorFit` (the scale to apply and what the diagnostics show).

One instance per camera: the depth node keeps one per camera, the bag tool one per run (its
image topic). Anchor points arrive from another thread (a subscription) through
:meth:`DepthScaleAnchor.set_anchor_points`; each set is used by the next frame only, so a
stale set is never fitted twice.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from space_clip_ros.data.camera import CameraIntrinsics
from space_clip_ros.outputs.options import OutputOptions
from space_clip_ros.outputs.scale_anchor import ScaleTracker, scale_from_ground_plane, scale_from_sparse_points


@dataclass(frozen=True)
class AnchorFit:
    """One frame's scale anchoring.

    Attributes:
        mode: the ``scale_anchor`` option (``ground_plane`` or ``sparse_points``).
        scale: the factor applied to this frame's depth (on top of focal rescaling).
        measured: this frame's own fit; None when it had none (no credible plane, no or too few
            anchor points, no CameraInfo): ``scale`` is then the previous one.
        inlier_share: share of the ground region's points on the plane, or of the usable anchor
            points kept as inliers; None without a fit.
        normal: the ground plane's unit normal in the optical frame (ground_plane fits only).
        anchor_points: anchor points this frame had (sparse_points; 0 otherwise).
    """

    mode: str
    scale: float
    measured: float | None
    inlier_share: float | None = None
    normal: tuple[float, float, float] | None = None
    anchor_points: int = 0


class DepthScaleAnchor:
    """One camera's scale anchor state (see the module notes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._points: np.ndarray | None = None
        self._mode = "none"
        self._tracker = ScaleTracker()

    def set_anchor_points(self, points_xyz: np.ndarray) -> None:
        """The newest metric anchor points, (N, 3) in the camera's optical frame (any thread)."""
        points = np.asarray(points_xyz, dtype=np.float64).reshape(-1, 3)
        with self._lock:
            self._points = points

    def _take_points(self) -> np.ndarray | None:
        with self._lock:
            points, self._points = self._points, None
        return points

    @property
    def scale(self) -> float:
        """The scale the last frame used (1.0 before the first fit)."""
        return self._tracker.scale

    def reset(self) -> None:
        """Forget every fit (and any waiting anchor points)."""
        self._tracker.reset()
        self._take_points()

    def fit(self, depth: np.ndarray, intrinsics: CameraIntrinsics | None, options: OutputOptions) -> AnchorFit:
        """This frame's scale for ``depth`` ((H, W) metres, NumPy; ``intrinsics`` of its size, or
        None without a CameraInfo: no fit, the previous scale). ``options.scale_anchor`` must not
        be ``none``. A change of ``scale_anchor`` starts over from scale 1."""
        mode = options.scale_anchor
        if mode == "none":
            raise ValueError("DepthScaleAnchor.fit called with scale_anchor none")
        if mode != self._mode:
            self._mode = mode
            self._tracker.reset()
        self._tracker.scale_smoothing = float(options.scale_smoothing)
        points = self._take_points() if mode == "sparse_points" else None
        measured = share = normal = None
        if intrinsics is not None and mode == "ground_plane":
            plane = scale_from_ground_plane(depth, intrinsics, options.camera_height)
            if plane is not None:
                measured, share = plane.scale, plane.inlier_share
                normal = tuple(float(v) for v in plane.normal)
        elif intrinsics is not None and points is not None and len(points):
            result = scale_from_sparse_points(depth, intrinsics, points)
            if result is not None:
                measured, share = result
        scale = self._tracker.update(measured)
        return AnchorFit(mode, scale, measured, share, normal, 0 if points is None else len(points))
