"""The depth node as a managed (lifecycle) node, console script ``depth_lifecycle_node``.

The same parameters, topics and pipeline as :class:`~space_clip_ros.ros.depth_node.DepthNode`, brought
up the way Nav2 brings its nodes up (``nav2_lifecycle_manager``, or launch's lifecycle events):

* **unconfigured** (start): the parameters are declared and checked; no model, no topics.
* ``configure``: loads the model (checkpoint and backbone checked) and makes the publishers. A
  failure (a missing or unfitting checkpoint) logs the reason at ERROR and returns FAILURE: the
  node stays unconfigured, and ``configure`` may be tried again (e.g. once the file is there).
* ``activate``: starts the worker, subscribes to the cameras and publishes.
* ``deactivate``: unsubscribes, lets the worker finish the frames it is on and stops it; the
  (lifecycle) publishers publish nothing while inactive.
* ``cleanup``: frees the model and the publishers (the resident memory before and after is logged).
* ``shutdown`` (from any state): what deactivate and cleanup do, as far as needed; the process then
  exits with code 0.

The node has no bond: with ``nav2_lifecycle_manager`` set ``bond_timeout: 0.0`` (docs/ros_node.md).
"""

from __future__ import annotations

import sys

import psutil
import rclpy
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.task import Future

from space_clip_ros.inference.runtime.memory import return_freed_memory_to_os
from space_clip_ros.ros.depth_endpoints import DepthEndpoints
from space_clip_ros.ros.depth_node import (
    DIAGNOSTICS_PERIOD_S,
    EXIT_PARAMETER_ERROR,
    NODE_NAME,
    StartupError,
    make_pipeline,
)
from space_clip_ros.ros.depth_pipeline import DepthPipeline
from space_clip_ros.ros.logging_bridge import forward_package_logs, stop_forwarding
from space_clip_ros.ros.model_setup import MODEL_SETUP_ERRORS
from space_clip_ros.ros.node_main import run_node
from space_clip_ros.ros.node_parameters import NodeParameters
from space_clip_ros.ros.parameters import DepthNodeSettings

#: Seconds between the shutdown transition and the end of the process (its service answer goes out first).
EXIT_DELAY_S = 0.5


def resident_mb() -> float:
    """This process's resident set size in MB."""
    return psutil.Process().memory_info().rss / 2**20


class DepthLifecycleNode(LifecycleNode):
    """SPACE-CLIP depth estimation as a managed node (see the module notes and docs/ros_node.md)."""

    def __init__(self, **node_options) -> None:
        super().__init__(NODE_NAME, **node_options)
        self._log_forwarding = forward_package_logs(self.get_logger())
        self._node_parameters = NodeParameters(self)
        self._pipeline: DepthPipeline | None = None
        self._endpoints: DepthEndpoints | None = None
        self._diagnostics_timer = None
        self._exit_timer = None
        #: Done once the node is finalized (shutdown): ``main`` ends the process then.
        self.finished = Future()
        self.get_logger().info("unconfigured: 'configure' loads the model, 'activate' starts the cameras")

    @property
    def settings(self) -> DepthNodeSettings:
        """The parameters now in force."""
        return self._node_parameters.settings

    # ---- transitions -----------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        before = resident_mb()
        try:
            pipeline = make_pipeline(self, self._node_parameters)
        except MODEL_SETUP_ERRORS as exc:
            self.get_logger().error(f"configure failed, staying unconfigured: cannot load the model: {exc}")
            return TransitionCallbackReturn.FAILURE
        except StartupError as exc:  # the model cannot serve the output parameters (no confidence map)
            self.get_logger().error(f"configure failed, staying unconfigured: {exc}")
            return TransitionCallbackReturn.FAILURE
        self._pipeline = pipeline
        self._endpoints = DepthEndpoints(self, pipeline, self.settings, self.create_lifecycle_publisher,
                                         self.destroy_lifecycle_publisher)
        self._endpoints.create_publishers()
        self.get_logger().info(
            f"configured (resident memory {before:.0f} -> {resident_mb():.0f} MB): "
            f"{pipeline.predictor.describe()}. {self._endpoints.describe()}"
        )
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # the lifecycle publishers first
        self._pipeline.start(self._endpoints.publish)
        self._endpoints.create_subscriptions()
        self._diagnostics_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._endpoints.publish_diagnostics)
        self.get_logger().info(f"active: subscribed to {', '.join(self._endpoints.image_topics.values())}")
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_cameras()
        self.get_logger().info("inactive: unsubscribed, publishing nothing")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_cameras()
        self._release()
        self.get_logger().info("finalized: the process ends")
        self._exit_timer = self.create_timer(EXIT_DELAY_S, self._finish)
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error("error in a transition: releasing everything, back to unconfigured")
        self._stop_cameras()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    # ---- the steps -------------------------------------------------------------------------------
    def _stop_cameras(self) -> None:
        """Unsubscribe, finish the frames in work, stop the diagnostics (nothing if not active)."""
        if self._endpoints is not None:
            self._endpoints.destroy_subscriptions()
        if self._pipeline is not None:
            self._pipeline.stop()
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = None

    def _release(self) -> None:
        """Free the publishers and the model (nothing if not configured)."""
        if self._pipeline is None:
            return
        before = resident_mb()
        self._endpoints.destroy_publishers()
        self._endpoints = None
        self._pipeline = None
        self._node_parameters.set_model_rule(None)
        return_freed_memory_to_os()
        self.get_logger().info(f"model released (resident memory {before:.0f} -> {resident_mb():.0f} MB)")

    def _finish(self) -> None:
        self.destroy_timer(self._exit_timer)
        if not self.finished.done():
            self.finished.set_result(True)

    def stop(self) -> None:
        """Stop the worker (Ctrl-C / process end) and detach the log forwarding."""
        self._stop_cameras()
        stop_forwarding(self._log_forwarding)


def main(args: list[str] | None = None) -> int:
    """Entry point of ``ros2 run space_clip_ros depth_lifecycle_node``; ends after the shutdown transition."""
    return run_node(
        NODE_NAME,
        args,
        DepthLifecycleNode,
        startup_errors=[
            ((rclpy.exceptions.ParameterException, StartupError), "refusing to start", EXIT_PARAMETER_ERROR),
        ],
        command_line_exit_code=EXIT_PARAMETER_ERROR,
        until=lambda node: node.finished,
        on_stop=DepthLifecycleNode.stop,
    )


if __name__ == "__main__":
    sys.exit(main())
