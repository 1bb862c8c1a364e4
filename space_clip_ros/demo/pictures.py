"""Side-by-side pictures: camera image | colour-mapped depth (| exact depth) with a scale in metres.

Colours come from ``msgs.colorize_depth`` (the node's own depth/colored rendering); every panel of
a demo run uses one fixed depth range so colours compare across frames. Black = no depth.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from space_clip_ros.msgs import colorize_depth

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_TITLE_HEIGHT = 24
_LEGEND_WIDTH = 78
_BACKGROUND = (32, 32, 32)
_TEXT = (235, 235, 235)


def nice_depth_range(depths: list[np.ndarray], percentile: float = 98.0) -> tuple[float, float]:
    """(0, a round number just above the ``percentile`` of all valid depths) for the colour scale."""
    values = [d[np.isfinite(d) & (d > 0)] for d in depths]
    values = np.concatenate(values) if values else np.empty(0)
    if values.size == 0:
        return 0.0, 10.0
    top = float(np.percentile(values, percentile))
    # Finer steps than the ticks': a 5.2 m room gets a 0-6 m scale, not 0-10 m with half the colours unused.
    return 0.0, _round_up(max(top, 0.1), steps=(1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0))


def _round_up(value: float, steps: tuple[float, ...] = (1.0, 2.0, 2.5, 5.0, 10.0)) -> float:
    """The smallest of ``steps`` x 10^k that is >= value (``steps`` ascending, from 1 to 10)."""
    exponent = math.floor(math.log10(value))
    for step in steps:
        candidate = step * 10.0**exponent
        if candidate >= value - 1e-9:
            return candidate
    return 10.0 ** (exponent + 1)


def _ticks(min_depth: float, max_depth: float, count: int = 5) -> list[float]:
    step = _round_up((max_depth - min_depth) / count)
    first = math.ceil(min_depth / step) * step
    return [first + i * step for i in range(count + 2) if first + i * step <= max_depth + 1e-9]


def _label(value: float) -> str:
    return f"{value:g} m"


def depth_legend(height: int, min_depth: float, max_depth: float, colormap: str = "turbo") -> np.ndarray:
    """A vertical colour bar (near at the top) with tick labels in metres, (height, 78, 3) BGR."""
    legend = np.full((height, _LEGEND_WIDTH, 3), _BACKGROUND, dtype=np.uint8)
    top, bottom = _TITLE_HEIGHT + 6, height - 8
    bar_height = max(bottom - top, 2)
    column = np.linspace(min_depth, max_depth, bar_height, dtype=np.float32)[:, None]
    # A depth of exactly 0 would be drawn black ("no depth"): start the bar a hair above it.
    column = np.maximum(column, np.float32(min_depth + 1e-6 * (max_depth - min_depth) + 1e-9))
    bar = colorize_depth(np.repeat(column, 16, axis=1), min_depth, max_depth, colormap)
    legend[top : top + bar_height, 8:24] = bar
    cv2.putText(legend, "depth", (6, 17), _FONT, 0.45, _TEXT, 1, cv2.LINE_AA)
    # About one label per 16 pixels of bar, so short pictures do not get overlapping labels.
    for tick in _ticks(min_depth, max_depth, count=max(1, min(5, bar_height // 16))):
        row = top + int(round((tick - min_depth) / (max_depth - min_depth) * (bar_height - 1)))
        cv2.line(legend, (24, row), (29, row), _TEXT, 1)
        cv2.putText(legend, _label(tick), (32, row + 4), _FONT, 0.38, _TEXT, 1, cv2.LINE_AA)
    return legend


def _titled(panel_bgr: np.ndarray, title: str) -> np.ndarray:
    strip = np.full((_TITLE_HEIGHT, panel_bgr.shape[1], 3), _BACKGROUND, dtype=np.uint8)
    cv2.putText(strip, title, (6, 17), _FONT, 0.5, _TEXT, 1, cv2.LINE_AA)
    return np.vstack([strip, panel_bgr])


def side_by_side(
    rgb: np.ndarray,
    depth: np.ndarray,
    min_depth: float,
    max_depth: float,
    *,
    ground_truth: np.ndarray | None = None,
    colormap: str = "turbo",
    caption: str = "",
) -> np.ndarray:
    """camera image | predicted depth [| exact depth] | scale bar, as one BGR picture."""
    height, width = rgb.shape[:2]

    def depth_panel(values: np.ndarray) -> np.ndarray:
        if values.shape != (height, width):
            values = cv2.resize(values, (width, height), interpolation=cv2.INTER_NEAREST)
        return colorize_depth(values, min_depth, max_depth, colormap)

    panels = [
        _titled(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), "camera image"),
        _titled(depth_panel(depth), "SPACE-CLIP depth"),
    ]
    if ground_truth is not None:
        panels.append(_titled(depth_panel(ground_truth.astype(np.float32)), "exact depth (scene)"))
    row = np.hstack(panels + [depth_legend(height + _TITLE_HEIGHT, min_depth, max_depth, colormap)])
    if not caption:
        return row
    strip = np.full((20, row.shape[1], 3), _BACKGROUND, dtype=np.uint8)
    cv2.putText(strip, caption, (6, 14), _FONT, 0.4, _TEXT, 1, cv2.LINE_AA)
    return np.vstack([row, strip])
