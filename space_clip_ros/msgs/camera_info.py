"""Pinhole intrinsics from sensor_msgs/CameraInfo, and CameraInfo for a resized image.

Resizing convention (the one image_proc's ``resize`` node and depth_image_proc's
``point_cloud_xyzrgb`` use): with sx = W'/W and sy = H'/H, fx and cx are multiplied by sx, fy and
cy by sy, and so are the matching entries of P (including Tx, Ty). This treats pixel *corners* as
the fixed points of the resize. Pixel centres sit at integer coordinates in ROS and OpenCV, so the
exact map of a centre-aligned resize (cv2.resize, torch interpolate with align_corners=False) is
cx' = (cx + 0.5) * sx - 0.5; the two differ by 0.5 * (sx - 1) pixels (about 0.9 px when a 224 px
map is blown up to 640). We follow image_proc by default so the CameraInfo we publish matches what
the ROS tools would publish for the same resize; ``align_pixel_centres=True`` gives the exact map.

Binning and ROI: like image_geometry, the intrinsics of the image as delivered are the full-sensor
K with the ROI offset removed and then divided by the binning. A rescaled CameraInfo is written as
a plain full-frame camera of the new size (binning 0, ROI zero) whose K and P apply to its pixels
directly, which is what depth_image_proc and RViz expect from a depth image's camera_info.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, RegionOfInterest
from std_msgs.msg import Header


class CameraInfoError(ValueError):
    """A CameraInfo or intrinsics set that cannot describe a pinhole camera."""


# Coefficient counts that make a zero (distortion-free) D for the usual models.
_ZERO_DISTORTION_LENGTH = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}


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
        transform = _resize_transform(self.width, self.height, width, height, align_pixel_centres)
        k = transform @ self.matrix()
        return CameraIntrinsics(
            fx=float(k[0, 0]), fy=float(k[1, 1]), cx=float(k[0, 2]), cy=float(k[1, 2]),
            width=int(width), height=int(height),
        )

    @classmethod
    def from_camera_info(cls, msg: CameraInfo) -> CameraIntrinsics:
        """Intrinsics of the image as delivered (K with ROI and binning applied), validated."""
        transform, width, height = _delivered_image_transform(msg)
        k = transform @ np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
        if not np.any(np.asarray(msg.k)):
            raise CameraInfoError("CameraInfo K is all zeros: the camera is not calibrated")
        return cls(
            fx=float(k[0, 0]), fy=float(k[1, 1]), cx=float(k[0, 2]), cy=float(k[1, 2]),
            width=width, height=height,
        ).validate()


def _resize_transform(
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


def _delivered_image_transform(msg: CameraInfo) -> tuple[np.ndarray, int, int]:
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


def scale_camera_info(
    info: CameraInfo, width: int, height: int, *, align_pixel_centres: bool = False
) -> CameraInfo:
    """A new CameraInfo for the delivered image of ``info`` resized to ``width`` x ``height``.

    K and P are mapped (P's Tx and Ty scale with fx and fy), width/height are set, binning is 0 and
    the ROI is zero (full frame of the new image); header, D, R and distortion_model are copied.
    """
    delivered, old_width, old_height = _delivered_image_transform(info)
    transform = (
        _resize_transform(old_width, old_height, width, height, align_pixel_centres) @ delivered
    )
    k = transform @ np.asarray(info.k, dtype=np.float64).reshape(3, 3)
    p = transform @ np.asarray(info.p, dtype=np.float64).reshape(3, 4)
    return CameraInfo(
        header=Header(
            stamp=Time(sec=info.header.stamp.sec, nanosec=info.header.stamp.nanosec),
            frame_id=info.header.frame_id,
        ),
        height=int(height),
        width=int(width),
        distortion_model=info.distortion_model,
        d=[float(value) for value in info.d],
        k=k.reshape(-1),
        r=np.array(info.r, dtype=np.float64),
        p=p.reshape(-1),
        binning_x=0,
        binning_y=0,
        roi=RegionOfInterest(),
    )


def camera_info_from_intrinsics(
    intrinsics: CameraIntrinsics, header: Header, distortion_model: str = "plumb_bob"
) -> CameraInfo:
    """A CameraInfo for an ideal (distortion-free, unrectified = rectified) pinhole camera."""
    intrinsics.validate()
    k = intrinsics.matrix()
    p = np.zeros((3, 4))
    p[:, :3] = k
    return CameraInfo(
        header=header,
        height=intrinsics.height,
        width=intrinsics.width,
        distortion_model=distortion_model,
        d=[0.0] * _ZERO_DISTORTION_LENGTH.get(distortion_model, 5),
        k=k.reshape(-1),
        r=np.eye(3).reshape(-1),
        p=p.reshape(-1),
    )
