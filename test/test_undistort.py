"""Lens undistortion against a synthetic scene seen through cameras with known distortion.

The scene is the inside of a box room (five planes) whose colour encodes position: red, green and
blue are linear in X, Y and Z, so the colour of a pixel says which 3D point it shows. Images are
rendered by ray casting with the distortion models written out here in numpy (and inverted by
Newton's method), never with OpenCV, so the package's OpenCV maps are checked against an
independent model. Run this file as a script to print the cost of ``undistort`` at 640x480.
"""

from __future__ import annotations

import logging
import sys
import time

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, RegionOfInterest
from std_msgs.msg import Header

from space_clip_ros.msgs import CameraInfoError, CameraIntrinsics
from space_clip_ros.msgs.undistort import (
    SUPPORTED_DISTORTION_MODELS,
    Undistorter,
    UndistorterCache,
    needs_undistortion,
)

logger = logging.getLogger(__name__)

WIDTH, HEIGHT = 320, 240
K = np.array([[260.0, 0.0, 158.3], [0.0, 262.0, 121.6], [0.0, 0.0, 1.0]])
# Box room around the camera: (outward normal n, offset d) of each plane n . X = d.
PLANES = [
    ((0.0, 0.0, 1.0), 6.0),  # back wall, z = 6
    ((0.0, 1.0, 0.0), 1.5),  # floor, y = 1.5 (optical frame: y down)
    ((0.0, -1.0, 0.0), 2.0),  # ceiling, y = -2
    ((-1.0, 0.0, 0.0), 3.0),  # left wall, x = -3
    ((1.0, 0.0, 0.0), 3.0),  # right wall, x = 3
]
LOW = np.array([-3.0, -2.0, 0.0])  # colour 0 of red, green, blue
SPAN = np.array([6.0, 3.5, 6.0])  # colour 255
DISTORTIONS = {
    "plumb_bob": [-0.25, 0.08, 0.0012, -0.0009, -0.01],  # barrel, with a little decentring
    "rational_polynomial": [0.4, -0.1, 0.001, 0.0005, 0.02, 0.75, -0.05, 0.03],
    "equidistant": [-0.03, 0.01, -0.004, 0.001],  # fisheye
}


def distort(model: str, d: list[float], x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised undistorted -> distorted coordinates, as the ROS/OpenCV models define them."""
    if model == "equidistant":
        r = np.hypot(x, y)
        theta = np.arctan(r)
        theta_d = theta * (1 + d[0] * theta**2 + d[1] * theta**4 + d[2] * theta**6 + d[3] * theta**8)
        scale = np.where(r > 1e-12, theta_d / np.maximum(r, 1e-12), 1.0)
        return x * scale, y * scale
    k1, k2, p1, p2, k3 = d[:5]
    k4, k5, k6 = d[5:8] if len(d) >= 8 else (0.0, 0.0, 0.0)
    r2 = x * x + y * y
    radial = (1 + k1 * r2 + k2 * r2**2 + k3 * r2**3) / (1 + k4 * r2 + k5 * r2**2 + k6 * r2**3)
    return (
        x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
        y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y,
    )


def undistort_points(model: str, d: list[float], xd: np.ndarray, yd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Invert :func:`distort` by Newton's method (numerical Jacobian), checking the residual."""
    x, y = xd.copy(), yd.copy()
    step = 1e-7
    for _ in range(30):
        fx, fy = distort(model, d, x, y)
        ex, ey = fx - xd, fy - yd
        ax, ay = distort(model, d, x + step, y)
        bx, by = distort(model, d, x, y + step)
        j11, j21 = (ax - fx) / step, (ay - fy) / step
        j12, j22 = (bx - fx) / step, (by - fy) / step
        det = j11 * j22 - j12 * j21
        x = x - (j22 * ex - j12 * ey) / det
        y = y - (-j21 * ex + j11 * ey) / det
    fx, fy = distort(model, d, x, y)
    assert max(np.abs(fx - xd).max(), np.abs(fy - yd).max()) < 1e-10, "Newton did not converge"
    return x, y


def hit_points(rays: np.ndarray) -> np.ndarray:
    """The first point of the room each ray (..., 3) from the origin hits."""
    t = np.full(rays.shape[:-1], np.inf)
    for normal, offset in PLANES:
        along = rays @ np.asarray(normal)
        with np.errstate(divide="ignore"):
            t = np.minimum(t, np.where(along > 1e-12, offset / along, np.inf))
    return rays * t[..., None]


def colour_of(points: np.ndarray) -> np.ndarray:
    return np.rint(np.clip((points - LOW) / SPAN, 0, 1) * 255).astype(np.uint8)


def position_of(rgb: np.ndarray) -> np.ndarray:
    """The 3D point a pixel shows, read back from its colour (to within 1/510 of the span)."""
    return rgb.astype(np.float64) / 255 * SPAN + LOW


def pixel_grid() -> tuple[np.ndarray, np.ndarray]:
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    return u, v


def render_pinhole(matrix: np.ndarray, rotation: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """RGB and depth (Z in the camera's own frame) of an ideal pinhole camera ``matrix``.

    ``rotation`` (R of CameraInfo) turns the raw camera frame into this camera's frame.
    """
    u, v = pixel_grid()
    rays = np.stack([(u - matrix[0, 2]) / matrix[0, 0], (v - matrix[1, 2]) / matrix[1, 1], np.ones_like(u)], -1)
    rotation = np.eye(3) if rotation is None else rotation
    points = hit_points(rays @ rotation)  # rays in the raw camera frame: R^T r, row-vector form
    return colour_of(points), (points @ rotation.T)[..., 2]


def render_distorted(model: str, d: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """RGB and depth (Z of the point each pixel shows) of the camera K with distortion D."""
    u, v = pixel_grid()
    x, y = undistort_points(model, d, (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1])
    points = hit_points(np.stack([x, y, np.ones_like(x)], -1))
    return colour_of(points), points[..., 2]


def inside_source(
    model: str, d: list[float], matrix: np.ndarray, margin: float = 1.5, rotation: np.ndarray | None = None
) -> np.ndarray:
    """Pixels of the undistorted image whose source point lies ``margin`` px inside the raw image."""
    u, v = pixel_grid()
    rays = np.stack([(u - matrix[0, 2]) / matrix[0, 0], (v - matrix[1, 2]) / matrix[1, 1], np.ones_like(u)], -1)
    rays = rays @ (np.eye(3) if rotation is None else rotation)
    xd, yd = distort(model, d, rays[..., 0] / rays[..., 2], rays[..., 1] / rays[..., 2])
    su, sv = K[0, 0] * xd + K[0, 2], K[1, 1] * yd + K[1, 2]
    return (su >= margin) & (su <= WIDTH - 1 - margin) & (sv >= margin) & (sv <= HEIGHT - 1 - margin)


def camera_info(model: str, d: list[float], p: np.ndarray | None = None, r: np.ndarray | None = None) -> CameraInfo:
    full_p = np.zeros((3, 4))
    full_p[:, :3] = K if p is None else p
    return CameraInfo(
        header=Header(stamp=Time(sec=42, nanosec=7), frame_id="camera_optical_frame"),
        width=WIDTH,
        height=HEIGHT,
        distortion_model=model,
        d=list(d),
        k=K.reshape(-1),
        r=(np.eye(3) if r is None else r).reshape(-1),
        p=full_p.reshape(-1),
    )


def back_project(depth: np.ndarray, info: CameraInfo) -> np.ndarray:
    """(H, W, 3) points Z * K^-1 (u, v, 1) with the intrinsics the node reads from ``info``."""
    camera = CameraIntrinsics.from_camera_info(info)
    u, v = pixel_grid()
    return np.stack([(u - camera.cx) / camera.fx * depth, (v - camera.cy) / camera.fy * depth, depth], axis=-1)


def absolute_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int64) - b.astype(np.int64))


@pytest.fixture(scope="module")
def distorted_views() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {model: render_distorted(model, d) for model, d in DISTORTIONS.items()}


@pytest.mark.parametrize("model", list(DISTORTIONS))
def test_undistorted_image_is_the_ideal_pinhole_image(model, distorted_views):
    d = DISTORTIONS[model]
    distorted, _ = distorted_views[model]
    ideal, _ = render_pinhole(K)
    undistorter = Undistorter(camera_info(model, d))
    out = undistorter.undistort(distorted)
    assert out.shape == distorted.shape and out.dtype == np.uint8
    interior = inside_source(model, d, K)
    assert interior.mean() > 0.8
    error = absolute_error(out, ideal)[interior]
    # Bilinear interpolation of a (piecewise) linear picture, 1/32-pixel fixed-point maps, 8 bits
    # (measured: mean 0.12, max 1-2 levels).
    assert error.mean() < 0.3 and error.max() <= 3
    # Without undistortion the same pixels are far off: the test does measure the distortion.
    assert absolute_error(distorted, ideal)[interior].max() > 20
    # The package's mask of interpolated-from-inside pixels agrees with the geometry.
    assert undistorter.valid_mask[interior].all()
    assert not undistorter.valid_mask[~inside_source(model, d, K, margin=-1.0)].any()


def test_projection_mode_renders_ps_camera_and_honours_r(distorted_views):
    model, d = "plumb_bob", DISTORTIONS["plumb_bob"]
    p = np.array([[230.0, 0.0, 161.0], [0.0, 230.0, 118.0], [0.0, 0.0, 1.0]])
    angle = np.radians(2.0)  # a small rectifying rotation about y, as a stereo pair has
    r = np.array([[np.cos(angle), 0.0, np.sin(angle)], [0.0, 1.0, 0.0], [-np.sin(angle), 0.0, np.cos(angle)]])
    info = camera_info(model, d, p=p, r=r)
    undistorter = Undistorter(info, use_projection=True)
    assert undistorter.uses_projection
    np.testing.assert_allclose(undistorter.new_camera_matrix, p)
    ideal, _ = render_pinhole(p, rotation=r)
    out = undistorter.undistort(distorted_views[model][0])
    interior = inside_source(model, d, p, rotation=r)
    assert 0.85 < interior.mean() < 0.95  # P's focal is shorter than K's: a border nothing was seen in
    error = absolute_error(out, ideal)[interior]
    assert error.mean() < 0.3 and error.max() <= 3
    assert undistorter.valid_mask[interior].all()
    outside = ~inside_source(model, d, p, margin=-1.0, rotation=r)
    assert outside.any() and not undistorter.valid_mask[outside].any() and not out[outside].any()
    rectified = undistorter.rectified_camera_info(info)
    np.testing.assert_allclose(np.reshape(rectified.k, (3, 3)), p)
    np.testing.assert_allclose(np.reshape(rectified.p, (3, 4))[:, :3], p)
    # P all zero (a driver that fills only K): back to the default camera, K.
    fallback = Undistorter(camera_info(model, d, p=np.zeros((3, 3))), use_projection=True)
    assert not fallback.uses_projection
    np.testing.assert_allclose(fallback.new_camera_matrix, K)


@pytest.mark.parametrize("model", ["plumb_bob", "equidistant"])
def test_back_projection_lands_on_the_scene_only_after_undistortion(model, distorted_views):
    d = DISTORTIONS[model]
    info = camera_info(model, d)
    distorted, distorted_depth = distorted_views[model]
    undistorter = Undistorter(info)
    rectified = undistorter.rectified_camera_info(info)

    # Undistorted image + the depth an exact model would give for it + the rectified CameraInfo.
    _, ideal_depth = render_pinhole(K)
    points = back_project(ideal_depth, rectified)
    seen = position_of(undistorter.undistort(distorted))
    valid = undistorter.valid_mask & inside_source(model, d, K)
    relative = np.linalg.norm(points - seen, axis=-1) / np.linalg.norm(seen, axis=-1)
    assert relative[valid].max() < 0.015  # colour quantisation (~1 cm) and interpolation

    # Today's behaviour: the distorted image, exact depth of what each pixel shows, K without D.
    raw_points = back_project(distorted_depth, info)
    raw_relative = np.linalg.norm(raw_points - position_of(distorted), axis=-1) / np.linalg.norm(
        position_of(distorted), axis=-1
    )
    u, v = pixel_grid()
    edge = np.hypot((u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]) > 0.55  # outer part of the image
    logger.info(
        "%s: with undistortion max %.2f %%; without: edge median %.1f %%, max %.1f %%",
        model, 100 * relative[valid].max(), 100 * np.median(raw_relative[edge]), 100 * raw_relative.max(),
    )
    # Measured here: edge median 5.5 % (plumb_bob) and 8.0 % (equidistant), worst 11 % and 16 %,
    # against at most 0.7 % after undistortion.
    assert np.median(raw_relative[edge]) > 0.04
    assert raw_relative.max() > 0.09


def test_rectified_camera_info_is_a_distortion_free_camera_of_the_same_size():
    info = camera_info("plumb_bob", DISTORTIONS["plumb_bob"])
    rectified = Undistorter(info).rectified_camera_info(info)
    assert (rectified.width, rectified.height) == (WIDTH, HEIGHT)
    assert rectified.distortion_model == "plumb_bob" and list(rectified.d) == [0.0] * 5
    assert not needs_undistortion(rectified)
    np.testing.assert_array_equal(np.reshape(rectified.k, (3, 3)), K)
    np.testing.assert_array_equal(np.reshape(rectified.r, (3, 3)), np.eye(3))
    expected_p = np.zeros((3, 4))
    expected_p[:, :3] = K
    np.testing.assert_array_equal(np.reshape(rectified.p, (3, 4)), expected_p)
    assert rectified.header.stamp.sec == 42 and rectified.header.frame_id == "camera_optical_frame"


def test_binning_and_roi_undistort_the_delivered_image(distorted_views):
    model, d = "plumb_bob", DISTORTIONS["plumb_bob"]
    distorted = distorted_views[model][0]
    info = camera_info(model, d)
    full = Undistorter(info).undistort(distorted)
    # The driver delivers the ROI x 40..279, y 30..209 of the same sensor.
    info.roi = RegionOfInterest(x_offset=40, y_offset=30, width=240, height=180)
    crop = Undistorter(info)
    assert (crop.width, crop.height) == (240, 180)
    out = crop.undistort(distorted[30:210, 40:280])
    expected = full[30:210, 40:280]
    valid = crop.valid_mask
    assert absolute_error(out, expected)[valid].max() <= 1
    rectified = crop.rectified_camera_info(info)
    np.testing.assert_allclose(np.reshape(rectified.k, (3, 3))[:2, 2], K[:2, 2] - [40, 30])
    assert rectified.roi.width == 0 and (rectified.width, rectified.height) == (240, 180)
    # 2x2 binning of the full frame: a 160x120 image whose K is halved, D unchanged.
    info.roi = RegionOfInterest()
    info.binning_x = info.binning_y = 2
    binned = Undistorter(info)
    assert (binned.width, binned.height) == (160, 120)
    np.testing.assert_allclose(binned.new_camera_matrix, np.diag([0.5, 0.5, 1.0]) @ K)
    half = binned.undistort(distorted[::2, ::2])
    assert half.shape == (120, 160, 3)
    # Against the full-resolution result subsampled: off by the half-pixel phase of the binning.
    assert absolute_error(half, full[::2, ::2])[binned.valid_mask].mean() < 3.0


def test_needs_undistortion_only_for_a_non_zero_d():
    assert not needs_undistortion(camera_info("plumb_bob", [0.0] * 5))
    assert not needs_undistortion(camera_info("", []))
    assert not needs_undistortion(camera_info("equidistant", [0.0] * 4))
    assert needs_undistortion(camera_info("plumb_bob", [0.0, 0.0, 0.0, 1e-6, 0.0]))


def test_cache_builds_maps_once_per_calibration_and_skips_rectified_cameras():
    cache = UndistorterCache(max_entries=2)
    info = camera_info("plumb_bob", DISTORTIONS["plumb_bob"])
    assert cache.get(camera_info("plumb_bob", [0.0] * 5)) is None and len(cache) == 0
    first = cache.get(info)
    info.header.stamp.sec += 1  # a later frame of the same camera
    assert cache.get(info) is first and len(cache) == 1
    other = cache.get(camera_info("equidistant", DISTORTIONS["equidistant"]))
    third = cache.get(camera_info("plumb_bob", [-0.1, 0.0, 0.0, 0.0, 0.0]))
    assert len(cache) == 2 and other is not first and third is not first
    assert cache.get(info) is not first  # evicted, least recently used


@pytest.mark.parametrize(
    "model, d, message",
    [
        ("fisheye", [0.1, 0.0, 0.0, 0.0], "distortion model 'fisheye' is not supported; supported: plumb_bob, "
         "rational_polynomial, equidistant"),
        ("equidistant", [0.1] * 5, "takes at most 4 coefficients; D has 5"),
        ("plumb_bob", [0.1] * 15, "takes at most 14 coefficients; D has 15"),
        ("plumb_bob", [float("nan"), 0.0, 0.0, 0.0, 0.0], "not all finite"),
    ],
)
def test_unusable_calibrations_raise_errors_naming_the_problem(model, d, message):
    with pytest.raises(CameraInfoError, match=message.replace("(", r"\(")):
        Undistorter(camera_info(model, d))


def test_short_d_is_padded_and_bad_k_or_size_is_refused():
    # Two coefficients (k1, k2) mean the same camera as five with zeros after them.
    short = Undistorter(camera_info("plumb_bob", [-0.2, 0.05]))
    five = Undistorter(camera_info("plumb_bob", [-0.2, 0.05, 0.0, 0.0, 0.0]))
    picture = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    np.testing.assert_array_equal(short.undistort(picture), five.undistort(picture))
    with pytest.raises(CameraInfoError, match="image has shape"):
        five.undistort(picture[:100])
    info = camera_info("plumb_bob", [-0.2, 0.05])
    info.k = np.zeros(9)
    with pytest.raises(CameraInfoError, match="not a camera matrix"):
        Undistorter(info)
    assert set(SUPPORTED_DISTORTION_MODELS) == set(DISTORTIONS)


def measure_undistort_cost(width: int = 640, height: int = 480, repeats: int = 200) -> dict[str, float]:
    """Milliseconds per ``undistort`` of a width x height RGB image (maps cached), and per map build."""
    import cv2

    scale = width / WIDTH
    info = camera_info("plumb_bob", DISTORTIONS["plumb_bob"])
    info.width, info.height = width, height
    info.k = (np.diag([scale, scale, 1.0]) @ K).reshape(-1)
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    started = time.perf_counter()
    undistorter = Undistorter(info)
    build_ms = (time.perf_counter() - started) * 1e3
    k = np.reshape(info.k, (3, 3))
    float_maps = cv2.initUndistortRectifyMap(k, np.asarray(info.d), np.eye(3), k, (width, height), cv2.CV_32FC1)

    def per_call(function) -> float:
        for _ in range(10):
            function()
        started = time.perf_counter()
        for _ in range(repeats):
            function()
        return (time.perf_counter() - started) / repeats * 1e3

    return {
        "undistort_ms": per_call(lambda: undistorter.undistort(image)),
        "float_maps_remap_ms": per_call(lambda: cv2.remap(image, *float_maps, cv2.INTER_LINEAR)),
        "build_maps_ms": build_ms,
        "opencv_threads": float(cv2.getNumThreads()),
    }


if __name__ == "__main__":
    # python test/test_undistort.py: the cost figures, written to stdout.
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    for name, value in measure_undistort_cost().items():
        logger.info("%s: %.3f", name, value)
