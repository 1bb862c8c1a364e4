"""A camera's frames on their way to the model: decoded, paired with their CameraInfo, undistorted.

:class:`CameraInput` keeps what one camera needs between frames and turns each image message into
a :class:`CameraFrame`, the pixels the model sees and the calibration that describes them:

1. **decoding**: every encoding of :data:`~space_clip_ros.msgs.image.SUPPORTED_COLOUR_ENCODINGS`
   (raw images) or JPEG / PNG (compressed) becomes (H, W, 3) uint8 RGB
   (:func:`~space_clip_ros.outputs.messages.decode_image`); anything else raises
   :class:`~space_clip_ros.msgs.image.ImageConversionError` naming the supported encodings;
2. **CameraInfo by stamp**: the camera's last CameraInfo messages are kept in a
   :class:`~space_clip_ros.msgs.camera_info_history.CameraInfoHistory`; an image takes the one with
   its own stamp, else the nearest within ``camera_info_tolerance_s`` (none beyond it), or with a
   tolerance of 0 the latest one (:class:`~space_clip_ros.msgs.camera_info_history.CameraInfoMatch`
   says which and why, for the caller's warning);
3. **lens distortion**: when that CameraInfo's D is not all zero and undistortion is on, the pixels
   are resampled into a distortion-free image with the same K
   (:class:`~space_clip_ros.msgs.undistort.Undistorter`; the maps are built once per calibration,
   when the CameraInfo arrives, and kept in an :class:`~space_clip_ros.msgs.undistort.UndistorterCache`),
   and the frame's calibration is the undistorted image's (D zero, K kept, P = [K | 0]). A D of
   all zeros costs nothing.

A CameraInfo of another size than the images is rescaled to them (its D unchanged: distortion acts
on normalised coordinates) and the frame says so (``camera_info_size_mismatch``). The CameraInfo
callback and the worker may call from different threads. No rclpy here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from space_clip_ros.msgs.camera_info import scale_camera_info
from space_clip_ros.msgs.camera_info_history import CameraInfoHistory, CameraInfoMatch
from space_clip_ros.msgs.undistort import UndistorterCache, needs_undistortion
from space_clip_ros.outputs.calibration import CameraCalibration
from space_clip_ros.outputs.messages import decode_image

#: CameraInfo messages a camera keeps for the lookup by stamp (a second of a 30 Hz camera).
CAMERA_INFO_HISTORY_SIZE = 30
#: Calibrations whose undistortion maps a camera keeps (one is the steady state).
UNDISTORTER_CACHE_SIZE = 4


@dataclass(frozen=True)
class CameraFrame:
    """One image as the model sees it, and what describes it.

    Attributes:
        header: the image message's header (stamp and frame of every output).
        rgb: (H, W, 3) uint8 RGB pixels, undistorted when ``undistorted``.
        calibration: the calibration of ``rgb`` (of the undistorted image when ``undistorted``);
            None when the frame has no CameraInfo (depth image only).
        camera_info: which CameraInfo was chosen for the image's stamp, and how.
        undistorted: lens distortion was removed.
        camera_info_size_mismatch: (width, height) the chosen CameraInfo described when that differed
            from the image (it was rescaled to the image); None otherwise.
    """

    header: Header
    rgb: np.ndarray
    calibration: CameraCalibration | None
    camera_info: CameraInfoMatch
    undistorted: bool = False
    camera_info_size_mismatch: tuple[int, int] | None = None

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) of the pixels."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])


class CameraInput:
    """One camera's CameraInfo history and undistortion maps; image messages in, :class:`CameraFrame` out.

    Args:
        camera_info_tolerance_s: how far (seconds) a CameraInfo's stamp may be from the image's when
            none has the image's own stamp; 0: the latest CameraInfo then (see the module notes).
        history_size: CameraInfo messages kept.
    """

    def __init__(self, camera_info_tolerance_s: float = 0.0, history_size: int = CAMERA_INFO_HISTORY_SIZE) -> None:
        self._lock = threading.Lock()  # the history and the cache are not thread-safe
        self._history = CameraInfoHistory(camera_info_tolerance_s, max_size=history_size)
        self._undistorters = UndistorterCache(UNDISTORTER_CACHE_SIZE)

    @property
    def has_camera_info(self) -> bool:
        with self._lock:
            return len(self._history) > 0

    def add_camera_info(self, info: CameraInfo, undistort: bool = True) -> None:
        """Keep a CameraInfo for the images of its stamp.

        Raises :class:`~space_clip_ros.data.camera.CameraInfoError` (nothing is kept) when it cannot
        describe a camera (zero focal length, all-zero K) or, with ``undistort``, when its lens
        distortion cannot be removed (an unsupported distortion model, a D of the wrong length);
        otherwise the undistortion maps of a new calibration are built here, once.
        """
        CameraCalibration.from_msg(info)  # validates K, size, ROI and binning
        with self._lock:
            if undistort and needs_undistortion(info):
                self._undistorters.get(info)
            self._history.add(info)

    def clear(self) -> None:
        """Forget every CameraInfo (the maps stay: a camera's calibration rarely changes)."""
        with self._lock:
            self._history.clear()

    def frame(self, message: Image | CompressedImage, undistort: bool = True) -> CameraFrame:
        """The frame of an image message. Raises ValueError subclasses for input that cannot be used
        (``ImageConversionError``: encoding, size, data; ``CameraInfoError``: a CameraInfo that
        cannot be rescaled or undistorted for this image); the text says why."""
        rgb = decode_image(message)
        with self._lock:
            match = self._history.lookup_header(message.header)
        if not match:
            return CameraFrame(message.header, rgb, None, match)
        info = match.info
        calibration = CameraCalibration.from_msg(info)
        height, width = rgb.shape[:2]
        mismatch = calibration.intrinsics.size if calibration.intrinsics.size != (width, height) else None
        if not (undistort and needs_undistortion(info)):
            # As it is: the output builder scales the calibration to the depth map in one step.
            return CameraFrame(message.header, rgb, calibration, match, camera_info_size_mismatch=mismatch)
        if mismatch is not None:
            info = scale_camera_info(info, width, height)
        with self._lock:
            undistorter = self._undistorters.get(info)
        rectified = CameraCalibration.from_msg(undistorter.rectified_camera_info(info))
        return CameraFrame(message.header, undistorter.undistort(rgb), rectified, match, undistorted=True,
                           camera_info_size_mismatch=mismatch)
