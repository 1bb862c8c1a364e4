"""Message <-> array conversion: images, depth (REP 118), CameraInfo scaling and lookup by stamp,
lens undistortion, point clouds.

Plain functions over sensor_msgs message classes and numpy arrays; nothing here needs rclpy.
The builders that turn depth maps into clouds are ``outputs.cloud`` and ``outputs.device_cloud``.
"""

from space_clip_ros.msgs.camera_info import (
    CameraInfoError,
    CameraIntrinsics,
    camera_info_from_intrinsics,
    scale_camera_info,
)
from space_clip_ros.msgs.camera_info_history import CameraInfoHistory, CameraInfoMatch, format_stamp
from space_clip_ros.msgs.image import (
    COLORMAP_NAMES,
    COMPRESSED_FORMATS,
    DEPTH_ENCODINGS,
    OUTPUT_COLOUR_ENCODINGS,
    SUPPORTED_COLOUR_ENCODINGS,
    ImageConversionError,
    colorize_depth,
    compressed_msg_to_rgb,
    depth_to_image_msg,
    image_msg_to_depth,
    image_msg_to_rgb,
    rgb_to_compressed_msg,
    rgb_to_image_msg,
    valid_depth_mask,
)
from space_clip_ros.msgs.pointcloud import (
    XYZ_POINT_STEP,
    XYZRGB_POINT_STEP,
    PointCloudError,
    backproject_depth,
    point_fields,
    pointcloud2_to_rgb,
    pointcloud2_to_xyz,
    pointcloud2_to_xyz_grid,
)
from space_clip_ros.msgs.undistort import (
    SUPPORTED_DISTORTION_MODELS,
    Undistorter,
    UndistorterCache,
    needs_undistortion,
)

__all__ = [
    "COLORMAP_NAMES",
    "COMPRESSED_FORMATS",
    "DEPTH_ENCODINGS",
    "OUTPUT_COLOUR_ENCODINGS",
    "SUPPORTED_COLOUR_ENCODINGS",
    "SUPPORTED_DISTORTION_MODELS",
    "XYZRGB_POINT_STEP",
    "XYZ_POINT_STEP",
    "CameraInfoError",
    "CameraInfoHistory",
    "CameraInfoMatch",
    "CameraIntrinsics",
    "ImageConversionError",
    "PointCloudError",
    "Undistorter",
    "UndistorterCache",
    "backproject_depth",
    "camera_info_from_intrinsics",
    "colorize_depth",
    "compressed_msg_to_rgb",
    "depth_to_image_msg",
    "format_stamp",
    "image_msg_to_depth",
    "image_msg_to_rgb",
    "needs_undistortion",
    "point_fields",
    "pointcloud2_to_rgb",
    "pointcloud2_to_xyz",
    "pointcloud2_to_xyz_grid",
    "rgb_to_compressed_msg",
    "rgb_to_image_msg",
    "scale_camera_info",
    "valid_depth_mask",
]
