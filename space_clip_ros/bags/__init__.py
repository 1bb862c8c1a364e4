"""Depth for recorded rosbag2 files (MCAP or SQLite3), without a running ROS graph.

Modules (one job each):

* ``reading``: open a bag (directory or single storage file) and stream its raw messages; a bag
  that is damaged (truncated, corrupt chunk or page, missing index or metadata.yaml) is read up
  to the damage and the reason is kept instead of raised.
* ``salvage``: record-by-record readers for MCAP and SQLite3 files that rosbags cannot open.
* ``writing``: the output bag; copies connections with their type, definition, hash and QoS,
  adds new topics.
* ``cdr``: raw CDR bytes <-> rclpy message objects (rclpy.serialization; no node, no context).
* ``bag_depth``: the pipeline of ``space-clip-bag``: every image of a topic through the predictor
  in batches, depth image + depth camera info + point cloud written beside the unchanged originals.

No rclpy node or context is created here, and nothing of ``ros`` is imported; each image's output
messages are built by the depth node's own output step (``outputs.builder.DepthOutputBuilder``)
from the same output options (``outputs.options.OutputOptions``).
"""
