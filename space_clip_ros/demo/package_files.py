"""Find the package's data files the way a user's installation has them.

An ament/colcon install has them under ``share/space_clip_ros/`` (found through the ament index);
a pip install puts ``data_files`` under ``<prefix>/share/space_clip_ros/``; an editable install or
a plain checkout has them in the source tree. The first that holds the file wins.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PACKAGE = "space_clip_ros"
SOURCE_ROOT = Path(__file__).resolve().parents[2]

DEPTH_PARAMS = "config/depth.yaml"
DEPTH_LAUNCH = "launch/depth.launch.py"
SYNTHETIC_TRAIN_CONFIG = "config/train/synthetic.yaml"


def _candidate_roots() -> list[Path]:
    roots = []
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:  # no ament index on this machine
        get_package_share_directory = None
    if get_package_share_directory is not None:
        # OSError: AMENT_PREFIX_PATH not set (no ROS workspace sourced).
        with contextlib.suppress(PackageNotFoundError, ValueError, OSError):
            roots.append(Path(get_package_share_directory(PACKAGE)))
    roots += [Path(sys.prefix) / "share" / PACKAGE, SOURCE_ROOT]
    return roots


def package_file(relative: str) -> Path:
    """The path of ``relative`` (e.g. ``config/depth.yaml``); FileNotFoundError naming where it looked."""
    roots = _candidate_roots()
    for root in roots:
        if (root / relative).is_file():
            return root / relative
    raise FileNotFoundError(f"{relative} not found in {', '.join(str(r) for r in roots)}")


def load_launch_module(path: Path | None = None) -> ModuleType:
    """The depth launch file (default: the installed one, :func:`package_file`) as a module; it
    imports launch only inside its functions."""
    path = package_file(DEPTH_LAUNCH) if path is None else path
    spec = importlib.util.spec_from_file_location("space_clip_depth_launch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
