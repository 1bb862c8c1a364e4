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


# ---- depth a costmap can trust: confidence, flying pixels, REP 117, the ground plane -------------------
_FLYING_BGR = (60, 20, 230)  # red: points the flying-pixel filter removes
_PLUS_INF_BGR = (255, 255, 255)  # white: +Inf, beyond max_depth (free space up to there)
_MINUS_INF_BGR = (200, 60, 200)  # magenta: -Inf, nearer than min_depth


def value_panel(values: np.ndarray, low: float, high: float, colormap: str = "viridis") -> np.ndarray:
    """``values`` (H, W) colour-mapped from ``low`` (dark) to ``high`` (bright); non-finite pixels black."""
    scaled = np.clip((np.nan_to_num(values, nan=low) - low) / (high - low), 0.0, 1.0)
    code = getattr(cv2, f"COLORMAP_{colormap.upper()}")
    bgr = cv2.applyColorMap((scaled * 255.0).astype(np.uint8), code)
    bgr[~np.isfinite(values)] = 0
    return bgr


def value_legend(height: int, low: float, high: float, title: str, colormap: str = "viridis",
                 ticks: tuple[float, ...] = (), fmt: str = "{:g}") -> np.ndarray:
    """A vertical colour bar (``high`` at the top) with ``ticks`` labelled by ``fmt``, (height, 78, 3) BGR."""
    legend = np.full((height, _LEGEND_WIDTH, 3), _BACKGROUND, dtype=np.uint8)
    top, bottom = _TITLE_HEIGHT + 6, height - 8
    bar_height = max(bottom - top, 2)
    column = np.linspace(high, low, bar_height, dtype=np.float32)[:, None]
    legend[top : top + bar_height, 8:24] = value_panel(np.repeat(column, 16, axis=1), low, high, colormap)
    cv2.putText(legend, title, (6, 17), _FONT, 0.45, _TEXT, 1, cv2.LINE_AA)
    for tick in ticks or (low, (low + high) / 2, high):
        row = top + int(round((high - tick) / (high - low) * (bar_height - 1)))
        cv2.line(legend, (24, row), (29, row), _TEXT, 1)
        cv2.putText(legend, fmt.format(tick), (32, row + 4), _FONT, 0.38, _TEXT, 1, cv2.LINE_AA)
    return legend


def _with_caption(row: np.ndarray, caption: str) -> np.ndarray:
    if not caption:
        return row
    strip = np.full((20, row.shape[1], 3), _BACKGROUND, dtype=np.uint8)
    cv2.putText(strip, caption, (6, 14), _FONT, 0.4, _TEXT, 1, cv2.LINE_AA)
    return np.vstack([row, strip])


def _upscaled(image: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return image
    return cv2.resize(image, (image.shape[1] * factor, image.shape[0] * factor), interpolation=cv2.INTER_NEAREST)


def confidence_picture(
    rgb: np.ndarray,
    depth: np.ndarray,
    confidence: np.ndarray,
    min_depth: float,
    max_depth: float,
    *,
    ground_truth: np.ndarray | None = None,
    caption: str = "",
    upscale: int = 1,
) -> np.ndarray:
    """camera | depth | confidence (| AbsRel against the exact depth) with their scales, one BGR
    picture: where the confidence is low the error should be high."""
    panels = [
        _titled(_upscaled(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), upscale), "camera image"),
        _titled(_upscaled(colorize_depth(depth, min_depth, max_depth), upscale), "depth"),
        _titled(_upscaled(value_panel(confidence, 0.0, 1.0, "viridis"), upscale), "depth/confidence"),
    ]
    height = panels[0].shape[0]
    legends = [depth_legend(height, min_depth, max_depth),
               value_legend(height, 0.0, 1.0, "conf.", "viridis", (0.0, 0.25, 0.5, 0.75, 1.0))]
    if ground_truth is not None:
        truth = ground_truth.astype(np.float32)
        error = np.where(truth > 0, np.abs(depth - truth) / np.where(truth > 0, truth, 1.0), np.nan)
        panels.append(_titled(_upscaled(value_panel(error, 0.0, 0.5, "inferno"), upscale), "|d - d*| / d* (exact)"))
        legends.append(value_legend(height, 0.0, 0.5, "AbsRel", "inferno", (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)))
    return _with_caption(np.hstack(panels + legends), caption)


def cloud_view(
    points: np.ndarray,
    colours: np.ndarray,
    size: tuple[int, int],
    focal: float,
    *,
    pivot_depth: float,
    yaw_deg: float = 40.0,
    pitch_deg: float = 25.0,
) -> np.ndarray:
    """(N, 3) optical-frame points drawn from a virtual camera that circles the scene: turned by
    ``yaw_deg`` about the point ``pivot_depth`` ahead and raised by ``pitch_deg``, so depth ramps
    (flying pixels) show as sheets between surfaces. ``colours`` (N, 3) BGR; far points first."""
    width, height = size
    yaw, pitch = np.radians(yaw_deg), np.radians(pitch_deg)
    rot_yaw = np.array([[np.cos(yaw), 0.0, -np.sin(yaw)], [0.0, 1.0, 0.0], [np.sin(yaw), 0.0, np.cos(yaw)]])
    rot_pitch = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(pitch), np.sin(pitch)], [0.0, -np.sin(pitch), np.cos(pitch)]])
    pivot = np.array([0.0, 0.0, pivot_depth])
    moved = (points - pivot) @ (rot_pitch @ rot_yaw).T + np.array([0.0, 0.0, 1.6 * pivot_depth])
    picture = np.full((height, width, 3), 16, dtype=np.uint8)
    ahead = moved[:, 2] > 0.05
    moved, colours = moved[ahead], colours[ahead]
    u = np.rint(focal * moved[:, 0] / moved[:, 2] + width / 2).astype(np.int64)
    v = np.rint(focal * moved[:, 1] / moved[:, 2] + height / 2).astype(np.int64)
    inside = (u >= 0) & (u < width - 1) & (v >= 0) & (v < height - 1)
    order = np.argsort(-moved[inside, 2])  # painter's algorithm: far first
    u, v, colours = u[inside][order], v[inside][order], colours[inside][order]
    for du, dv in ((0, 0), (1, 0), (0, 1), (1, 1)):  # 2x2 splats
        picture[v + dv, u + du] = colours
    return picture


def flying_pixels_picture(
    rgb: np.ndarray,
    depth: np.ndarray,
    intrinsics,
    flying_pixel_threshold: float,
    min_depth: float,
    max_depth: float,
    *,
    caption: str = "",
    view_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """camera | the cloud from the side, flying points red | the same cloud with the filter on.

    ``depth`` is the prediction before range masking (as the filter sees it), ``intrinsics`` its
    camera (a ``CameraIntrinsics`` of its size).
    """
    from space_clip_ros.msgs.pointcloud import backproject_depth
    from space_clip_ros.outputs.flying_pixels import flying_pixel_mask

    depth = np.asarray(depth, dtype=np.float32)
    flying = flying_pixel_mask(depth, flying_pixel_threshold)
    in_range = np.isfinite(depth) & (depth >= min_depth) & (depth <= max_depth)
    points = backproject_depth(np.where(in_range, depth, np.float32(np.nan)), intrinsics).reshape(-1, 3)
    colours = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).reshape(-1, 3)
    if colours.shape[0] != points.shape[0]:
        colours = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), (depth.shape[1], depth.shape[0])).reshape(-1, 3)
    valid = np.isfinite(points).all(axis=1)
    marked = colours.copy()
    marked[flying.reshape(-1)] = _FLYING_BGR
    width, height = view_size or (2 * depth.shape[1], 2 * depth.shape[0])
    pivot = float(np.nanmedian(depth[in_range])) if in_range.any() else 1.0
    focal = 0.8 * width
    before = cloud_view(points[valid], marked[valid], (width, height), focal, pivot_depth=pivot)
    kept = valid & ~flying.reshape(-1)
    after = cloud_view(points[kept], colours[kept], (width, height), focal, pivot_depth=pivot)
    camera = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), (width, height), interpolation=cv2.INTER_NEAREST)
    count = int(np.count_nonzero(flying & in_range))
    row = np.hstack([
        _titled(camera, "camera image"),
        _titled(before, f"cloud, {count} flying points (red)"),
        _titled(after, f"flying_pixel_threshold {flying_pixel_threshold:g}"),
    ])
    return _with_caption(row, caption)


def rep117_picture(
    rgb: np.ndarray, depth: np.ndarray, min_depth: float, max_depth: float, *, caption: str = "", upscale: int = 1
) -> np.ndarray:
    """camera | the depth image as ``out_of_range: nan`` gives it | as ``rep117`` gives it (+Inf white,
    -Inf magenta, NaN black)."""
    from space_clip_ros.outputs.ranges import apply_out_of_range

    nan_mode = apply_out_of_range(depth, min_depth, max_depth, "nan")
    rep117 = apply_out_of_range(depth, min_depth, max_depth, "rep117")
    coloured = colorize_depth(nan_mode, min_depth, max_depth)
    marked = coloured.copy()
    marked[np.isposinf(rep117)] = _PLUS_INF_BGR
    marked[np.isneginf(rep117)] = _MINUS_INF_BGR
    height = rgb.shape[0] * upscale + _TITLE_HEIGHT
    legend = np.full((height, 150, 3), _BACKGROUND, dtype=np.uint8)
    for row, (colour, text) in enumerate(((_PLUS_INF_BGR, "+Inf: beyond max"), (_MINUS_INF_BGR, "-Inf: under min"),
                                          ((0, 0, 0), "NaN: no estimate"))):
        y = _TITLE_HEIGHT + 10 + 22 * row
        cv2.rectangle(legend, (6, y), (20, y + 12), colour, -1)
        cv2.rectangle(legend, (6, y), (20, y + 12), _TEXT, 1)
        cv2.putText(legend, text, (26, y + 11), _FONT, 0.4, _TEXT, 1, cv2.LINE_AA)
    row = np.hstack([
        _titled(_upscaled(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), upscale), "camera image"),
        _titled(_upscaled(coloured, upscale), "out_of_range: nan"),
        _titled(_upscaled(marked, upscale), "out_of_range: rep117"),
        depth_legend(height, min_depth, max_depth),
        legend,
    ])
    return _with_caption(row, caption)


def ground_plane_picture(
    rgb: np.ndarray, depth: np.ndarray, intrinsics, plane, *, caption: str = "", upscale: int = 1
) -> np.ndarray:
    """camera image with the fitted floor's inliers tinted green and the fit written on it
    (``plane``: a ``GroundPlaneScale`` of ``depth``, or None)."""
    from space_clip_ros.msgs.pointcloud import backproject_depth

    picture = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).copy()
    if plane is not None:
        points = backproject_depth(np.asarray(depth, dtype=np.float32), intrinsics)
        with np.errstate(invalid="ignore"):
            distance = np.abs(points @ plane.normal + plane.distance)
            on_plane = distance <= 0.03 * plane.distance
        on_plane[: int(intrinsics.height * 0.5)] = False  # the searched region: the lower half
        tint = picture.copy()
        tint[on_plane] = (60, 200, 60)
        picture = cv2.addWeighted(picture, 0.45, tint, 0.55, 0.0)
    picture = _upscaled(picture, upscale)
    cv2.line(picture, (0, picture.shape[0] // 2), (picture.shape[1], picture.shape[0] // 2), (200, 200, 200), 1)
    text = ("no credible plane: previous scale kept" if plane is None else
            f"scale {plane.scale:.3f}, inliers {100 * plane.inlier_share:.0f} %, tilt {plane.tilt_deg:.1f} deg")
    return _with_caption(_titled(picture, "scale_anchor: ground_plane (floor inliers green)"), text + caption)
