"""Parameter tables of the package's nodes: one :class:`ParameterSpec` per parameter.

A node's table says what each parameter is (type, default, valid values, whether it can change
while the node runs); from it come the node's declarations (with descriptors that ``ros2 param
describe`` shows), the check of a value (type, range, choices, extra rule) and the markdown table
of the docs. The depth node's table is :mod:`space_clip_ros.ros.parameters`, the camera
simulator's is in :mod:`space_clip_ros.ros.camera_simulator`.

No rclpy and no torch here (only message types), so a light node can use it. The wording of the
range and choice rules is the output options' (``outputs.options.range_problem``), so a value refused
by the node and by space-clip-bag reads the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
)

from space_clip_ros.outputs.options import range_problem

ParameterValue = bool | int | float | str | list[str]

#: Values of an ``image_transport`` parameter (raw sensor_msgs/Image or its compressed sub-topic).
IMAGE_TRANSPORTS = ("raw", "compressed")
#: Values of a publisher reliability parameter.
RELIABILITIES = ("reliable", "best_effort")
#: Values of the image subscription's reliability: ``auto`` matches the image topic's publishers.
INPUT_RELIABILITIES = ("auto", *RELIABILITIES)


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter of a node.

    Attributes:
        name: the ROS parameter name.
        default: the default value; its Python type is the parameter's type. A list: a string
            array, declared "not set" unless given, which means the default. (rclpy cannot hold an
            empty string array: it takes ``[]`` for a byte array, and rcl reads an empty YAML list
            as "not set"; so the descriptor allows any type, and :meth:`check` allows only
            strings.)
        description: what it does (shown by ``ros2 param describe`` and in the docs).
        group: heading it is listed under in a parameters file and the docs (empty: none).
        read_only: fixed at start-up; runtime changes are refused.
        min_value, max_value: inclusive range of an int or float parameter.
        choices: the allowed values of a string parameter.
        extra_check: further check of a value, returning the reason it is refused (or None).
        constraint_text: human-readable rule for values an extra check enforces.
    """

    name: str
    default: ParameterValue
    description: str
    group: str = ""
    read_only: bool = False
    min_value: int | float | None = None
    max_value: int | float | None = None
    choices: tuple[str, ...] = ()
    extra_check: Callable[[Any], str | None] | None = None
    constraint_text: str = ""

    @property
    def type_name(self) -> str:
        """ROS parameter type name: bool, integer, double, string or string array."""
        return {bool: "bool", int: "integer", float: "double", str: "string", list: "string array"}[type(self.default)]

    @property
    def is_string_array(self) -> bool:
        return isinstance(self.default, list)

    def value_or_default(self, value: Any) -> Any:
        """``value``, or the default for a string array that is not set (None)."""
        if self.is_string_array and value is None:
            return list(self.default)
        return value

    @property
    def constraints(self) -> str:
        """The valid values in words (for descriptors and docs)."""
        parts = []
        if self.min_value is not None and self.max_value is not None:
            parts.append(f"{self.min_value} to {self.max_value}")
        if self.choices:
            parts.append("one of: " + ", ".join(self.choices))
        if self.constraint_text:
            parts.append(self.constraint_text)
        return "; ".join(parts)

    def check(self, value: Any) -> str | None:
        """None if ``value`` is valid for this parameter, else the reason it is not."""
        if self.is_string_array:
            return self._check_string_array(value)
        expected = type(self.default)
        # bool is an int in Python; a ROS bool is never an integer or double parameter.
        type_ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            type_ok = True
        if not type_ok:
            article = "an" if self.type_name == "integer" else "a"
            return f"{self.name} must be {article} {self.type_name}, got {type(value).__name__} {value!r}"
        if expected is float and not math.isfinite(value):
            return f"{self.name} must be finite, got {value}"
        reason = range_problem(self.name, value, self.min_value, self.max_value, self.choices)
        if reason is not None:
            return reason
        return self._extra_problem(value)

    def _check_string_array(self, value: Any) -> str | None:
        value = self.value_or_default(value)
        if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
            return f"{self.name} must be a string array, got {type(value).__name__} {value!r}"
        return self._extra_problem(list(value))

    def _extra_problem(self, value: Any) -> str | None:
        if self.extra_check is not None:
            reason = self.extra_check(value)
            if reason is not None:
                return f"{self.name} {reason}"
        return None

    def descriptor(self) -> ParameterDescriptor:
        """The ParameterDescriptor the node declares this parameter with."""
        when = " Read-only: set at start-up." if self.read_only else " Can change at runtime."
        text = self.description + when
        descriptor = ParameterDescriptor(
            name=self.name,
            type=getattr(ParameterType, "PARAMETER_" + self.type_name.upper().replace(" ", "_")),
            description=text,
            additional_constraints=self.constraints,
            read_only=self.read_only,
            dynamic_typing=self.is_string_array,  # "not set" is its empty value (see the class notes)
        )
        if isinstance(self.default, float) and self.min_value is not None:
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=float(self.min_value), to_value=float(self.max_value), step=0.0)
            ]
        elif self.type_name == "integer" and self.min_value is not None:
            descriptor.integer_range = [
                IntegerRange(from_value=int(self.min_value), to_value=int(self.max_value), step=1)
            ]
        return descriptor


def declare_parameters(node: Any, specs: Iterable[ParameterSpec]) -> dict[str, ParameterValue]:
    """Declare every parameter of ``specs`` on an rclpy ``node``, with its default and descriptor.

    Returns name -> value after the command line's and parameter files' overrides (a string array
    not given: its default). rclpy raises its ParameterException subclasses for a value of the
    wrong type, out of range, or refused by the node's on-set-parameters callbacks.
    """
    specs = list(specs)
    declared = node.declare_parameters(
        "", [(spec.name, None if spec.is_string_array else spec.default, spec.descriptor()) for spec in specs]
    )
    return {parameter.name: spec.value_or_default(parameter.value) for spec, parameter in zip(specs, declared)}


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _format_default(value: ParameterValue) -> str:
    if isinstance(value, list):
        return "`[" + ", ".join(f'"{item}"' for item in value) + "]`"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value}`"


def markdown_table(specs: Iterable[ParameterSpec]) -> str:
    """A docs table of ``specs`` (name, type, default, valid values, runtime change, description)."""
    lines = [
        "| parameter | type | default | valid values | runtime change | description |",
        "|---|---|---|---|---|---|",
    ]
    for spec in specs:
        lines.append(
            "| "
            + " | ".join(
                [
                    f"`{spec.name}`",
                    spec.type_name,
                    _format_default(spec.default),
                    _markdown_cell(spec.constraints or "any"),
                    "no (read-only)" if spec.read_only else "yes, next frame",
                    _markdown_cell(spec.description),
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"
