"""The depth node's parameter table: values, ranges, rules between parameters, descriptors, docs table;
and the camera simulator's table, on the same machinery (space_clip_ros.ros.parameter_table).

No ROS graph here: these are the plain functions the node's parameter callbacks call.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import pytest
from rcl_interfaces.msg import ParameterType

from space_clip_ros.outputs.options import OPTIONS, OutputOptions
from space_clip_ros.ros import camera_simulator
from space_clip_ros.ros.parameter_table import markdown_table
from space_clip_ros.ros.parameters import (
    CAMERA_PARAMETERS,
    PARAMETERS,
    PARAMETERS_BY_NAME,
    DepthNodeSettings,
    check_changes,
    check_consistency,
    check_value,
    render_camera_markdown_table,
    render_markdown_table,
)

RUNTIME = {"points_stride", "min_depth", "max_depth", "points_max_range", "colormap", "publish_points",
           "publish_colored", "publish_embedding", "points_organized", "points_rgb", "process_every_n",
           "depth_encoding", "focal_rescale", "frame_id", "output_width", "output_height", "undistort",
           "out_of_range", "scale_anchor", "camera_height", "scale_smoothing", "flying_pixel_threshold",
           "flying_pixels_invalid", "points_min_confidence", "publish_confidence"}
READ_ONLY = {"checkpoint", "backbone", "pretrained", "vision_overrides", "device", "precision", "backend", "optimize",
             "cuda_graphs", "auto_cache", "calibration_images", "exported_model",
             "image_transport", "qos_depth", "image_reliability", "publisher_reliability", "cameras",
             "camera_info_tolerance"}


def test_table_names_are_unique_and_match_the_settings_snapshot():
    names = [spec.name for spec in PARAMETERS]
    assert len(names) == len(set(names))
    own = [f.name for f in dataclasses.fields(DepthNodeSettings) if f.name not in ("outputs", "camera_settings")]
    assert names == own + [f.name for f in dataclasses.fields(OutputOptions)]
    assert list(DepthNodeSettings.defaults().values()) == names


def test_output_parameters_are_the_output_options():
    """One definition: every output option is a runtime parameter with its name, default and rules."""
    specs = {spec.name: spec for spec in PARAMETERS}
    for option in OPTIONS:
        spec = specs[option.name]
        assert (spec.default, spec.description, spec.group, spec.read_only) == (
            option.default, option.description, option.group, not option.runtime)
        assert (spec.min_value, spec.max_value, spec.choices, spec.constraint_text) == (
            option.min_value, option.max_value, option.choices, option.constraint_text)
    settings = DepthNodeSettings.from_values({"points_stride": 4, "max_depth": 20})
    assert settings.outputs == OutputOptions(points_stride=4, max_depth=20.0)


def test_what_may_change_at_runtime():
    assert {spec.name for spec in PARAMETERS if spec.read_only} == READ_ONLY
    assert {spec.name for spec in PARAMETERS if not spec.read_only} == RUNTIME


@pytest.mark.parametrize("spec", PARAMETERS, ids=lambda s: s.name)
def test_every_default_is_valid_and_described(spec):
    assert spec.check(spec.default) is None
    descriptor = spec.descriptor()
    assert descriptor.name == spec.name
    assert len(descriptor.description) > 30
    assert descriptor.read_only == spec.read_only
    assert ("Read-only" in descriptor.description) == spec.read_only
    expected_type = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
                     float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING,
                     list: ParameterType.PARAMETER_STRING_ARRAY}
    assert descriptor.type == expected_type[type(spec.default)]
    if isinstance(spec.default, float):
        (float_range,) = descriptor.floating_point_range
        assert (float_range.from_value, float_range.to_value) == (spec.min_value, spec.max_value)
    elif isinstance(spec.default, int) and not isinstance(spec.default, bool):
        (int_range,) = descriptor.integer_range
        assert (int_range.from_value, int_range.to_value, int_range.step) == (spec.min_value, spec.max_value, 1)
    if spec.choices:
        assert all(choice in descriptor.additional_constraints for choice in spec.choices)


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("points_stride", -1, ">= 0"),
        ("points_stride", 65, "<= 64"),
        ("points_stride", 2.0, "must be an integer"),
        ("points_stride", True, "must be an integer"),
        ("publish_points", 1, "must be a bool"),
        ("min_depth", "0.1", "must be a double"),
        ("max_depth", math.inf, "finite"),
        ("max_depth", math.nan, "finite"),
        ("depth_encoding", "mono16", "32FC1, 16UC1"),
        ("colormap", "sparkly", "turbo"),
        ("image_transport", "theora", "raw, compressed"),
        ("publisher_reliability", "sometimes", "best_effort"),
        ("precision", "fp8", "bf16"),
        ("device", "tpu", "cuda:N"),
        ("vision_overrides", "{width: 64}", "JSON object"),
        ("vision_overrides", "[64]", "JSON object"),
        ("qos_depth", 0, ">= 1"),
        ("no_such_parameter", 1, "unknown parameter"),
        ("cameras", ["front", "front"], "more than once"),
        ("cameras", ["front/left"], "letters, digits and underscores"),
        ("cameras", ["2nd"], "start with a letter"),
        ("cameras", "front", "string array"),
        ("camera_info_tolerance", -0.1, ">= 0.0"),
        ("front.output_width", -2, ">= -1"),
        ("front.image_transport", "theora", "raw, compressed"),
        ("front.no_such_parameter", 1, "unknown parameter"),
    ],
)
def test_invalid_values_are_refused_with_a_reason(name, value, words):
    reason = check_value(name, value)
    assert reason is not None and words in reason
    if name in PARAMETERS_BY_NAME:
        assert name in reason, "the reason names the parameter"


@pytest.mark.parametrize(
    ("name", "value"),
    [("device", "cuda:1"), ("device", "cpu"), ("vision_overrides", '{"width": 64}'), ("min_depth", 0),
     ("max_depth", 80.0), ("colormap", "jet"), ("depth_encoding", "16UC1"), ("points_stride", 64),
     ("cameras", ["front", "rear_left"]), ("cameras", []), ("cameras", None), ("camera_info_tolerance", 0.02),
     ("front.output_width", 320), ("front.image_transport", ""), ("front.image_transport", "compressed")],
)
def test_valid_values_pass(name, value):
    assert check_value(name, value) is None


def test_rules_between_parameters():
    defaults = {spec.name: spec.default for spec in PARAMETERS}
    assert check_consistency(defaults) is None
    assert "min_depth (10.0) must be smaller than max_depth (10.0)" in check_changes(defaults, {"min_depth": 10.0})
    assert "max_depth" in check_changes(defaults, {"max_depth": 0.05})
    # Moving both together (an atomic set) is judged on the values afterwards.
    assert check_changes(defaults, {"min_depth": 20.0, "max_depth": 30.0}) is None
    assert "output_height" in check_changes(defaults, {"output_width": 320})
    assert check_changes(defaults, {"output_width": 320, "output_height": 240}) is None
    # A single bad value is reported before the rules between parameters.
    assert "points_stride" in check_changes(defaults, {"points_stride": -1, "min_depth": 99.0})
    # Each camera's own output size: -1 (the node's), 0 (its image's) or > 0, width and height together.
    cameras = {**defaults, "cameras": ["front"], "front.output_width": -1, "front.output_height": -1}
    assert check_consistency(cameras) is None
    assert "front.output_height (-1)" in check_changes(cameras, {"front.output_width": 320})
    assert check_changes(cameras, {"front.output_width": 320, "front.output_height": 240}) is None
    assert "both 0" in check_changes(cameras, {"front.output_width": 0, "front.output_height": 240})


def test_settings_snapshot():
    settings = DepthNodeSettings.defaults()
    assert settings.outputs.output_size is None
    assert settings.outputs.cloud_max_range == settings.outputs.max_depth
    assert settings.vision_overrides_dict == {}
    changed = DepthNodeSettings.from_values({"output_width": 320, "output_height": 240, "points_max_range": 5,
                                             "vision_overrides": '{"width": 64}', "max_depth": 20})
    assert changed.outputs.output_size == (240, 320)
    assert changed.outputs.cloud_max_range == 5.0 and isinstance(changed.outputs.points_max_range, float)
    assert isinstance(changed.outputs.max_depth, float)
    assert changed.vision_overrides_dict == {"width": 64}
    assert changed.replace(points_max_range=0.0).outputs.cloud_max_range == 20.0


def test_camera_settings_take_the_nodes_values_unless_set():
    settings = DepthNodeSettings.from_values({
        "cameras": ["front", "rear"], "image_transport": "compressed", "output_width": 320, "output_height": 240,
        "rear.image_transport": "raw", "rear.output_width": 0, "rear.output_height": 0, "points_stride": 2,
    })
    assert settings.cameras == ("front", "rear") and settings.camera_info_tolerance == 0.0 and settings.undistort
    assert settings.image_transport_for("front") == "compressed" and settings.image_transport_for("rear") == "raw"
    assert settings.outputs_for("front").output_size == (240, 320)
    assert settings.outputs_for("rear").output_size is None  # its own images' size
    assert settings.outputs_for("rear").points_stride == 2  # everything else is the node's
    assert settings.values()["rear.output_width"] == 0 and settings.values()["cameras"] == ["front", "rear"]
    assert DepthNodeSettings.from_values(settings.values()) == settings
    # No cameras (or "not set", as rcl reads an empty YAML list): the single camera, named "".
    single = DepthNodeSettings.from_values({"cameras": None})
    assert single.cameras == () and single.outputs_for("") == single.outputs


def test_camera_markdown_table():
    table = render_camera_markdown_table()
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == [f"<camera>.{spec.name}" for spec in CAMERA_PARAMETERS]


def test_markdown_table_has_one_row_per_parameter():
    table = render_markdown_table()
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == [spec.name for spec in PARAMETERS]
    stride_row = next(row for row in rows if row.startswith("| `points_stride`"))
    assert "| integer | `0` | 0 to 64 | yes, next frame |" in stride_row
    device_row = next(row for row in rows if row.startswith("| `device`"))
    assert "no (read-only)" in device_row
    # A | inside a description must not break the table.
    assert all(row.count(" | ") == 5 for row in rows)


# ---- the camera simulator's table -------------------------------------------------------------------
SIMULATOR_DOCS = Path(__file__).resolve().parents[1] / "docs" / "demo_and_bags.md"


def test_camera_simulator_imports_without_torch():
    code = "import space_clip_ros.ros.camera_simulator, sys; assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("spec", camera_simulator.PARAMETERS, ids=lambda s: s.name)
def test_camera_simulator_parameters_are_read_only_and_valid(spec):
    assert spec.read_only and spec.check(spec.default) is None
    descriptor = spec.descriptor()
    assert descriptor.read_only and descriptor.name == spec.name and spec.description in descriptor.description


def test_camera_simulator_settings_refuse_values_with_the_tables_reason():
    values = {spec.name: spec.default for spec in camera_simulator.PARAMETERS}
    assert camera_simulator.SimulatorSettings.from_values(values).rate == 10.0
    with pytest.raises(ValueError, match="scene must be one of indoor, street; got 'moon'"):
        camera_simulator.SimulatorSettings.from_values({**values, "scene": "moon"})
    with pytest.raises(ValueError, match="fov_deg must be <= 179.0"):
        camera_simulator.SimulatorSettings.from_values({**values, "fov_deg": 180.0})


def test_docs_carry_the_camera_simulator_table():
    assert markdown_table(camera_simulator.PARAMETERS) in SIMULATOR_DOCS.read_text(), (
        "regenerate with markdown_table(PARAMETERS) of space_clip_ros.ros.camera_simulator"
    )
