"""The library behind ``space-clip-demo`` (the CLI itself only parses arguments).

Modules: ``package_files`` (config and launch files, installed or in the source tree),
``processes`` (nodes started as processes and stopped cleanly), ``recording`` + ``recorder`` (what
the depth node publishes, kept in memory by an in-process rclpy node), ``pictures`` (side-by-side
input | depth pictures with a scale bar), ``summary`` (summary.md / summary.json),
``checkpoint`` (a decoder trained briefly on synthetic scenes, cached) and ``runner`` (the demo
from start to end).
"""
