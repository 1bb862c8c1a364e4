"""package.xml and requirements/ against what the code imports and what rosdep can install.

- Every dependency of package.xml must be a rosdep key resolving on Ubuntu jammy (Humble) and noble
  (Jazzy, Kilted), or a package released in Humble, Jazzy and Kilted (../shared/compat/rosdep_keys.json).
- Every third-party module imported by space_clip_ros/ or launch/ must be declared: in package.xml
  (through the explicit module -> key tables below) or in the robot's pip requirements
  (requirements/robot.txt and the files it includes); and nothing declared may go unused.
- requirements/dev.txt and requirements/jazzy.txt pin every line exactly; dev.txt pins every robot
  package at a version the robot's requirements accept.
"""

from __future__ import annotations

import ast
import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_XML = REPO_ROOT / "package.xml"
REQUIREMENTS = REPO_ROOT / "requirements"
ROBOT_REQUIREMENTS = REQUIREMENTS / "robot.txt"
PINNED_REQUIREMENTS = (REQUIREMENTS / "dev.txt", REQUIREMENTS / "jazzy.txt")
ROSDEP_KEYS = REPO_ROOT.parent / "shared" / "compat" / "rosdep_keys.json"
CODE_DIRS = ("space_clip_ros", "launch")  # what a robot runs (the launch file is installed too)
PLATFORMS = ("jammy", "noble")
DISTROS = ("humble", "jazzy", "kilted")

# Imported module (top level, or a dotted prefix for a sub-module that needs its own package)
# -> package.xml key. ROS 2 packages first, then rosdep system keys (apt).
MODULE_TO_KEY = {
    "rclpy": "rclpy",
    "builtin_interfaces": "builtin_interfaces",
    "std_msgs": "std_msgs",
    "sensor_msgs": "sensor_msgs",
    "diagnostic_msgs": "diagnostic_msgs",
    "rcl_interfaces": "rcl_interfaces",
    "lifecycle_msgs": "lifecycle_msgs",
    "ament_index_python": "ament_index_python",
    "launch": "launch",
    "launch_ros": "launch_ros",
    "numpy": "python3-numpy",
    "cv2": "python3-opencv",
    "yaml": "python3-yaml",
    "tqdm": "python3-tqdm",
    "psutil": "python3-psutil",
}
# -> pip project of the robot requirements (what rosdep cannot install from apt).
MODULE_TO_PIP = {
    "torch": "torch",
    "torch.utils.tensorboard": "tensorboard",
    "open_clip": "open-clip-torch",
    "safetensors": "safetensors",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "rosbags": "rosbags",
    "apsw": "apsw",
    "lz4": "lz4",
    "backports.zstd": "backports-zstd",
}
# Imported but deliberately not a dependency.
NOT_DEPENDENCIES = {
    "tensorrt": "optional backend (backend: tensorrt); JetPack or NVIDIA's wheel provides it, and "
    "the node says so when it is missing",
    "compression": "standard library from Python 3.14 (compression.zstd); backports.zstd before",
}
# Declared although nothing imports them, with the reason.
USED_WITHOUT_IMPORT = {
    "rviz2": "started by launch/depth.launch.py (use_rviz:=true)",
    "python3-pytest-timeout": "pyproject.toml's pytest `timeout` setting",
    "torchvision": "open_clip imports it; pinned as a pair with torch",
    "timm": "open_clip builds its timm-based towers (SigLIP) with it",
    "numpy": "a constraint (NumPy 1.x beside apt's ROS 2), not a pip-installed dependency",
}
# Robot requirements that requirements/dev.txt pins outside the robot's range, with the reason.
DEV_OUTSIDE_ROBOT_RANGE = {
    "numpy": "dev uses PyPI's ROS 2 wheels, built against NumPy 2; a robot's apt ROS 2 needs NumPy 1.x",
}


def package_dependencies() -> dict[str, list[str]]:
    """package.xml's dependency tag -> the names it lists."""
    root = ET.parse(PACKAGE_XML).getroot()
    deps: dict[str, list[str]] = {}
    for element in root:
        if isinstance(element.tag, str) and element.tag.endswith("depend"):
            deps.setdefault(element.tag, []).append((element.text or "").strip())
    return deps


def requirement_lines(path: Path) -> list[tuple[Path, str]]:
    """(file, requirement) of a pip requirements file, following -r includes."""
    lines = []
    for raw in path.read_text().splitlines():
        line = raw.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-r ", "--requirement ")):
            lines += requirement_lines(path.parent / line.split(maxsplit=1)[1])
        elif line.startswith("-"):
            pytest.fail(f"{path.name}: option line {line!r} is not expected in a requirements file here")
        else:
            lines.append((path, line))
    return lines


def robot_requirements() -> dict[str, list[Requirement]]:
    found: dict[str, list[Requirement]] = {}
    for _, line in requirement_lines(ROBOT_REQUIREMENTS):
        requirement = Requirement(line)
        found.setdefault(canonicalize_name(requirement.name), []).append(requirement)
    return found


def imported_modules(dirs: tuple[str, ...] = CODE_DIRS) -> dict[str, set[str]]:
    """Every absolute import of the given folders -> the files importing it. `from a.b import c`
    gives a.b.c (c may be a module needing its own package, e.g. torch.utils.tensorboard)."""
    modules: dict[str, set[str]] = {}
    for directory in dirs:
        for path in sorted((REPO_ROOT / directory).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [f"{node.module}.{alias.name}" for alias in node.names]
                else:
                    continue
                for name in names:
                    modules.setdefault(name, set()).add(str(path.relative_to(REPO_ROOT)))
    return modules


def third_party(modules: dict[str, set[str]]) -> dict[str, set[str]]:
    """The imports that are neither the standard library nor this package."""
    return {
        name: files
        for name, files in modules.items()
        if name.split(".")[0] not in sys.stdlib_module_names and name.split(".")[0] != "space_clip_ros"
    }


def declaration(module: str) -> tuple[str, str] | None:
    """("key" | "pip" | "none", name) of the longest dotted prefix of `module` in the tables."""
    parts = module.split(".")
    for length in range(len(parts), 0, -1):
        prefix = ".".join(parts[:length])
        if prefix in MODULE_TO_PIP:
            return "pip", MODULE_TO_PIP[prefix]
        if prefix in MODULE_TO_KEY:
            return "key", MODULE_TO_KEY[prefix]
        if prefix in NOT_DEPENDENCIES:
            return "none", prefix
    return None


def test_every_dependency_is_a_rosdep_key_or_a_released_ros_package():
    if not ROSDEP_KEYS.is_file():
        pytest.skip(f"{ROSDEP_KEYS} is not here")
    data = json.loads(ROSDEP_KEYS.read_text())
    system_keys = data["system_keys"]
    released = {distro: set(data["ros_packages"][distro]) for distro in DISTROS}
    problems = []
    for tag, names in package_dependencies().items():
        for name in names:
            if name in system_keys:
                missing = [platform for platform in PLATFORMS if not system_keys[name].get(platform)]
                if missing:
                    problems.append(f"<{tag}>{name}: rosdep key without a resolution on {', '.join(missing)}")
                continue
            missing = [distro for distro in DISTROS if name not in released[distro]]
            if len(missing) == len(DISTROS):
                problems.append(f"<{tag}>{name}: neither a rosdep key nor a released ROS package")
            elif missing:
                problems.append(f"<{tag}>{name}: not released in {', '.join(missing)}")
    assert not problems, "package.xml dependencies rosdep cannot install:\n" + "\n".join(problems)


def test_package_is_built_as_ament_python():
    root = ET.parse(PACKAGE_XML).getroot()
    assert root.findtext("export/build_type") == "ament_python"


def test_every_third_party_import_is_declared():
    deps = {name for names in package_dependencies().values() for name in names}
    pip = robot_requirements()
    problems = []
    for module, files in sorted(third_party(imported_modules()).items()):
        found = declaration(module)
        where = ", ".join(sorted(files)[:3])
        if found is None:
            problems.append(f"{module} (imported by {where}): not in this test's module tables")
        elif found[0] == "key" and found[1] not in deps:
            problems.append(f"{module} (imported by {where}): {found[1]} missing from package.xml")
        elif found[0] == "pip" and canonicalize_name(found[1]) not in pip:
            problems.append(f"{module} (imported by {where}): {found[1]} missing from requirements/robot.txt")
    assert not problems, "undeclared imports:\n" + "\n".join(problems)


def test_nothing_declared_is_unused():
    imports = third_party(imported_modules())
    used_keys, used_pip = set(), set()
    for module in imports:
        found = declaration(module)
        if found and found[0] == "key":
            used_keys.add(found[1])
        elif found and found[0] == "pip":
            used_pip.add(canonicalize_name(found[1]))
    test_imports = {name.split(".")[0] for name in third_party(imported_modules(("test",)))}
    problems = []
    for tag, names in package_dependencies().items():
        for name in names:
            if tag == "test_depend" and name.removeprefix("python3-") in test_imports:
                continue
            if name not in used_keys and name not in USED_WITHOUT_IMPORT:
                problems.append(f"package.xml <{tag}>{name}: nothing in {', '.join(CODE_DIRS)} imports it")
    for name in robot_requirements():
        if name not in used_pip and name not in USED_WITHOUT_IMPORT:
            problems.append(f"requirements/robot.txt {name}: nothing in {', '.join(CODE_DIRS)} imports it")
    assert not problems, "declared but unused:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", PINNED_REQUIREMENTS, ids=lambda path: path.name)
def test_development_requirements_pin_every_line_exactly(path):
    loose = [line for _, line in requirement_lines(path) if not re.fullmatch(r"[A-Za-z0-9_.\-]+==[^,;\s]+", line)]
    assert not loose, f"{path.name}: not pinned with == : {loose}"


def test_development_pins_satisfy_the_robot_requirements():
    pinned = [Requirement(line) for _, line in requirement_lines(PINNED_REQUIREMENTS[0])]
    dev = {canonicalize_name(requirement.name): requirement for requirement in pinned}
    problems = []
    for name, requirements in robot_requirements().items():
        if name not in dev:
            problems.append(f"{name}: in requirements/robot.txt, not pinned in requirements/dev.txt")
            continue
        version = next(iter(dev[name].specifier)).version
        for requirement in requirements:
            applies = requirement.marker is None or requirement.marker.evaluate()
            if applies and version not in requirement.specifier and name not in DEV_OUTSIDE_ROBOT_RANGE:
                problems.append(f"{name}: dev.txt pins {version}, robot requirements say {requirement}")
    assert not problems, "requirements/dev.txt and requirements/robot.txt disagree:\n" + "\n".join(problems)
