"""Pinhole camera intrinsics: the one camera model shared by scenes, datasets, messages and clouds.

:class:`CameraIntrinsics` (a pinhole camera at one image size), :class:`CameraModel` (intrinsics and
lens distortion) and :func:`focal_rescale_factor` (depth scale for a focal length other than the
training camera's).

Resizing: with sx = W'/W and sy = H'/H, fx and cx scale by sx, fy and cy by sy. By default pixel
*corners* are the fixed points of the resize (what image_proc's ``resize`` node publishes);
``align_pixel_centres=True`` gives the exact map of a centre-aligned resample (cv2.resize, torch
interpolate with align_corners=False), cx' = (cx + 0.5) * sx - 0.5. The two differ by
0.5 * (sx - 1) pixels.

``CameraIntrinsics.from_camera_info`` reads any object with sensor_msgs/CameraInfo's fields (it
needs no ROS import): like image_geometry, the intrinsics of the image as delivered are the
full-sensor K with the ROI offset removed and then divided by the binning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class CameraInfoError(ValueError):
    """A CameraInfo or intrinsics set that cannot describe a pinhole camera."""


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics (pixels) of an image of ``width`` x ``height`` pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def validate(self) -> CameraIntrinsics:
        """Raise :class:`CameraInfoError` unless these intrinsics describe a usable camera."""
        for name in ("fx", "fy"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise CameraInfoError(f"focal length {name} = {value}; expected a finite value > 0")
        for name in ("cx", "cy"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise CameraInfoError(f"principal point {name} = {value}; expected a finite value")
        if self.width <= 0 or self.height <= 0:
            raise CameraInfoError(
                f"image size {self.width}x{self.height}; expected width and height > 0"
            )
        return self

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.width, self.height

    def matrix(self) -> np.ndarray:
        """The 3x3 camera matrix K."""
        return np.array(
            [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], dtype=np.float64
        )

    def scaled_to(self, width: int, height: int, *, align_pixel_centres: bool = False) -> CameraIntrinsics:
        """The intrinsics of this image resized to ``width`` x ``height`` (see the module notes)."""
        transform = resize_transform(self.width, self.height, width, height, align_pixel_centres)
        k = transform @ self.matrix()
        return CameraIntrinsics(
            fx=float(k[0, 0]), fy=float(k[1, 1]), cx=float(k[0, 2]), cy=float(k[1, 2]),
            width=int(width), height=int(height),
        )

    @classmethod
    def from_camera_info(cls, msg: Any) -> CameraIntrinsics:
        """Intrinsics of the image as delivered (K with ROI and binning applied), validated."""
        transform, width, height = delivered_image_transform(msg)
        k = transform @ np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
        if not np.any(np.asarray(msg.k)):
            raise CameraInfoError("CameraInfo K is all zeros: the camera is not calibrated")
        return cls(
            fx=float(k[0, 0]), fy=float(k[1, 1]), cx=float(k[0, 2]), cy=float(k[1, 2]),
            width=width, height=height,
        ).validate()


@dataclass(frozen=True)
class CameraModel:
    """A camera: the intrinsics of the images it delivers, and its lens distortion (if known).

    What an intrinsics file states (``data.formats.read_intrinsics_file``) and what a frame
    source delivers (``data.frame_sources``); ``distortion`` is in the ROS ``D`` order of
    ``distortion_model``.
    """

    intrinsics: CameraIntrinsics
    distortion_model: str = "plumb_bob"
    distortion: tuple[float, ...] = ()

    def resized(self, width: int, height: int) -> CameraModel:
        """The same camera after a centre-aligned resize (distortion is in normalised coordinates)."""
        if (width, height) == (self.intrinsics.width, self.intrinsics.height):
            return self
        return CameraModel(
            self.intrinsics.scaled_to(width, height, align_pixel_centres=True), self.distortion_model, self.distortion
        )


def resize_transform(
    width: int, height: int, new_width: int, new_height: int, align_pixel_centres: bool
) -> np.ndarray:
    """3x3 pixel-coordinate map from a width x height image to its resized copy."""
    if width <= 0 or height <= 0:
        raise CameraInfoError(f"cannot rescale from image size {width}x{height}; expected sizes > 0")
    if new_width <= 0 or new_height <= 0:
        raise CameraInfoError(
            f"cannot rescale to image size {new_width}x{new_height}; expected sizes > 0"
        )
    sx, sy = new_width / width, new_height / height
    # With pixel centres on integers, a centre-aligned resize maps u to (u + 0.5) * s - 0.5.
    shift_x, shift_y = (0.5 * sx - 0.5, 0.5 * sy - 0.5) if align_pixel_centres else (0.0, 0.0)
    return np.array([[sx, 0.0, shift_x], [0.0, sy, shift_y], [0.0, 0.0, 1.0]])


def delivered_image_transform(msg: Any) -> tuple[np.ndarray, int, int]:
    """Map from full-sensor pixels to the delivered image's pixels (ROI, then binning), and its size."""
    binning_x = max(int(msg.binning_x), 1)  # 0 and 1 both mean "no binning"
    binning_y = max(int(msg.binning_y), 1)
    roi = msg.roi
    roi_used = roi.width > 0 and roi.height > 0
    offset_x, offset_y = (roi.x_offset, roi.y_offset) if roi_used else (0, 0)
    full_width, full_height = (roi.width, roi.height) if roi_used else (msg.width, msg.height)
    width, height = int(full_width) // binning_x, int(full_height) // binning_y
    if width <= 0 or height <= 0:
        raise CameraInfoError(
            f"CameraInfo describes a {width}x{height} image (width {msg.width}, height {msg.height}, "
            f"roi {roi.width}x{roi.height}, binning {msg.binning_x}x{msg.binning_y}); "
            "expected width and height > 0"
        )
    transform = np.array(
        [
            [1.0 / binning_x, 0.0, -offset_x / binning_x],
            [0.0, 1.0 / binning_y, -offset_y / binning_y],
            [0.0, 0.0, 1.0],
        ]
    )
    return transform, width, height




class TrainingCamera(Protocol):
    """What :func:`focal_rescale_factor` reads of a checkpoint record (``model.CheckpointRecord``)."""

    train_focal: float | None
    train_image_size: list[int] | None  # (height, width)


def focal_rescale_factor(
    camera_fx: float, camera_fy: float, camera_size: tuple[int, int], record: TrainingCamera | None
) -> float:
    """Depth scale for a camera whose focal length differs from the training camera's (SPEC section 6).

    The encoder always sees the whole image resized to its input size, so what the decoder learned
    is tied to the focal length *relative to the image size*. The factor is therefore
    ``f'/f_train`` with each focal normalised by its image size (geometric mean of the x and y
    ratios); for a camera with the training image size it reduces to ``f_camera / f_train``.
    ``camera_size`` is (height, width) of the image ``camera_fx`` and ``camera_fy`` describe.
    Returns 1.0 when there is no record or it states no training focal.
    """
    if record is None or not record.train_focal or not record.train_image_size:
        return 1.0
    height, width = camera_size
    train_h, train_w = record.train_image_size
    camera = math.sqrt((camera_fx / width) * (camera_fy / height))
    train = record.train_focal / math.sqrt(train_w * train_h)
    return float(camera / train)
