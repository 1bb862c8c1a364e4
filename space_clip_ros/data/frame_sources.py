"""Camera frame sources for the camera simulator: synthetic scenes, image folders, video files.

Each source yields :class:`SourceFrame` objects (RGB uint8 pixels at the output size, plus the
exact depth for synthetic scenes) and describes its camera with one :class:`CameraModel`, the
intrinsics of the frames it yields. Plain numpy/OpenCV: no rclpy, no messages.

Intrinsics files (``load_camera_file``) are read by ``data.formats.read_intrinsics_file``, the
reader of a folder dataset's ``intrinsics.yaml`` too: flat ``fx, fy, cx, cy`` keys or the ROS
``camera_calibration`` format, YAML or JSON.

Resizing to a requested output size is a centre-aligned resample (cv2.resize), so the intrinsics
are scaled with ``align_pixel_centres=True``: the published K is exact for the published pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from space_clip_ros.data import synthetic
from space_clip_ros.data.camera import CameraIntrinsics, CameraModel
from space_clip_ros.data.formats import FOLDER_META_FILE, IntrinsicsFileError, read_intrinsics_file, read_rgb

logger = logging.getLogger(__name__)

SOURCE_KINDS = ("synthetic", "folder", "video")
SCENE_KINDS = ("indoor", "street")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
#: The reference camera of each scene kind (the one training data is rendered with, too).
SCENE_CAMERAS = {"indoor": synthetic.NYU_INTRINSICS, "street": synthetic.KITTI_INTRINSICS}
#: Output size of a synthetic source when none is asked for: NYU's 640x480, a KITTI-shaped 832x256.
DEFAULT_SCENE_SIZES = {"indoor": (640, 480), "street": (832, 256)}
#: Rendered frames kept for later passes of a looping synthetic source, at most this many bytes.
MAX_CACHE_BYTES = 256 * 1024 * 1024
_CACHED_BYTES_PER_PIXEL = 3 + 4  # uint8 RGB + float32 depth


class FrameSourceError(ValueError):
    """A source cannot be opened (missing files, bad intrinsics...); the text says what to fix."""


@dataclass(frozen=True)
class SourceFrame:
    """One frame: RGB pixels at the source's output size, and the exact depth when known."""

    index: int  # position in the source's sequence (repeats when the source loops)
    rgb: np.ndarray  # (H, W, 3) uint8 RGB
    depth: np.ndarray | None = None  # (H, W) float32 metres, 0 = no depth (synthetic scenes only)


class FrameSource(Protocol):
    """What the camera simulator needs from a source."""

    camera: CameraModel

    def __iter__(self) -> Iterator[SourceFrame]: ...

    def describe(self) -> str: ...


def _resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    shrinking = width < rgb.shape[1] and height < rgb.shape[0]
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def _output_size(width: int, height: int, native: tuple[int, int]) -> tuple[int, int]:
    """(width, height) to deliver: the requested one, or the native size when 0 x 0 is asked."""
    if (width > 0) != (height > 0):
        raise FrameSourceError(f"width and height must both be > 0 or both 0 (native size), got {width}x{height}")
    return (width, height) if width > 0 else native


# ---- intrinsics files ---------------------------------------------------------------------------
def load_camera_file(path: str | Path, image_size: tuple[int, int] | None = None) -> CameraModel:
    """Read an intrinsics file (formats: :func:`~space_clip_ros.data.formats.read_intrinsics_file`).

    ``image_size`` (width, height) fills in a size the file does not state; when the file states
    another size, the intrinsics are rescaled to ``image_size`` (with a warning).
    """
    try:
        parsed = read_intrinsics_file(path, image_size)
    except OSError as exc:
        raise FrameSourceError(f"cannot read intrinsics file {path}: {exc}") from exc
    except IntrinsicsFileError as exc:
        raise FrameSourceError(str(exc)) from exc
    camera = parsed.camera
    if image_size is not None and tuple(image_size) != camera.intrinsics.size:
        logger.warning("intrinsics file %s is for %dx%d images but the images are %dx%d: rescaling it",
                       path, *camera.intrinsics.size, *image_size)
        camera = camera.resized(*image_size)
    return camera


# ---- synthetic scenes ---------------------------------------------------------------------------
@dataclass
class SyntheticSource:
    """A camera moving through a generated scene (exact depth per frame).

    The camera goes along the scene's path in ``frames_per_pass`` frames, then (with ``loop``)
    back again, and so on: a smooth endless stream. Rendered frames are cached (up to
    :data:`MAX_CACHE_BYTES`), so later passes cost nothing.
    """

    scene_kind: str = "indoor"
    seed: int = 0
    width: int = 0
    height: int = 0
    frames_per_pass: int = 100
    loop: bool = True
    camera: CameraModel = field(init=False)

    def __post_init__(self) -> None:
        if self.scene_kind not in SCENE_KINDS:
            raise FrameSourceError(f"scene must be one of {SCENE_KINDS}, got {self.scene_kind!r}")
        if self.frames_per_pass < 1:
            raise FrameSourceError(f"frames_per_pass must be >= 1, got {self.frames_per_pass}")
        width, height = _output_size(self.width, self.height, DEFAULT_SCENE_SIZES[self.scene_kind])
        # The kind's reference camera scaled to the output size: the rule the synthetic training
        # data follows, so a model trained on it sees the same geometry here.
        reference = SCENE_CAMERAS[self.scene_kind]
        self.camera = CameraModel(reference.scaled_to(width, height, align_pixel_centres=True))
        self._scene = synthetic.make_scene(synthetic.SceneConfig(kind=self.scene_kind, seed=self.seed))
        self._poses = synthetic.trajectory(self._scene, self.frames_per_pass)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _frame(self, index: int) -> SourceFrame:
        cached = self._cache.get(index)
        if cached is None:
            cached = synthetic.render(self._scene, self._poses[index], self.camera.intrinsics)
            c = self.camera.intrinsics
            if (len(self._cache) + 1) * c.width * c.height * _CACHED_BYTES_PER_PIXEL <= MAX_CACHE_BYTES:
                self._cache[index] = cached
        rgb, depth = cached
        return SourceFrame(index, rgb, depth)

    def __iter__(self) -> Iterator[SourceFrame]:
        count = len(self._poses)
        for index in range(count):
            yield self._frame(index)
        if not self.loop:
            return
        # Back and forth without repeating the end frames: no jump in the stream.
        back_and_forth = list(range(count - 2, 0, -1)) + list(range(count))
        while True:
            for index in back_and_forth:
                yield self._frame(index)

    def describe(self) -> str:
        c = self.camera.intrinsics
        return (f"synthetic {self.scene_kind} scene (seed {self.seed}), {c.width}x{c.height}, "
                f"{self.frames_per_pass} frames per pass{', looping' if self.loop else ''}")


# ---- image folders ------------------------------------------------------------------------------
def list_images(folder: Path, pattern: str = "*") -> list[Path]:
    """Image files of ``folder`` (or of its ``rgb/`` sub-folder, a folder dataset's layout) whose
    names match the glob ``pattern``, sorted by name."""
    root = folder / "rgb" if (folder / "rgb").is_dir() else folder
    return sorted(p for p in root.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_image_rgb(path: Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB (grey and 16-bit images converted); the datasets' reader,
    raising FrameSourceError for a missing, empty, truncated or undecodable file."""
    try:
        return read_rgb(path)
    except (OSError, ValueError) as exc:  # FileNotFoundError, CorruptFileError
        raise FrameSourceError(f"cannot read image {path}: {exc}") from exc


@dataclass
class ImageFolderSource:
    """The images of a folder in name order, with the intrinsics of a file.

    ``intrinsics_file`` empty: ``<folder>/intrinsics.yaml`` (a folder dataset's). ``pattern``
    selects the files (e.g. ``color_*.png`` when depth images share the folder). Images whose size
    differs from the first image's are resized to it.
    """

    folder: str | Path
    intrinsics_file: str | Path = ""
    pattern: str = "*"
    width: int = 0
    height: int = 0
    loop: bool = True
    camera: CameraModel = field(init=False)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        if not self.folder.is_dir():
            raise FrameSourceError(f"image folder {self.folder} does not exist")
        self._paths = list_images(self.folder, self.pattern)
        if not self._paths:
            raise FrameSourceError(
                f"no images ({', '.join(IMAGE_SUFFIXES)}) matching {self.pattern!r} in {self.folder}"
            )
        intrinsics_file = Path(self.intrinsics_file) if self.intrinsics_file else self.folder / FOLDER_META_FILE
        if not intrinsics_file.is_file():
            raise FrameSourceError(
                f"intrinsics file {intrinsics_file} not found; give one (fx, fy, cx, cy, width, height)"
            )
        first = read_image_rgb(self._paths[0])
        self._native_size = (first.shape[1], first.shape[0])
        native_camera = load_camera_file(intrinsics_file, image_size=self._native_size)
        size = _output_size(self.width, self.height, self._native_size)
        self.camera = native_camera.resized(*size)

    def __iter__(self) -> Iterator[SourceFrame]:
        size = (self.camera.intrinsics.width, self.camera.intrinsics.height)
        while True:
            for index, path in enumerate(self._paths):
                rgb = read_image_rgb(path)
                if (rgb.shape[1], rgb.shape[0]) != self._native_size:
                    logger.warning("%s is %dx%d, not %dx%d like the first image: resized",
                                   path, rgb.shape[1], rgb.shape[0], *self._native_size)
                    rgb = _resize(rgb, *self._native_size)
                yield SourceFrame(index, _resize(rgb, *size))
            if not self.loop:
                return

    def describe(self) -> str:
        c = self.camera.intrinsics
        return f"{len(self._paths)} images of {self.folder}, {c.width}x{c.height}{', looping' if self.loop else ''}"


# ---- video files --------------------------------------------------------------------------------
def camera_from_fov(width: int, height: int, horizontal_fov_deg: float) -> CameraModel:
    """A square-pixel pinhole camera with the principal point at the image centre."""
    if not 1.0 <= horizontal_fov_deg <= 179.0:
        raise FrameSourceError(f"horizontal field of view must be in [1, 179] degrees, got {horizontal_fov_deg}")
    focal = (width / 2.0) / np.tan(np.radians(horizontal_fov_deg) / 2.0)
    return CameraModel(CameraIntrinsics(float(focal), float(focal), (width - 1) / 2.0, (height - 1) / 2.0,
                                        width, height))


@dataclass
class VideoFileSource:
    """The frames of a video file (anything OpenCV's FFmpeg backend reads), optionally looping.

    Without an intrinsics file the camera is assumed to have ``fov_deg`` horizontal field of view
    (metric depth then depends on that guess, and a warning says so).
    """

    path: str | Path
    intrinsics_file: str | Path = ""
    width: int = 0
    height: int = 0
    loop: bool = True
    fov_deg: float = 60.0
    camera: CameraModel = field(init=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        capture = self._open()
        try:
            ok, first = capture.read()
            self.native_fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
            self.frame_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        finally:
            capture.release()
        if not ok:
            raise FrameSourceError(f"video {self.path} has no readable frame")
        native = (first.shape[1], first.shape[0])
        if self.intrinsics_file:
            native_camera = load_camera_file(self.intrinsics_file, image_size=native)
        else:
            logger.warning("no intrinsics file for %s: assuming a %.0f degree horizontal field of view",
                           self.path, self.fov_deg)
            native_camera = camera_from_fov(*native, self.fov_deg)
        self.camera = native_camera.resized(*_output_size(self.width, self.height, native))

    def _open(self) -> cv2.VideoCapture:
        if not self.path.is_file():
            raise FrameSourceError(f"video file {self.path} does not exist")
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise FrameSourceError(f"OpenCV cannot open video {self.path}")
        return capture

    def __iter__(self) -> Iterator[SourceFrame]:
        size = (self.camera.intrinsics.width, self.camera.intrinsics.height)
        while True:
            capture = self._open()
            index = 0
            try:
                while True:
                    ok, bgr = capture.read()
                    if not ok:
                        break
                    yield SourceFrame(index, _resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), *size))
                    index += 1
            finally:
                capture.release()
            if not self.loop or index == 0:
                return

    def describe(self) -> str:
        c = self.camera.intrinsics
        return (f"video {self.path} ({self.frame_count} frames at {self.native_fps:.1f} fps), "
                f"{c.width}x{c.height}{', looping' if self.loop else ''}")


# ---- one entry point ------------------------------------------------------------------------------
@dataclass(frozen=True)
class FrameSourceConfig:
    """Everything that picks and configures a source (the camera simulator's parameters)."""

    source: str = "synthetic"
    width: int = 0
    height: int = 0
    loop: bool = True
    scene: str = "indoor"
    seed: int = 0
    frames_per_pass: int = 100
    folder: str = ""
    image_pattern: str = "*"
    intrinsics_file: str = ""
    video_path: str = ""
    fov_deg: float = 60.0


def open_frame_source(config: FrameSourceConfig) -> SyntheticSource | ImageFolderSource | VideoFileSource:
    """The source ``config.source`` names; raises :class:`FrameSourceError` with the fix."""
    if config.source == "synthetic":
        return SyntheticSource(config.scene, config.seed, config.width, config.height, config.frames_per_pass,
                               config.loop)
    if config.source == "folder":
        if not config.folder:
            raise FrameSourceError("source 'folder' needs a folder of images (parameter folder)")
        return ImageFolderSource(config.folder, config.intrinsics_file, config.image_pattern, config.width,
                                 config.height, config.loop)
    if config.source == "video":
        if not config.video_path:
            raise FrameSourceError("source 'video' needs a video file (parameter video_path)")
        return VideoFileSource(config.video_path, config.intrinsics_file, config.width, config.height, config.loop,
                               config.fov_deg)
    raise FrameSourceError(f"source must be one of {SOURCE_KINDS}, got {config.source!r}")
