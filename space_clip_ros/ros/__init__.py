"""ROS 2 layer: thin rclpy nodes over the plain functions of ``msgs`` and ``inference``.

Modules (one job each): ``parameters`` (the depth node's parameter table), ``topics`` (its topic
table), ``qos`` (QoS profiles), ``frame_slot`` (the one-frame mailbox between the subscription and
the inference worker), ``diagnostics`` (rates, latencies, DiagnosticArray), ``log_limiter``
(repeat suppression for error logs), ``logging_bridge`` (Python logging -> ROS logger),
``model_setup`` (predictor from parameters), ``frame_processor`` (one frame in, output messages
out, no rclpy) and ``depth_node`` (the node itself and its entry point).

Nothing is imported here so that ``import space_clip_ros.ros.<module>`` stays light (the
parameter table is read by tests and docs without importing torch).
"""
