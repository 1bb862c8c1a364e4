"""ROS 2 layer: thin rclpy nodes over the plain functions of ``outputs``, ``msgs`` and ``inference``.

Modules (one job each): ``parameter_table`` (parameter specs, descriptors, checks and docs tables
for every node), ``parameters`` (the depth node's parameter table), ``topics`` (its topic table),
``qos`` (QoS profiles), ``frame_slot`` (the one-frame mailbox between the subscription and the
inference worker), ``diagnostics`` (rates, latencies, DiagnosticArray), ``log_limiter`` (repeat
suppression for error logs), ``logging_bridge`` (Python logging -> ROS logger), ``model_setup``
(predictor from parameters), ``node_main`` (a node process's start-up and shutdown),
``node_parameters`` (the depth node's parameters on an rclpy node), ``depth_pipeline`` (the
cameras' mailboxes, the worker and its batched pass; no rclpy), ``depth_endpoints`` (the
pipeline's topics on a node), ``depth_node`` (the node itself and its entry point),
``depth_lifecycle_node`` (the same node, managed: rclpy.lifecycle) and ``camera_simulator`` (a
camera driver without a camera). A frame's work (decode, CameraInfo by
stamp, undistort, predict, build the messages) is ``outputs.camera_input``'s and
``outputs.frame_processor``'s, which the benchmark and (through ``outputs.builder``) the bag tool
share.

Nothing is imported here so that ``import space_clip_ros.ros.<module>`` stays light: the camera
simulator (and ``parameter_table``, ``node_main``, ``qos``, ``topics``) never import torch.
"""
