"""Forward the package's Python ``logging`` records to a ROS logger.

The model and inference layers log through ``logging`` (they know nothing of ROS). Inside the node
those lines must reach the ROS log (console, /rosout, log files) with the node's name and the same
severity, e.g. load_model's WARNING about an untrained decoder.
"""

from __future__ import annotations

import logging
from typing import Protocol


class RosLogger(Protocol):
    def debug(self, message: str) -> bool: ...
    def info(self, message: str) -> bool: ...
    def warning(self, message: str) -> bool: ...
    def error(self, message: str) -> bool: ...
    def fatal(self, message: str) -> bool: ...


class RosLoggingHandler(logging.Handler):
    """A logging handler that writes each record to a ROS logger at the matching severity."""

    def __init__(self, ros_logger: RosLogger) -> None:
        super().__init__()
        self._ros_logger = ros_logger
        # (level, propagate) of the package logger before forwarding began; restored on stop.
        self.previous_settings: tuple[int, bool] = (logging.NOTSET, True)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if record.levelno >= logging.CRITICAL:
                self._ros_logger.fatal(text)
            elif record.levelno >= logging.ERROR:
                self._ros_logger.error(text)
            elif record.levelno >= logging.WARNING:
                self._ros_logger.warning(text)
            elif record.levelno >= logging.INFO:
                self._ros_logger.info(text)
            else:
                self._ros_logger.debug(text)
        except Exception:  # a logging handler must never raise into the code that logged
            self.handleError(record)


def forward_package_logs(ros_logger: RosLogger, package: str = "space_clip_ros",
                         level: int = logging.INFO) -> RosLoggingHandler:
    """Send ``package``'s log records at ``level`` and above to ``ros_logger`` (and nowhere else)."""
    handler = RosLoggingHandler(ros_logger)
    package_logger = logging.getLogger(package)
    handler.previous_settings = (package_logger.level, package_logger.propagate)
    package_logger.addHandler(handler)
    package_logger.setLevel(level)
    # Without this a root handler (e.g. set up by a host application) would print lines twice.
    package_logger.propagate = False
    return handler


def stop_forwarding(handler: RosLoggingHandler, package: str = "space_clip_ros") -> None:
    package_logger = logging.getLogger(package)
    package_logger.removeHandler(handler)
    level, package_logger.propagate = handler.previous_settings
    package_logger.setLevel(level)
