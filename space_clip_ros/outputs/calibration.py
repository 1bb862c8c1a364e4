"""A camera's calibration as the outputs use it: the CameraInfo and the intrinsics it gives."""

from __future__ import annotations

from dataclasses import dataclass

from sensor_msgs.msg import CameraInfo

from space_clip_ros.data.camera import CameraIntrinsics
from space_clip_ros.msgs.camera_info import scale_camera_info


@dataclass(frozen=True)
class CameraCalibration:
    """A CameraInfo that passed validation, with the intrinsics of the image it describes."""

    info: CameraInfo
    intrinsics: CameraIntrinsics

    @classmethod
    def from_msg(cls, info: CameraInfo) -> CameraCalibration:
        """Raises CameraInfoError (saying what is wrong) for an unusable CameraInfo."""
        return cls(info=info, intrinsics=CameraIntrinsics.from_camera_info(info))

    def scaled_to(self, width: int, height: int) -> CameraCalibration:
        """The calibration of this camera's image resized to ``width`` x ``height``: the CameraInfo
        scaled once (K and P, image_proc's convention; ``msgs.scale_camera_info``) and the intrinsics
        read straight from the scaled K (a full-frame camera: no ROI, no binning left to apply).

        The CameraInfo is new (its header a copy): the caller may set its header.
        """
        info = scale_camera_info(self.info, width, height)
        k = info.k
        intrinsics = CameraIntrinsics(
            fx=float(k[0]), fy=float(k[4]), cx=float(k[2]), cy=float(k[5]), width=int(width), height=int(height)
        )
        return CameraCalibration(info=info, intrinsics=intrinsics)
