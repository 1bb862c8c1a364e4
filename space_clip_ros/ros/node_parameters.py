"""The depth node's parameters on an rclpy node (either node class): declared from the tables of
``ros.parameters``, checked at start-up and on every change, read back as one snapshot.

The table's parameters are declared first; then, for each name of ``cameras``, that camera's own
parameters (``<camera>.<name>``). Each value is checked alone while declaring, the rules between
parameters once all are declared, and every later change both ways (so that ``min_depth`` and
``max_depth`` can move together in one atomic call). An accepted change becomes a new immutable
:class:`~space_clip_ros.ros.parameters.DepthNodeSettings`, which the pipeline's worker picks up
at its next frame.
"""

from __future__ import annotations

from collections.abc import Callable

from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter

from space_clip_ros.ros.parameter_table import ParameterValue, declare_parameters
from space_clip_ros.ros.parameters import (
    PARAMETERS,
    DepthNodeSettings,
    camera_parameter_specs,
    check_changes,
    check_consistency,
    check_value,
    parameter_spec,
)
from space_clip_ros.ros.rclpy_compat import add_validated_parameters_callbacks


class StartupError(RuntimeError):
    """The node cannot start with its parameters; the text says why."""


class NodeParameters:
    """Declares the depth node's parameters on ``node`` and keeps their values (see the module notes).

    Raises rclpy's ParameterException subclasses for a value refused while declaring and
    :class:`StartupError` when the rules between parameters do not hold.
    """

    def __init__(self, node: Node) -> None:
        self._node = node
        self._values: dict[str, ParameterValue] = {}
        self._all_declared = False
        # Post-set callbacks arrived in Iron; on Humble the helper applies at the end of the check.
        add_validated_parameters_callbacks(node, self._check, self._apply)
        declare_parameters(node, PARAMETERS)  # each value reaches self._values via the callbacks
        for camera in DepthNodeSettings.from_values(self._values).cameras:
            declare_parameters(node, camera_parameter_specs(camera))
        reason = check_consistency(self._values)
        if reason is not None:
            raise StartupError(reason)
        self._all_declared = True
        self.settings = DepthNodeSettings.from_values(self._values)
        self._model_rule: Callable[[DepthNodeSettings], str | None] | None = None
        self._warn_unknown_overrides()

    def set_model_rule(self, rule: Callable[[DepthNodeSettings], str | None] | None) -> None:
        """A rule the loaded model sets on the parameters (``DepthPipeline.options_problem``: no
        confidence map from an exported graph); every later change must pass it too. None: none."""
        self._model_rule = rule

    def current(self) -> DepthNodeSettings:
        """The settings now in force (a new snapshot after each accepted change)."""
        return self.settings

    def _own(self, parameters: list[Parameter]) -> list[Parameter]:
        # Only our own parameters: rclpy's (use_sim_time) pass through unchecked.
        return [p for p in parameters if parameter_spec(p.name) is not None]

    def _check(self, parameters: list[Parameter]) -> SetParametersResult:
        changes = {p.name: p.value for p in self._own(parameters)}
        if self._all_declared:
            reason = check_changes(self._values, changes)
            if reason is None and self._model_rule is not None and changes:
                reason = self._model_rule(DepthNodeSettings.from_values({**self._values, **changes}))
        else:
            # While declaring, the other parameters are not there yet: the rules between
            # parameters are checked once all are declared.
            reason = next((r for r in (check_value(n, v) for n, v in changes.items()) if r), None)
        return SetParametersResult(successful=reason is None, reason=reason or "")

    def _apply(self, parameters: list[Parameter]) -> None:
        ours = self._own(parameters)
        for parameter in ours:
            self._values[parameter.name] = parameter.value
        if self._all_declared and ours:
            # One new immutable snapshot: the worker picks it up at its next frame.
            self.settings = DepthNodeSettings.from_values(self._values)
            changed = ", ".join(f"{p.name}={p.value!r}" for p in ours)
            self._node.get_logger().info(f"parameters changed ({changed}); in effect from the next frame")

    def _warn_unknown_overrides(self) -> None:
        # rclpy silently ignores overrides nobody declares; a typo in the YAML should not go unseen.
        overrides = getattr(self._node, "_parameter_overrides", {})
        unknown = sorted(name for name in overrides if not self._node.has_parameter(name))
        if unknown:
            self._node.get_logger().warning(f"ignoring unknown parameter(s) {unknown}; see docs/ros_node.md")
