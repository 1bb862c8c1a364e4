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

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, RegionOfInterest
from std_msgs.msg import Header

from ..data.camera import CameraInfoError, CameraIntrinsics, delivered_image_transform, resize_transform

# The camera model lives in data.camera; it is re-exported here beside the message functions.
__all__ = [
    "CameraInfoError",
    "CameraIntrinsics",
    "camera_info_from_intrinsics",
    "scale_camera_info",
]



# Coefficient counts that make a zero (distortion-free) D for the usual models.
_ZERO_DISTORTION_LENGTH = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}


def scale_camera_info(
    info: CameraInfo, width: int, height: int, *, align_pixel_centres: bool = False
) -> CameraInfo:
    """A new CameraInfo for the delivered image of ``info`` resized to ``width`` x ``height``.

    K and P are mapped (P's Tx and Ty scale with fx and fy), width/height are set, binning is 0 and
    the ROI is zero (full frame of the new image); header, D, R and distortion_model are copied.
    """
    delivered, old_width, old_height = delivered_image_transform(info)
    transform = (
        resize_transform(old_width, old_height, width, height, align_pixel_centres) @ delivered
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
