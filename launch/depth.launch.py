"""Start the SPACE-CLIP depth node (and RViz on request).

    ros2 launch space_clip_ros depth.launch.py \
        image:=/camera/color/image_raw camera_info:=/camera/color/camera_info \
        checkpoint:=/path/to/decoder.safetensors device:=cuda use_rviz:=true

With ``lifecycle:=true`` the managed node (``depth_lifecycle_node``) starts instead, unconfigured;
``autostart:=true`` (the default) then configures and activates it from here, ``autostart:=false``
leaves that to a lifecycle manager (nav2_lifecycle_manager; docs/ros_node.md).

launch / launch_ros are imported inside the functions that need them, so this file can be imported
(and its plain helpers tested) on a machine without them.
"""

from __future__ import annotations

PACKAGE = "space_clip_ros"
EXECUTABLE = "depth_node"
LIFECYCLE_EXECUTABLE = "depth_lifecycle_node"
NODE_NAME = "space_clip_depth"
PARAMS_FILE = "config/depth.yaml"  # relative to the package's share directory
RVIZ_CONFIG = "config/depth.rviz"

#: (name, default, description) of every launch argument; docs/ros_node.md lists the same.
LAUNCH_ARGUMENTS: tuple[tuple[str, str, str], ...] = (
    ("image", "/camera/color/image_raw", "Colour image topic (sensor_msgs/Image; with the "
     "image_transport parameter set to compressed, the node reads its /compressed sub-topic)."),
    ("camera_info", "/camera/color/camera_info", "CameraInfo topic of that image."),
    ("params_file", "", "Parameters file. Empty: the package's config/depth.yaml."),
    ("checkpoint", "", "Decoder checkpoint; overrides the parameters file when given."),
    ("device", "", "auto, cpu, cuda or cuda:N; overrides the parameters file when given."),
    ("namespace", "", "Namespace of the node (and of its output topics)."),
    ("use_rviz", "false", "Also start RViz with config/depth.rviz."),
    ("lifecycle", "false", "Start the managed node (depth_lifecycle_node): unconfigured until configured and "
     "activated, by this file (autostart) or a lifecycle manager."),
    ("autostart", "true", "With lifecycle: configure and then activate the node from this file. false: leave "
     "it unconfigured for a lifecycle manager (nav2_lifecycle_manager)."),
)


def node_remappings(image: str, camera_info: str) -> list[tuple[str, str]]:
    """The node's input remappings (its outputs stay relative to its namespace)."""
    return [("image", image), ("camera_info", camera_info)]


def node_parameters(params_file: str, checkpoint: str, device: str) -> list:
    """The params file first, then the checkpoint/device overrides that were given (later wins)."""
    overrides = {name: value for name, value in (("checkpoint", checkpoint), ("device", device)) if value}
    return [params_file, overrides] if overrides else [params_file]


def rviz_remappings(namespace: str) -> list[tuple[str, str]]:
    """config/depth.rviz names the node's topics in the root namespace; follow a namespaced node."""
    namespace = namespace.strip("/")
    if not namespace:
        return []
    return [(f"/{topic}", f"/{namespace}/{topic}") for topic in ("depth/image", "depth/colored", "points")]


def is_true(text: str) -> bool:
    return text.strip().lower() in ("true", "1", "yes", "on")


def executable(lifecycle: bool) -> str:
    """The console script to start: the plain node, or the managed one."""
    return LIFECYCLE_EXECUTABLE if lifecycle else EXECUTABLE


def autostart_actions(node) -> list:
    """Configure the lifecycle ``node`` once it runs, and activate it once configuring has succeeded.

    Activation waits for the transition configuring -> inactive (not any arrival in inactive, which
    a later deactivate also is). A failed configure leaves the node unconfigured, as it says in its log.
    """
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch.events import matches_action
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState
    from lifecycle_msgs.msg import Transition

    def change(transition: int):
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=transition))

    activate_when_configured = RegisterEventHandler(
        OnStateTransition(target_lifecycle_node=node, start_state="configuring", goal_state="inactive",
                          entities=[change(Transition.TRANSITION_ACTIVATE)])
    )
    return [activate_when_configured, change(Transition.TRANSITION_CONFIGURE)]


def _launch_setup(context, *args, **kwargs):
    import os

    from ament_index_python.packages import get_package_share_directory
    from launch_ros.actions import Node
    from launch_ros.parameter_descriptions import ParameterValue

    def arg(name: str) -> str:
        return context.launch_configurations.get(name, "")

    share = get_package_share_directory(PACKAGE)
    params_file = arg("params_file") or os.path.join(share, PARAMS_FILE)
    parameters = node_parameters(params_file, arg("checkpoint"), arg("device"))
    # Typed as strings: launch_ros would otherwise read a value such as "1" as YAML (an integer).
    parameters = [
        {name: ParameterValue(value, value_type=str) for name, value in entry.items()}
        if isinstance(entry, dict) else entry
        for entry in parameters
    ]
    lifecycle = is_true(arg("lifecycle"))
    node_options = dict(
        package=PACKAGE,
        executable=executable(lifecycle),
        name=NODE_NAME,
        namespace=arg("namespace"),
        parameters=parameters,
        remappings=node_remappings(arg("image"), arg("camera_info")),
        output="screen",
        emulate_tty=True,
    )
    if lifecycle:
        from launch_ros.actions import LifecycleNode

        node = LifecycleNode(**node_options)
        actions = [node] + (autostart_actions(node) if is_true(arg("autostart")) else [])
    else:
        actions = [Node(**node_options)]
    if is_true(arg("use_rviz")):
        actions.append(
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                arguments=["-d", os.path.join(share, RVIZ_CONFIG)],
                remappings=rviz_remappings(arg("namespace")),
                output="screen",
            )
        )
    return actions


def generate_launch_description():
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    from launch import LaunchDescription

    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, default, text in LAUNCH_ARGUMENTS]
        + [OpaqueFunction(function=_launch_setup)]
    )
