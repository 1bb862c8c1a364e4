"""BTS-style split files and the by-scene validation holdout (SPEC sections 4 and 5)."""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

LOGGER = logging.getLogger(__name__)

HOLDOUT_SEED = 20260926
HOLDOUT_FRACTION = 0.1

_KITTI_DRIVE = re.compile(r"^\d{4}_\d{2}_\d{2}_drive_\d{4}_sync$")
# NYU recordings of one room: kitchen_0028a, kitchen_0028b -> kitchen_0028.
_RECORDING_LETTER = re.compile(r"(?<=\d)[a-z]$")


@dataclass(frozen=True)
class SplitEntry:
    """One line of a split file: paths relative to the data / ground-truth roots, focal in pixels."""

    rgb_path: str
    depth_path: str | None
    focal: float


def parse_split_file(path: str | Path) -> list[SplitEntry]:
    """Read a BTS split file (``rgb_path depth_path focal`` per line).

    ``None`` as depth means no ground truth; leading slashes (NYU training lists) are removed so
    the paths join onto a root; blank lines are ignored; a last line without a newline counts.
    Raises ValueError naming ``file:line`` for a malformed line.
    """
    path = Path(path)
    entries = []
    with path.open() as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 3:
                raise ValueError(
                    f"{path}:{number}: expected 'rgb_path depth_path focal', got {line.strip()!r}"
                )
            rgb, depth, focal_text = fields
            try:
                focal = float(focal_text)
            except ValueError:
                raise ValueError(f"{path}:{number}: focal {focal_text!r} is not a number") from None
            entries.append(SplitEntry(rgb.lstrip("/"), None if depth == "None" else depth.lstrip("/"), focal))
    return entries


def scene_group(rgb_path: str) -> str:
    """The scene a frame belongs to, for splitting without leaking a scene across train/val.

    KITTI: the drive folder (``2011_09_26_drive_0002_sync``). Otherwise the first directory of
    the path with a trailing recording letter removed (``kitchen_0028b`` -> ``kitchen_0028``).
    A path without a directory forms the group ``""``.
    """
    parts = [part for part in rgb_path.replace("\\", "/").split("/") if part]
    for part in parts[:-1]:
        if _KITTI_DRIVE.match(part):
            return part
    if len(parts) < 2:
        return ""
    return _RECORDING_LETTER.sub("", parts[0])


def holdout_validation(
    entries: Sequence[SplitEntry], fraction: float = HOLDOUT_FRACTION, seed: int = HOLDOUT_SEED
) -> tuple[list[SplitEntry], list[SplitEntry]]:
    """Split ``entries`` into (train, validation) by scene group; deterministic in ``seed``.

    Rule (reproduces the authors' NYU split: 21,974 / 2,257 images in 224 / 25 groups):
    the sorted unique groups are shuffled with ``random.Random(seed).shuffle`` and the first
    ``round(fraction * n_groups)`` (at least one, and at least one group left for training when
    there are two or more) are held out. Entry order is kept within both outputs.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    groups = sorted({scene_group(entry.rgb_path) for entry in entries})
    order = list(groups)
    random.Random(seed).shuffle(order)
    n_val = round(fraction * len(groups))
    if fraction > 0 and len(groups) >= 2:
        n_val = min(max(n_val, 1), len(groups) - 1)
    held_out = set(order[:n_val])
    train = [entry for entry in entries if scene_group(entry.rgb_path) not in held_out]
    val = [entry for entry in entries if scene_group(entry.rgb_path) in held_out]
    LOGGER.info(
        "validation holdout: %d train / %d val images in %d / %d scene groups (seed %d)",
        len(train),
        len(val),
        len(groups) - n_val,
        n_val,
        seed,
    )
    return train, val
