"""Lens distortion removal: the image the model sees becomes a pinhole image, CameraInfo follows.

The depth model and every step after it (focal rescaling, back-projection to a point cloud) assume
a pinhole camera. A camera whose CameraInfo has a non-zero D (``plumb_bob``,
``rational_polynomial`` or ``equidistant``) bends straight lines, and back-projecting its pixels
with K alone puts points in the wrong place, more so towards the edges. :class:`Undistorter`
resamples such an image into a distortion-free one and gives the CameraInfo that describes it.

Choice of the undistorted camera (the "new camera matrix"):

* Default: K itself, with R ignored. The undistorted image has the same size, focal length and
  principal point as the raw one and stays in the camera's optical frame, so the focal-length
  rescaling and the published depth/points frame are exactly as for a distortion-free camera.
  Pixels whose source falls outside the raw image (pincushion lenses, fisheye corners) are black
  (:attr:`Undistorter.valid_mask` says where).
* ``use_projection=True``: P's left 3x3 and R, the maps image_proc's ``rectify`` builds for
  ``image_rect``. camera_calibration usually chooses P so that (nearly) every output pixel has a
  source; for a stereo camera R rotates the image into the rectified frame, and so do the
  points back-projected from it. When P's 3x3 is not a usable camera matrix (all zero, as some
  drivers publish it), the default is used.

Maps are built once per distinct calibration (about 2 ms at 640x480) and kept as OpenCV's
fixed-point maps (CV_16SC2 + CV_16UC1: 1/32-pixel interpolation, 6 bytes per pixel instead of 8),
the layout OpenCV documents as its fastest for ``cv2.remap``; :class:`UndistorterCache` keeps the
last few. Measured at 640x480 RGB on a shared 2-core AMD EPYC VM with AVX-512
(``python test/test_undistort.py``): 0.5-1.8 ms per ``undistort`` depending on the load from other
jobs, best 0.50 ms with 2 OpenCV threads and 0.79 ms with one; float maps measured about the same
on this CPU.

Binning and ROI are honoured the way image_geometry does: the intrinsics of the delivered image
are K (and P) with the ROI offset removed and divided by the binning, and D applies unchanged
because it acts on normalised coordinates. Nothing here needs rclpy.
"""

from __future__ import annotations

from collections import OrderedDict

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, RegionOfInterest
from std_msgs.msg import Header

from ..data.camera import CameraInfoError, delivered_image_transform

__all__ = [
    "SUPPORTED_DISTORTION_MODELS",
    "Undistorter",
    "UndistorterCache",
    "calibration_key",
    "needs_undistortion",
]

#: CameraInfo ``distortion_model`` values :class:`Undistorter` handles.
SUPPORTED_DISTORTION_MODELS: tuple[str, ...] = ("plumb_bob", "rational_polynomial", "equidistant")

# Coefficient counts OpenCV's pinhole model takes (k1 k2 p1 p2 [k3 [k4 k5 k6 [s1..s4 [tx ty]]]]);
# a shorter D is padded with zeros to the next one, which leaves the model unchanged.
_PINHOLE_COEFFICIENT_COUNTS = (4, 5, 8, 12, 14)
_FISHEYE_COEFFICIENT_COUNT = 4  # k1..k4 of theta_d = theta (1 + k1 theta^2 + ... + k4 theta^8)


def needs_undistortion(info: CameraInfo) -> bool:
    """Whether ``info`` describes a distorted image: True when any coefficient of D is non-zero.

    An empty or all-zero D (a rectified or ideal camera) costs nothing: no maps, no remap.
    """
    return any(float(value) != 0.0 for value in info.d)


def calibration_key(info: CameraInfo, use_projection: bool = False) -> tuple:
    """What the undistortion of ``info`` depends on (everything but the header), hashable."""
    roi = info.roi
    return (
        int(info.width),
        int(info.height),
        int(info.binning_x),
        int(info.binning_y),
        (int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)),
        str(info.distortion_model),
        tuple(float(value) for value in info.d),
        tuple(float(value) for value in info.k),
        tuple(float(value) for value in info.r) if use_projection else (),
        tuple(float(value) for value in info.p) if use_projection else (),
        bool(use_projection),
    )


def _distortion_coefficients(info: CameraInfo) -> np.ndarray:
    model = info.distortion_model
    if model not in SUPPORTED_DISTORTION_MODELS:
        raise CameraInfoError(
            f"distortion model '{model}' is not supported; supported: {', '.join(SUPPORTED_DISTORTION_MODELS)}"
        )
    d = np.asarray(info.d, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(d)):
        raise CameraInfoError(f"distortion coefficients D = {d.tolist()} are not all finite")
    if model == "equidistant":
        counts: tuple[int, ...] = (_FISHEYE_COEFFICIENT_COUNT,)
    else:
        counts = _PINHOLE_COEFFICIENT_COUNTS
    target = next((count for count in counts if count >= d.size), None)
    if target is None:
        raise CameraInfoError(
            f"distortion model '{model}' takes at most {counts[-1]} coefficients; D has {d.size}"
        )
    return np.concatenate([d, np.zeros(target - d.size)])


def _camera_matrix(matrix: np.ndarray) -> bool:
    """Whether a 3x3 matrix is a usable pinhole camera matrix (finite, positive focal lengths)."""
    return bool(np.all(np.isfinite(matrix)) and matrix[0, 0] > 0.0 and matrix[1, 1] > 0.0
                and matrix[2, 2] != 0.0)


class Undistorter:
    """Undistortion maps of one calibration: distorted image in, pinhole image of the same size out.

    Built from a CameraInfo whose D is not all zero (see :func:`needs_undistortion`); raises
    :class:`~space_clip_ros.data.camera.CameraInfoError` for an unsupported distortion model, a
    D of the wrong length, or a K that is not a camera matrix. Immutable once built; ``undistort``
    may be called from several threads.
    """

    def __init__(self, info: CameraInfo, *, use_projection: bool = False) -> None:
        coefficients = _distortion_coefficients(info)
        transform, width, height = delivered_image_transform(info)
        k = transform @ np.asarray(info.k, dtype=np.float64).reshape(3, 3)
        if not _camera_matrix(k):
            raise CameraInfoError(
                f"CameraInfo K = {np.asarray(info.k).tolist()} is not a camera matrix "
                "(expected finite fx, fy > 0): cannot undistort"
            )
        rotation = np.eye(3)
        new_k = k
        projection = None
        if use_projection:
            p = transform @ np.asarray(info.p, dtype=np.float64).reshape(3, 4)
            if _camera_matrix(p[:, :3]):
                projection = p
                new_k = p[:, :3]
                r = np.asarray(info.r, dtype=np.float64).reshape(3, 3)
                # Some drivers leave R all zero for a monocular camera: that means "no rotation".
                rotation = r if np.any(r) else np.eye(3)
        self.width = width
        self.height = height
        self.distortion_model: str = info.distortion_model
        #: The camera matrix of the undistorted image (K, or P's 3x3 with ``use_projection``).
        self.new_camera_matrix: np.ndarray = new_k.copy()
        #: Whether P and R were used (``use_projection`` and a usable P).
        self.uses_projection: bool = projection is not None
        self._projection = projection
        self._maps = self._build_maps(k, coefficients, rotation, new_k)
        self._valid_mask: np.ndarray | None = None

    def _build_maps(
        self, k: np.ndarray, coefficients: np.ndarray, rotation: np.ndarray, new_k: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        size = (self.width, self.height)
        # CV_16SC2 + CV_16UC1: integer source pixel and a 1/32-pixel interpolation index, the
        # layout cv2.remap handles fastest.
        if self.distortion_model == "equidistant":
            return cv2.fisheye.initUndistortRectifyMap(
                k, coefficients.reshape(1, 4), rotation, new_k, size, cv2.CV_16SC2
            )
        return cv2.initUndistortRectifyMap(k, coefficients, rotation, new_k, size, cv2.CV_16SC2)

    def undistort(self, image: np.ndarray) -> np.ndarray:
        """The undistorted copy of an (H, W[, C]) image of the calibrated size (bilinear).

        Pixels whose source lies outside the input are 0 (black).
        """
        image = np.asarray(image)
        if image.shape[:2] != (self.height, self.width):
            raise CameraInfoError(
                f"image has shape {image.shape} but its CameraInfo describes a {self.width}x{self.height} "
                "image (width x height): cannot undistort"
            )
        return cv2.remap(
            image, self._maps[0], self._maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
        )

    @property
    def valid_mask(self) -> np.ndarray:
        """(H, W) bool: True where an undistorted pixel is interpolated from inside the input only.

        False marks the black border that undistortion adds (e.g. to mark depth invalid there).
        """
        if self._valid_mask is None:
            full = np.full((self.height, self.width), 255, dtype=np.uint8)
            mask = self.undistort(full) == 255
            mask.setflags(write=False)  # shared by every caller
            self._valid_mask = mask
        return self._valid_mask

    def rectified_camera_info(self, info: CameraInfo) -> CameraInfo:
        """The CameraInfo of the undistorted image of the frame ``info`` belongs to.

        Header (stamp, frame_id) from ``info``; width and height of the delivered image; D all
        zero (``plumb_bob``, five zeros); K = :attr:`new_camera_matrix`; R identity (the output
        needs no further rectification); P = [K | 0], or with ``use_projection`` the original P
        (its Tx, Ty kept); binning 0 and ROI zero (a plain full-frame camera, as
        :func:`~space_clip_ros.msgs.camera_info.scale_camera_info` writes).
        """
        if self._projection is not None:
            p = self._projection
        else:
            p = np.zeros((3, 4))
            p[:, :3] = self.new_camera_matrix
        return CameraInfo(
            header=Header(
                stamp=Time(sec=info.header.stamp.sec, nanosec=info.header.stamp.nanosec),
                frame_id=info.header.frame_id,
            ),
            height=self.height,
            width=self.width,
            distortion_model="plumb_bob",
            d=[0.0] * 5,
            k=self.new_camera_matrix.reshape(-1),
            r=np.eye(3).reshape(-1),
            p=p.reshape(-1),
            binning_x=0,
            binning_y=0,
            roi=RegionOfInterest(),
        )


class UndistorterCache:
    """The :class:`Undistorter` of each recent calibration, built on first use (least recently used out).

    A camera keeps one calibration, so one entry is the steady state; a few more cover a camera
    that switches between modes. Not thread-safe: use one cache per thread (or a lock).
    """

    def __init__(self, max_entries: int = 4, *, use_projection: bool = False) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = int(max_entries)
        self.use_projection = bool(use_projection)
        self._entries: OrderedDict[tuple, Undistorter] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, info: CameraInfo) -> Undistorter | None:
        """The undistorter for ``info``, or None when its D is all zero (nothing to do).

        Raises :class:`~space_clip_ros.data.camera.CameraInfoError` when ``info`` cannot be
        undistorted (the failure is not cached: a corrected CameraInfo is tried afresh).
        """
        if not needs_undistortion(info):
            return None
        key = calibration_key(info, self.use_projection)
        undistorter = self._entries.get(key)
        if undistorter is not None:
            self._entries.move_to_end(key)
            return undistorter
        undistorter = Undistorter(info, use_projection=self.use_projection)
        self._entries[key] = undistorter
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return undistorter
