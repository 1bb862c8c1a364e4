"""The life of a node process, shared by the package's entry points (``depth_node``, ``camera_simulator``).

rclpy reads the command line (``--ros-args``), the node is created (a start-up error is logged as
FATAL with its reason and becomes the process's exit code; an interrupt while it is made is a
clean stop), one single-threaded executor spins it
until Ctrl-C, ``ros2 launch``'s SIGINT or the node's own end, and everything is shut down in order.
Only rclpy here (no torch), so a light node stays light.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.task import Future

EXIT_OK = 0

NodeT = TypeVar("NodeT", bound=Node)

#: Exceptions a node's constructor may raise, what to call them in the FATAL line, the exit code.
StartupErrors = Sequence[tuple[tuple[type[BaseException], ...], str, int]]


def run_node(
    name: str,
    args: list[str] | None,
    create: Callable[[], NodeT],
    *,
    startup_errors: StartupErrors,
    command_line_exit_code: int,
    until: Callable[[NodeT], Future] | None = None,
    on_interrupt: Callable[[NodeT], None] | None = None,
    on_stop: Callable[[NodeT], None] | None = None,
) -> int:
    """Run a node in this process; returns the exit code.

    Args:
        name: the node's name (for the logger of start-up errors).
        args: the command line (None: ``sys.argv``), ``--ros-args`` included.
        create: makes the node (after rclpy.init).
        startup_errors: ``(exception types, what failed, exit code)`` for errors of ``create``.
        command_line_exit_code: exit code for a command line rclpy cannot parse (e.g. a ``-p``
            value that is not YAML).
        until: the future whose completion ends the node (None: spin until interrupted).
        on_interrupt: called on Ctrl-C / external shutdown.
        on_stop: called first when stopping, before the executor and the node go away.
    """
    logger = rclpy.logging.get_logger(name)
    try:
        rclpy.init(args=args)
    except _rclpy.RCLError as exc:  # malformed --ros-args
        logger.fatal(f"cannot parse the command line: {exc}")
        return command_line_exit_code
    try:
        node = create()
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt) or not rclpy.ok():
            # Ctrl-C or a launcher's SIGINT while the node was being made (rclpy's handler shuts the
            # context down, so the next publisher or timer fails): a stop, not a failed start.
            logger.info(f"stopped while starting ({type(exc).__name__}: {exc})")
            rclpy.try_shutdown()
            return EXIT_OK
        for kinds, what, code in startup_errors:
            if isinstance(exc, kinds):
                logger.fatal(f"{what}: {exc}")
                rclpy.try_shutdown()
                return code
        raise
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if until is None:
            executor.spin()
        else:
            executor.spin_until_future_complete(until(node))
    except BaseException as exc:
        # SIGINT shuts rclpy's context down; an executor that was just building its wait set then
        # fails with an RCLError instead of ExternalShutdownException: an interrupt all the same.
        if not isinstance(exc, (KeyboardInterrupt, ExternalShutdownException)) and rclpy.ok():
            raise
        if on_interrupt is not None:
            on_interrupt(node)
    finally:
        if on_stop is not None:
            on_stop(node)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return EXIT_OK
