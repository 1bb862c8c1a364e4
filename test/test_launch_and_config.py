"""launch/depth.launch.py, config/depth.yaml, config/depth.rviz and docs/ros_node.md, checked
without ROS's launch tools (not installable here): parsed, run against stand-in launch modules,
and compared with the node's own parameter and topic tables and a live node."""

from __future__ import annotations

import ast
import json
import re
import sys
import types
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import yaml
from ros_helpers import (
    DOCS_FILE,
    LAUNCH_FILE,
    PARAMS_FILE,
    RVIZ_FILE,
    TINY_VISION_OVERRIDES,
    NodeProcess,
    RosTestClient,
    depth_node_command,
    load_launch_module,
    module_domain_id,
    node_environment,
    unique_namespace,
)

from space_clip_ros.msgs.image import SUPPORTED_COLOUR_ENCODINGS
from space_clip_ros.ros import topics
from space_clip_ros.ros.parameters import (
    PARAMETERS,
    PARAMETERS_BY_NAME,
    check_consistency,
    render_camera_markdown_table,
)
from space_clip_ros.ros.parameters import render_markdown_table as render_parameter_table
from space_clip_ros.ros.topics import render_markdown_table as render_topic_table

NODE_KEY = "/**/space_clip_depth"


def yaml_parameters() -> dict:
    document = yaml.safe_load(PARAMS_FILE.read_text())
    assert list(document) == [NODE_KEY], "one node section, matching the node in any namespace"
    return document[NODE_KEY]["ros__parameters"]


# ---- the executable ----------------------------------------------------------------------------
def test_the_launched_executable_is_an_entry_point_of_the_package():
    launch = load_launch_module()
    (entry,) = [e for e in entry_points(group="console_scripts") if e.name == launch.EXECUTABLE]
    assert entry.value == "space_clip_ros.ros.depth_node:main"
    assert callable(entry.load())
    (entry,) = [e for e in entry_points(group="console_scripts") if e.name == launch.LIFECYCLE_EXECUTABLE]
    assert entry.value == "space_clip_ros.ros.depth_lifecycle_node:main"
    assert callable(entry.load())
    assert launch.PACKAGE == "space_clip_ros"
    package_xml = (LAUNCH_FILE.parents[1] / "package.xml").read_text()
    assert f"<name>{launch.PACKAGE}</name>" in package_xml


# ---- the launch file ------------------------------------------------------------------------------
def test_launch_file_parses_and_imports_launch_only_inside_functions():
    tree = ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))
    top_level_imports = [
        node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
    ]
    imported = {alias.name for node in top_level_imports for alias in node.names} | {
        node.module for node in top_level_imports if isinstance(node, ast.ImportFrom)
    }
    assert not any(name and name.split(".")[0] in ("launch", "launch_ros") for name in imported)
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert "generate_launch_description" in functions


def _launch_arguments_from_ast() -> list[str]:
    tree = ast.parse(LAUNCH_FILE.read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "LAUNCH_ARGUMENTS":
            return [entry[0] for entry in ast.literal_eval(node.value)]
    raise AssertionError("LAUNCH_ARGUMENTS not found in the launch file")


def _documented_launch_arguments() -> list[str]:
    text = DOCS_FILE.read_text()
    section = text.split("<!-- launch-arguments:begin -->")[1].split("<!-- launch-arguments:end -->")[0]
    return re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE)


def test_launch_arguments_are_the_documented_ones():
    declared = _launch_arguments_from_ast()
    assert declared == _documented_launch_arguments()
    assert {"image", "camera_info", "params_file", "checkpoint", "device", "namespace", "use_rviz", "lifecycle",
            "autostart"} <= set(declared)


class _Recorder:
    """Stand-in for a launch action class: keeps its arguments."""

    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs


@pytest.fixture()
def fake_launch(monkeypatch, tmp_path):
    """Minimal launch / launch_ros / ament_index modules, enough to run the launch file's code."""
    share = tmp_path / "share" / "space_clip_ros"

    def module(name: str, **attributes) -> types.ModuleType:
        created = types.ModuleType(name)
        created.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, name, created)
        return created

    class ParameterValue:
        def __init__(self, value, value_type=None) -> None:
            self.value, self.value_type = value, value_type

        def __eq__(self, other) -> bool:
            return (self.value, self.value_type) == (other.value, other.value_type)

    module("launch", LaunchDescription=lambda entities: list(entities))
    module("launch.actions", DeclareLaunchArgument=type("DeclareLaunchArgument", (_Recorder,), {}),
           OpaqueFunction=type("OpaqueFunction", (_Recorder,), {}))
    module("launch_ros")
    module("launch_ros.actions", Node=type("Node", (_Recorder,), {}))
    module("launch_ros.parameter_descriptions", ParameterValue=ParameterValue)
    module("ament_index_python")
    module("ament_index_python.packages", get_package_share_directory=lambda package: str(share))
    return types.SimpleNamespace(share=share, ParameterValue=ParameterValue)


def _run_launch(configurations: dict[str, str]):
    launch = load_launch_module()
    entities = launch.generate_launch_description()
    declared = {e.args[0]: e.kwargs["default_value"] for e in entities
                if type(e).__name__ == "DeclareLaunchArgument"}
    (opaque,) = [e for e in entities if type(e).__name__ == "OpaqueFunction"]
    context = types.SimpleNamespace(launch_configurations={**declared, **configurations})
    return opaque.kwargs["function"](context)


def test_launch_starts_the_node_with_params_file_then_overrides(fake_launch):
    (node,) = _run_launch({"image": "/cam/image_raw", "camera_info": "/cam/camera_info"})
    assert (node.kwargs["package"], node.kwargs["executable"], node.kwargs["name"]) == (
        "space_clip_ros", "depth_node", "space_clip_depth")
    assert node.kwargs["parameters"] == [str(fake_launch.share / "config" / "depth.yaml")]
    assert node.kwargs["remappings"] == [("image", "/cam/image_raw"), ("camera_info", "/cam/camera_info")]
    assert node.kwargs["namespace"] == ""

    node, rviz = _run_launch({"checkpoint": "/models/nyu", "device": "cuda", "params_file": "/my.yaml",
                              "namespace": "robot1", "use_rviz": "true"})
    as_string = fake_launch.ParameterValue
    # The parameters file first, the launch arguments after it (later entries win in ROS 2).
    assert node.kwargs["parameters"] == [
        "/my.yaml", {"checkpoint": as_string("/models/nyu", str), "device": as_string("cuda", str)}
    ]
    assert node.kwargs["namespace"] == "robot1"
    assert rviz.kwargs["executable"] == "rviz2"
    assert rviz.kwargs["arguments"] == ["-d", str(fake_launch.share / "config" / "depth.rviz")]
    assert ("/points", "/robot1/points") in rviz.kwargs["remappings"]
    assert ("/depth/image", "/robot1/depth/image") in rviz.kwargs["remappings"]


def test_launch_starts_the_lifecycle_node_and_configures_then_activates_it(fake_launch, monkeypatch):
    """lifecycle:=true: the managed node; autostart emits configure, and activate once configuring
    has reached inactive (launch_ros's lifecycle events, as stand-ins here)."""
    from lifecycle_msgs.msg import Transition

    def module(name: str, **attributes) -> types.ModuleType:
        created = sys.modules.get(name) or types.ModuleType(name)
        created.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, name, created)
        return created

    module("launch.actions", EmitEvent=type("EmitEvent", (_Recorder,), {}),
           RegisterEventHandler=type("RegisterEventHandler", (_Recorder,), {}))
    module("launch.events", matches_action=lambda action: ("matches", action))
    module("launch_ros.actions", LifecycleNode=type("LifecycleNode", (_Recorder,), {}))
    module("launch_ros.event_handlers", OnStateTransition=type("OnStateTransition", (_Recorder,), {}))
    module("launch_ros.events")
    module("launch_ros.events.lifecycle", ChangeState=type("ChangeState", (_Recorder,), {}))

    node, activate_handler, configure = _run_launch({"lifecycle": "true"})
    assert type(node).__name__ == "LifecycleNode"
    assert (node.kwargs["executable"], node.kwargs["name"]) == ("depth_lifecycle_node", "space_clip_depth")
    assert node.kwargs["parameters"] == [str(fake_launch.share / "config" / "depth.yaml")]
    assert configure.kwargs["event"].kwargs == {"lifecycle_node_matcher": ("matches", node),
                                                "transition_id": Transition.TRANSITION_CONFIGURE}
    handler = activate_handler.args[0]
    assert handler.kwargs["target_lifecycle_node"] is node
    assert (handler.kwargs["start_state"], handler.kwargs["goal_state"]) == ("configuring", "inactive")
    (activate,) = handler.kwargs["entities"]
    assert activate.kwargs["event"].kwargs["transition_id"] == Transition.TRANSITION_ACTIVATE

    # Without autostart: the node alone, for a lifecycle manager.
    (node,) = _run_launch({"lifecycle": "true", "autostart": "false"})
    assert type(node).__name__ == "LifecycleNode"
    (node,) = _run_launch({})
    assert type(node).__name__ == "Node" and node.kwargs["executable"] == "depth_node"


def test_launch_helpers():
    launch = load_launch_module()
    assert launch.node_parameters("p.yaml", "", "") == ["p.yaml"]
    assert launch.node_parameters("p.yaml", "", "cpu") == ["p.yaml", {"device": "cpu"}]
    assert launch.rviz_remappings("") == [] and launch.rviz_remappings("/") == []
    assert all(launch.is_true(t) for t in ("true", "True", "1")) and not launch.is_true("false")


# ---- the parameters file ---------------------------------------------------------------------------
def test_parameters_file_lists_every_parameter_with_its_default_and_a_comment():
    values = yaml_parameters()
    assert list(values) == [spec.name for spec in PARAMETERS], "every parameter, in table order"
    for name, value in values.items():
        spec = PARAMETERS_BY_NAME[name]
        assert spec.check(value) is None, f"{name}: {spec.check(value)}"
        assert type(value) is type(spec.default), f"{name} must be written as a {spec.type_name}"
        assert value == spec.default, f"{name}: the file should show the default"
    assert check_consistency(values) is None
    lines = PARAMS_FILE.read_text().splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^    [a-z_]+:", line):
            assert lines[index - 1].strip().startswith("#"), f"no comment above '{line.strip()}'"


# ---- the RViz config ---------------------------------------------------------------------------------
def test_rviz_config_shows_the_node_default_topics_in_its_default_frame():
    config = yaml.safe_load(RVIZ_FILE.read_text())
    manager = config["Visualization Manager"]
    displays = {d["Class"]: d for d in manager["Displays"] if d.get("Enabled")}
    assert displays["rviz_default_plugins/Image"]["Topic"]["Value"] == "/" + topics.DEPTH_IMAGE
    cloud = displays["rviz_default_plugins/PointCloud2"]
    assert cloud["Topic"]["Value"] == "/" + topics.POINTS
    # The node publishes reliable by default; RViz subscribes reliable, so they match.
    assert cloud["Topic"]["Reliability Policy"] == "Reliable"
    fixed_frame = manager["Global Options"]["Fixed Frame"]
    assert fixed_frame == "camera_color_optical_frame"
    assert f"`{fixed_frame}`" in DOCS_FILE.read_text()
    # Every topic RViz shows is one the node publishes.
    shown = {d["Topic"]["Value"] for d in manager["Displays"] if "Topic" in d}
    published = {"/" + t.name for t in topics.TOPICS if t.direction == "publishes"}
    assert shown <= published


# ---- the docs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("doc", [DOCS_FILE, DOCS_FILE.parents[1] / "README.md"], ids=["ros_node.md", "README.md"])
def test_docs_carry_the_generated_tables(doc):
    text = doc.read_text()
    hint = "regenerate with render_markdown_table() from space_clip_ros.ros.{parameters,topics}"
    assert render_parameter_table() in text, hint
    assert render_topic_table() in text, hint


def test_docs_carry_the_camera_table_the_encodings_and_the_lifecycle_manager_snippet():
    text = DOCS_FILE.read_text()
    assert render_camera_markdown_table() in text, "regenerate with render_camera_markdown_table()"
    listed = text.split("<!-- encodings:begin -->")[1].split("<!-- encodings:end -->")[0]
    assert re.findall(r"`([^`]+)`", listed) == list(SUPPORTED_COLOUR_ENCODINGS)
    blocks = [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)]
    manager = next(b for b in blocks if "lifecycle_manager_perception" in b)["lifecycle_manager_perception"]
    assert manager["ros__parameters"] == {"node_names": ["space_clip_depth"], "autostart": True, "bond_timeout": 0.0}
    cameras = next(b for b in blocks if "/**/space_clip_depth" in b)["/**/space_clip_depth"]["ros__parameters"]
    assert check_consistency({**{spec.name: spec.default for spec in PARAMETERS}, **_flattened(cameras)}) is None


def _flattened(values: dict, prefix: str = "") -> dict:
    """Nested YAML parameters as rcl reads them: ``rear: {output_width: 0}`` is ``rear.output_width``."""
    flat = {}
    for name, value in values.items():
        if isinstance(value, dict):
            flat.update(_flattened(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def test_docs_nav2_and_laserscan_snippets_are_valid_yaml():
    text = DOCS_FILE.read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    parsed = [yaml.safe_load(block) for block in blocks]
    costmap = next(p for p in parsed if "local_costmap" in json.dumps(p))
    source = json.dumps(costmap)
    for key in ("data_type", "PointCloud2", "max_obstacle_height", "min_obstacle_height", "obstacle_max_range",
                "raytrace_max_range", "clearing", "marking"):
        assert key in source, key
    assert "/points" in source
    assert "depthimage_to_laserscan" in text and "depth_camera_info" in text
    assert "static_transform_publisher" in text


# ---- a live node with the parameters file ---------------------------------------------------------------
@pytest.mark.slow  # a node process over DDS
@pytest.mark.ros
@pytest.mark.timeout(300)
def test_node_accepts_every_value_of_the_parameters_file(tmp_path):
    domain = module_domain_id(__name__)
    namespace = unique_namespace()
    # The real file with two values changed: proves its node key matches a namespaced node
    # (otherwise the node would silently keep its defaults, which equal the file's).
    params = tmp_path / "depth.yaml"
    text = PARAMS_FILE.read_text()
    changed = text.replace("    points_stride: 0\n", "    points_stride: 2\n").replace(
        '    colormap: "turbo"\n', '    colormap: "jet"\n')
    assert changed.count("\n") == text.count("\n") and changed != text
    params.write_text(changed)
    command = depth_node_command(namespace=namespace, device="cpu", params_file=params,
                                 overrides={"vision_overrides": json.dumps(TINY_VISION_OVERRIDES)})
    node = NodeProcess(command, node_environment(domain), tmp_path / "node.log")
    client = RosTestClient(domain, name="config_client")
    try:
        node.wait_for_log(r"\[INFO\].*SPACE-CLIP ViT-B-16 .*UNTRAINED decoder", timeout=120)
        values = client.get_parameters(f"{namespace}/space_clip_depth", [spec.name for spec in PARAMETERS])
        # rcl reads the file's empty list as "not set": `cameras` reads back as None (no cameras).
        expected = {**yaml_parameters(), "points_stride": 2, "colormap": "jet", "device": "cpu",
                    "vision_overrides": json.dumps(TINY_VISION_OVERRIDES), "cameras": None}
        assert values == expected
        log = node.log()
        # Without a checkpoint: runs, and says so once at WARNING.
        assert len(re.findall(r"\[WARN\].*no decoder checkpoint given.*RANDOM weights", log)) == 1
        assert "ignoring unknown parameter" not in log and "ERROR" not in log and "FATAL" not in log
    finally:
        client.close()
        assert node.stop() == 0, node.log()


def test_helpers_point_at_the_real_files():
    for path in (PARAMS_FILE, RVIZ_FILE, LAUNCH_FILE, DOCS_FILE):
        assert Path(path).is_file(), path
