"""The package's floors import one way (docs/architecture.md), and its one-definition rules hold.

Read with ast, not by importing: every ``import`` and ``from ... import`` of a file counts, also
those inside functions and under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "space_clip_ros"
FLOORS = ("model", "data", "inference", "training", "msgs", "outputs", "bags", "ros", "cli", "demo")

#: What each floor must not import (package-relative names). Leaf modules (fileio, devices) serve all.
FORBIDDEN: dict[str, set[str]] = {
    "model": set(FLOORS) - {"model"},
    "data": {"inference", "training", "msgs", "outputs", "bags", "ros", "cli", "demo"},
    "inference": {"training", "msgs", "outputs", "bags", "ros", "cli", "demo"},
    "training": {"inference", "outputs", "bags", "ros", "cli", "demo"},
    "msgs": {"model", "inference", "training", "outputs", "bags", "ros", "cli", "demo"},
    "outputs": {"training", "bags", "ros", "cli", "demo"},
    "bags": {"training", "ros", "cli", "demo"},
    "ros": {"training", "bags", "cli", "demo"},
    "cli": {"ros"},
    "demo": {"cli"},
}


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules a file imports (relative imports resolved)."""
    package = ".".join(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)  # `from .. import ros`
    return names


def floor_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "space_clip_ros" and parts[1] in FLOORS else None


@pytest.mark.parametrize("floor", FLOORS)
def test_each_floor_imports_only_what_is_below_it(floor):
    violations = []
    for path in sorted((PACKAGE_ROOT / floor).rglob("*.py")):
        for module in imported_modules(path):
            if floor_of(module) in FORBIDDEN[floor]:
                violations.append(f"{path.relative_to(PACKAGE_ROOT.parent)} imports {module}")
    assert not violations, f"{floor}/ may not import {sorted(FORBIDDEN[floor])}:\n" + "\n".join(violations)


def test_the_import_reader_sees_relative_and_lazy_imports():
    module = PACKAGE_ROOT / "cli" / "bag.py"
    names = imported_modules(module)
    assert "space_clip_ros.cli.common" in names  # from .common import ...
    assert "space_clip_ros.bags.bag_depth" in names  # imported inside main()


def test_the_tiny_model_is_defined_once():
    """config/train/synthetic.yaml cannot import Python: it states the tiny model, and must state
    data/tiny_model's (plus its own encoder input size)."""
    from space_clip_ros.data.tiny_model import TINY_DECODER, TINY_VISION_OVERRIDES

    config = yaml.safe_load((PACKAGE_ROOT.parent / "config" / "train" / "synthetic.yaml").read_text())["model"]
    overrides = dict(config["backbone"]["vision_overrides"])
    overrides.pop("image_size")
    assert overrides == TINY_VISION_OVERRIDES
    assert config["decoder"] == TINY_DECODER
