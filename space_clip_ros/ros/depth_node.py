"""The ROS 2 depth node ``space_clip_depth`` (console script ``depth_node``).

Camera images in; metric depth image (REP 118), its CameraInfo, a point cloud and optional extras
out, for one camera or several (parameter ``cameras``). The class is glue only: its parameters are
``ros.node_parameters``'s, its work is a :class:`~space_clip_ros.ros.depth_pipeline.DepthPipeline`
(mailboxes, one worker thread, one batched encoder + decoder pass for the frames waiting; no
rclpy), its topics are ``ros.depth_endpoints``'s. The managed (lifecycle) variant of the same node
is :mod:`space_clip_ros.ros.depth_lifecycle_node`.
"""

from __future__ import annotations

import sys

import rclpy
from rclpy.node import Node

from space_clip_ros.inference.rewrites.decoder_int8 import CalibrationFrameRecorder
from space_clip_ros.inference.runtime.predictor import DepthPredictor
from space_clip_ros.ros.depth_endpoints import DepthEndpoints
from space_clip_ros.ros.depth_pipeline import DepthPipeline
from space_clip_ros.ros.logging_bridge import forward_package_logs, stop_forwarding
from space_clip_ros.ros.model_setup import (
    CALIBRATION_AUTO,
    MODEL_SETUP_ERRORS,
    CalibrationPlan,
    build_predictor,
    calibration_plan,
    model_facts,
)
from space_clip_ros.ros.node_main import run_node
from space_clip_ros.ros.node_parameters import NodeParameters, StartupError
from space_clip_ros.ros.parameters import DepthNodeSettings

NODE_NAME = "space_clip_depth"
DIAGNOSTICS_PERIOD_S = 1.0

# Exit codes of main() besides 0 (stopped normally).
EXIT_MODEL_ERROR = 1
EXIT_PARAMETER_ERROR = 2

__all__ = ["EXIT_MODEL_ERROR", "EXIT_PARAMETER_ERROR", "NODE_NAME", "DepthNode", "StartupError", "main"]


def make_pipeline(node: Node, parameters: NodeParameters) -> DepthPipeline:
    """Load the model the parameters describe and make the pipeline around it (raises one of
    MODEL_SETUP_ERRORS, or StartupError when the model cannot serve the output parameters: a
    confidence map from a backend without the decoder's auxiliary heads). From then on the
    parameters refuse changes the model cannot serve."""
    settings = parameters.settings
    plan = calibration_plan(settings, node.get_fully_qualified_name())
    predictor = build_predictor(settings, plan)
    recorder = recalibrate = None
    if plan.record_into is not None:
        recorder = CalibrationFrameRecorder(plan.record_into)
        node.get_logger().info(
            f"calibration_images auto: no frames of this camera kept yet; keeping {recorder.count}, "
            f"{recorder.interval_s:g} s apart, in {plan.record_into}; then the inference path is chosen again "
            "with them (the int8 decoder calibrated on them), in the background")
        kept = CalibrationPlan(str(plan.record_into))

        def recalibrate() -> tuple[DepthPredictor, dict[str, str]]:
            chosen = build_predictor(settings, kept)
            return chosen, model_facts(chosen, settings.checkpoint)

    elif settings.calibration_images == CALIBRATION_AUTO:
        node.get_logger().info(f"calibration_images auto: using the camera frames kept in {plan.images}")
    pipeline = DepthPipeline(
        predictor,
        settings=parameters.current,
        logger=node.get_logger(),
        now_ns=lambda: node.get_clock().now().nanoseconds,
        model_facts=model_facts(predictor, settings.checkpoint),
        frame_recorder=recorder,
        recalibrate=recalibrate,
    )
    problem = pipeline.options_problem(settings)
    if problem is not None:
        raise StartupError(problem)
    parameters.set_model_rule(pipeline.options_problem)
    return pipeline


class DepthNode(Node):
    """SPACE-CLIP depth estimation over ROS 2 topics (see docs/ros_node.md)."""

    def __init__(self, **node_options) -> None:
        super().__init__(NODE_NAME, **node_options)
        self._log_forwarding = forward_package_logs(self.get_logger())
        self._node_parameters = NodeParameters(self)
        settings = self._node_parameters.settings
        self._pipeline = make_pipeline(self, self._node_parameters)
        self._endpoints = DepthEndpoints(self, self._pipeline, settings, self.create_publisher, self.destroy_publisher)
        self._endpoints.create_publishers()
        self._pipeline.start(self._endpoints.publish)
        self._endpoints.create_subscriptions()
        self._diagnostics_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._endpoints.publish_diagnostics)
        self.get_logger().info(f"{self._pipeline.predictor.describe()}. {self._endpoints.describe()}")

    @property
    def settings(self) -> DepthNodeSettings:
        """The parameters now in force."""
        return self._node_parameters.settings

    def stop(self) -> None:
        """Stop the worker (after the frames it is on) and detach the log forwarding."""
        self._pipeline.stop()
        stop_forwarding(self._log_forwarding)


def main(args: list[str] | None = None) -> int:
    """Entry point of ``ros2 run space_clip_ros depth_node`` (rclpy reads ``--ros-args`` itself)."""
    return run_node(
        NODE_NAME,
        args,
        DepthNode,
        startup_errors=[
            ((rclpy.exceptions.ParameterException, StartupError), "refusing to start", EXIT_PARAMETER_ERROR),
            (MODEL_SETUP_ERRORS, "cannot load the model", EXIT_MODEL_ERROR),
        ],
        command_line_exit_code=EXIT_PARAMETER_ERROR,
        on_stop=DepthNode.stop,
    )


if __name__ == "__main__":
    sys.exit(main())
