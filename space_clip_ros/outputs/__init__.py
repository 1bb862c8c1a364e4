"""Depth outputs: what a depth map becomes (depth image, its CameraInfo, point cloud, colour
picture, embedding), for the depth node and the bag tool alike. Below the ROS layer: no rclpy.

Modules (one job each; nothing heavy is imported here, so ``outputs.options`` stays light):

* ``options``: :class:`OutputOptions`, the one definition of the outputs' options and their
  metadata (the node's parameters and the bag tool's flags are made from it);
* ``calibration``: ``CameraCalibration``, a validated CameraInfo and its intrinsics, scaled once;
* ``messages``: the decoded input image, the output header, the embedding message;
* ``cloud`` / ``device_cloud``: the point cloud builders, NumPy and torch (same bytes);
* ``builder``: ``DepthOutputBuilder``, one depth map -> ``DepthOutputs``;
* ``frame_processor``: ``DepthFrameProcessor``, one image message -> predictor -> builder;
* depth filters (flying pixels, ranges, scale anchoring) and their figures, in modules of their own.
"""

from space_clip_ros.outputs.options import OPTIONS, OptionInfo, OutputOptions

__all__ = ["OPTIONS", "OptionInfo", "OutputOptions"]
