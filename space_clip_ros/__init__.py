"""space_clip_ros: SPACE-CLIP monocular metric depth for ROS 2.

Layers (imports flow downwards only): ``ros`` (rclpy nodes) -> ``msgs`` (message <-> array) ->
``inference`` (predictor) -> ``training`` / ``data`` -> ``model``. ``cli`` holds entry points.
"""

__version__ = "0.1.0"
