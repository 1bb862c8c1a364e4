"""rclpy API that differs between the supported ROS 2 distributions (Humble, Jazzy, Kilted), in one place.

Each function here uses the newer API where the running rclpy has it, and a fallback with the same
behaviour where it does not. The newer API is looked up with ``getattr(..., None)``: the guard
test/test_humble_compat.py recognises, which checks the whole package against Humble's rclpy.
"""

from __future__ import annotations

from collections.abc import Callable

from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter

#: Decides whether a set of parameter values may be set; must not change anything.
ParameterValidator = Callable[[list[Parameter]], SetParametersResult]
#: Puts accepted values into effect; takes them from its argument.
ParameterApplier = Callable[[list[Parameter]], None]


def add_validated_parameters_callbacks(
    node: Node, validate: ParameterValidator, apply: ParameterApplier
) -> Callable[[], None]:
    """Refuse parameter values with ``validate``; hand the accepted ones to ``apply``.

    Both are called for every set of values the node is asked to set, declarations included (once
    for each parameter while declaring, once for all of a ``set_parameters_atomically`` call). Call
    this before declaring the parameters, and before registering any other on-set callback.

    Iron and later (Jazzy, Kilted): ``validate`` is an on-set callback and ``apply`` a post-set
    callback, called once the values are stored. Humble has no post-set callbacks
    (``add_post_set_parameters_callback`` arrived in Iron): one on-set callback runs ``validate`` and,
    when it accepts, ``apply``. That is the same behaviour because Humble checks the descriptors
    (types, ranges, read-only) before any on-set callback, calls the on-set callbacks newest first,
    and stores the values as soon as the last (the oldest: this one) has accepted. One difference
    remains: while ``apply`` runs on Humble, ``node.get_parameter`` still returns the old values, so
    ``apply`` must take the new values from its argument.

    Returns a function that removes the callbacks again (e.g. for a lifecycle node's cleanup).
    """
    add_post_set = getattr(node, "add_post_set_parameters_callback", None)
    remove_post_set = getattr(node, "remove_post_set_parameters_callback", None)
    if add_post_set is not None and remove_post_set is not None:
        node.add_on_set_parameters_callback(validate)
        add_post_set(apply)

        def remove_both() -> None:
            node.remove_on_set_parameters_callback(validate)
            remove_post_set(apply)

        return remove_both

    def validate_then_apply(parameters: list[Parameter]) -> SetParametersResult:
        result = validate(parameters)
        if result.successful:
            apply(parameters)
        return result

    node.add_on_set_parameters_callback(validate_then_apply)
    return lambda: node.remove_on_set_parameters_callback(validate_then_apply)
