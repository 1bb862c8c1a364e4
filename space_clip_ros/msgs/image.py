"""sensor_msgs/Image and CompressedImage <-> numpy arrays (our replacement for cv_bridge).

Colour images come out as (H, W, 3) uint8 RGB, the layout the predictor takes. Depth images follow
REP 118: ``32FC1`` in metres with NaN where there is no reading, ``16UC1`` in millimetres with 0
where there is no reading. Every function here is plain numpy / OpenCV: no rclpy, no node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from space_clip_ros.msgs._buffers import message_bytes, new_message, uint8_array_from, zeroed_uint8_array


class ImageConversionError(ValueError):
    """A message could not be converted; the text says what is wrong and what was expected."""


@dataclass(frozen=True)
class _PixelFormat:
    """How one encoding stores a pixel, and how to turn it into RGB."""

    channels: int
    bytes_per_channel: int
    to_rgb: int | None  # cv2.cvtColor code, None when the pixels already are RGB


_RGB8 = _PixelFormat(3, 1, None)
_BGR8 = _PixelFormat(3, 1, cv2.COLOR_BGR2RGB)
_RGBA8 = _PixelFormat(4, 1, cv2.COLOR_RGBA2RGB)
_BGRA8 = _PixelFormat(4, 1, cv2.COLOR_BGRA2RGB)
_MONO8 = _PixelFormat(1, 1, cv2.COLOR_GRAY2RGB)
_MONO16 = _PixelFormat(1, 2, cv2.COLOR_GRAY2RGB)

# The generic OpenCV type names follow OpenCV's own channel order (BGR / BGRA), as cv_bridge does.
_COLOUR_FORMATS: dict[str, _PixelFormat] = {
    "rgb8": _RGB8,
    "bgr8": _BGR8,
    "8UC3": _BGR8,
    "rgba8": _RGBA8,
    "bgra8": _BGRA8,
    "8UC4": _BGRA8,
    "mono8": _MONO8,
    "8UC1": _MONO8,
    "mono16": _MONO16,
    "16UC1": _MONO16,
}

#: Encodings that :func:`image_msg_to_rgb` accepts.
SUPPORTED_COLOUR_ENCODINGS: tuple[str, ...] = tuple(_COLOUR_FORMATS)
#: Encodings that :func:`rgb_to_image_msg` writes.
OUTPUT_COLOUR_ENCODINGS: tuple[str, ...] = ("rgb8", "bgr8", "mono8")
#: Depth encodings of REP 118 that :func:`depth_to_image_msg` writes and :func:`image_msg_to_depth` reads.
DEPTH_ENCODINGS: tuple[str, ...] = ("32FC1", "16UC1")
#: Compressed formats that :func:`rgb_to_compressed_msg` writes.
COMPRESSED_FORMATS: tuple[str, ...] = ("jpeg", "png")

_COLORMAP_CODES: dict[str, int] = {
    name[len("COLORMAP_"):].lower(): getattr(cv2, name)
    for name in sorted(dir(cv2))
    if name.startswith("COLORMAP_")
}
#: Colour map names accepted by :func:`colorize_depth` (OpenCV's, lower case).
COLORMAP_NAMES: tuple[str, ...] = tuple(_COLORMAP_CODES)


def _pixel_grid(msg: Image, channels: int, dtype: np.dtype) -> np.ndarray:
    """An (H, W, C) view of the pixels of ``msg``, honouring ``step``; raises on malformed messages."""
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise ImageConversionError(
            f"image '{msg.encoding}' is empty ({width}x{height}); expected width and height > 0"
        )
    bytes_per_pixel = channels * dtype.itemsize
    row_bytes = width * bytes_per_pixel
    if step < row_bytes:
        raise ImageConversionError(
            f"image step {step} is smaller than width*bytes_per_pixel = {row_bytes} "
            f"(width {width}, {bytes_per_pixel} bytes per pixel for '{msg.encoding}')"
        )
    data = message_bytes(msg.data)
    if data.size < step * height:
        raise ImageConversionError(
            f"image data has {data.size} bytes but step*height = {step * height} "
            f"(step {step}, height {height})"
        )
    rows = data[: step * height].reshape(height, step)[:, :row_bytes]
    return rows.view(dtype).reshape(height, width, channels)


def _uint16_dtype(msg: Image) -> np.dtype:
    return np.dtype(">u2" if msg.is_bigendian else "<u2")


def image_msg_to_rgb(msg: Image) -> np.ndarray:
    """Convert a raw colour or grey image message to a new (H, W, 3) uint8 RGB array.

    Accepts rgb8, bgr8, rgba8, bgra8, mono8, mono16 (and the OpenCV names 8UC1/8UC3/8UC4/16UC1);
    16-bit images are reduced to 8 bits by dropping the low byte, as cv_bridge does. Row padding
    (``step`` > width * bytes per pixel) is skipped. Raises :class:`ImageConversionError`.
    """
    pixel_format = _COLOUR_FORMATS.get(msg.encoding)
    if pixel_format is None:
        raise ImageConversionError(
            f"unsupported encoding '{msg.encoding}'; supported: {', '.join(SUPPORTED_COLOUR_ENCODINGS)}"
        )
    dtype = _uint16_dtype(msg) if pixel_format.bytes_per_channel == 2 else np.dtype(np.uint8)
    pixels = _pixel_grid(msg, pixel_format.channels, dtype)
    if pixel_format.bytes_per_channel == 2:
        pixels = (pixels >> 8).astype(np.uint8)
    if pixel_format.to_rgb is None:
        # A copy, so the caller owns the result and the message buffer can be released.
        return pixels.copy()
    if pixel_format.channels == 1:
        pixels = pixels[:, :, 0]
    return cv2.cvtColor(pixels, pixel_format.to_rgb)


def compressed_msg_to_rgb(msg: CompressedImage) -> np.ndarray:
    """Decode a JPEG or PNG CompressedImage to a new (H, W, 3) uint8 RGB array."""
    data = message_bytes(msg.data)
    if data.size == 0:
        raise ImageConversionError(
            f"compressed image (format '{msg.format}') has no data; expected a JPEG or PNG stream"
        )
    try:
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as exc:  # OpenCV raises on some malformed streams instead of returning None
        bgr = None
        reason = f": {exc}"
    else:
        reason = ""
    if bgr is None:
        raise ImageConversionError(
            f"could not decode {data.size} bytes of compressed image data (format '{msg.format}', "
            f"starts with {bytes(data[:4]).hex()}){reason}; expected a JPEG or PNG stream"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _check_rgb_array(rgb: np.ndarray, allow_grey: bool = False) -> np.ndarray:
    rgb = np.asarray(rgb)
    shape_ok = (rgb.ndim == 3 and rgb.shape[2] == 3) or (allow_grey and rgb.ndim == 2)
    if rgb.dtype != np.uint8 or not shape_ok or rgb.size == 0:
        expected = "(H, W, 3) or (H, W)" if allow_grey else "(H, W, 3)"
        raise ImageConversionError(
            f"expected a non-empty {expected} uint8 RGB array, got shape {rgb.shape} dtype {rgb.dtype}"
        )
    return rgb


def _image_msg(
    header: Header, height: int, width: int, encoding: str, step: int, pixels: np.ndarray
) -> Image:
    """A little-endian Image holding ``pixels`` (C order, no row padding)."""
    msg = new_message(
        Image, header=header, height=height, width=width, encoding=encoding, is_bigendian=0, step=step
    )
    msg.data = uint8_array_from(pixels)
    return msg


def rgb_to_image_msg(rgb: np.ndarray, header: Header, encoding: str = "rgb8") -> Image:
    """Wrap an (H, W, 3) uint8 RGB array in an Image message as rgb8, bgr8 or mono8.

    For mono8 a 2-D (H, W) grey array is taken as is; an RGB array is converted to grey.
    """
    if encoding not in OUTPUT_COLOUR_ENCODINGS:
        raise ImageConversionError(
            f"cannot write encoding '{encoding}'; supported: {', '.join(OUTPUT_COLOUR_ENCODINGS)}"
        )
    rgb = _check_rgb_array(rgb, allow_grey=encoding == "mono8")
    if encoding == "bgr8":
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    elif encoding == "mono8" and rgb.ndim == 3:
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    else:
        pixels = rgb
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    return _image_msg(header, height, width, encoding, width * channels, pixels)


def rgb_to_compressed_msg(
    rgb: np.ndarray,
    header: Header,
    fmt: str = "jpeg",
    *,
    jpeg_quality: int = 95,
    png_level: int = 3,
) -> CompressedImage:
    """Encode an (H, W, 3) uint8 RGB array as a JPEG or PNG CompressedImage.

    ``format`` is written the way image_transport's compressed plugin writes it for an rgb8 source
    ("rgb8; jpeg compressed bgr8"): the stream itself holds BGR, as OpenCV encodes it.
    """
    if fmt not in COMPRESSED_FORMATS:
        raise ImageConversionError(
            f"unsupported compressed format '{fmt}'; supported: {', '.join(COMPRESSED_FORMATS)}"
        )
    bgr = cv2.cvtColor(_check_rgb_array(rgb), cv2.COLOR_RGB2BGR)
    if fmt == "jpeg":
        ok, stream = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    else:
        ok, stream = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, int(png_level)])
    if not ok:
        raise ImageConversionError(f"OpenCV could not encode a {bgr.shape} image as {fmt}")
    msg = new_message(CompressedImage, header=header, format=f"rgb8; {fmt} compressed bgr8")
    msg.data = uint8_array_from(stream)
    return msg


def _check_depth_array(depth_m: np.ndarray) -> np.ndarray:
    depth = np.asarray(depth_m)
    if depth.ndim != 2 or depth.size == 0 or not np.issubdtype(depth.dtype, np.floating):
        raise ImageConversionError(
            f"expected a non-empty (H, W) floating-point depth array in metres, "
            f"got shape {depth.shape} dtype {depth.dtype}"
        )
    return depth.astype(np.float32, copy=False)


def valid_depth_mask(depth_m: np.ndarray, min_depth: float = 0.0, max_depth: float = math.inf) -> np.ndarray:
    """Pixels holding a usable depth: finite, > 0 and within [min_depth, max_depth]."""
    # Comparisons with NaN are False, so one lower and one upper comparison also reject NaN and inf.
    valid = (depth_m >= min_depth) if min_depth > 0.0 else (depth_m > 0.0)
    valid &= (depth_m <= max_depth) if math.isfinite(max_depth) else (depth_m < np.inf)
    return valid


def depth_to_image_msg(
    depth_m: np.ndarray,
    header: Header,
    encoding: str = "32FC1",
    min_depth: float = 0.0,
    max_depth: float = math.inf,
) -> Image:
    """Wrap an (H, W) depth map in metres in a REP 118 depth Image (little endian).

    32FC1: metres, NaN where the depth is invalid (non-finite, <= 0 or outside [min_depth,
    max_depth]). 16UC1: millimetres rounded to the nearest integer and clipped to 65535, 0 where
    invalid (so a depth under 0.5 mm also reads back as "no reading").
    """
    if encoding not in DEPTH_ENCODINGS:
        raise ImageConversionError(
            f"unsupported depth encoding '{encoding}'; supported: {', '.join(DEPTH_ENCODINGS)}"
        )
    depth = _check_depth_array(depth_m)
    valid = valid_depth_mask(depth, min_depth, max_depth)
    height, width = depth.shape
    dtype = np.dtype("<f4" if encoding == "32FC1" else "<u2")
    # Written straight into the message's buffer, which starts zeroed: 0 is "no reading" in 16UC1.
    data = zeroed_uint8_array(height * width * dtype.itemsize)
    pixels = np.frombuffer(data, dtype=dtype).reshape(height, width)
    if encoding == "32FC1":
        np.copyto(pixels, depth)
        np.copyto(pixels, np.float32(np.nan), where=~valid)
    else:
        # Round half up by adding 0.5 before the truncating cast (valid depths are positive).
        millimetres = depth * np.float32(1000.0)
        millimetres += np.float32(0.5)
        np.minimum(millimetres, np.float32(65535.0), out=millimetres)
        np.copyto(pixels, millimetres, where=valid, casting="unsafe")
    del pixels
    msg = new_message(
        Image, header=header, height=height, width=width, encoding=encoding, is_bigendian=0,
        step=width * dtype.itemsize,
    )
    msg.data = data
    return msg


def image_msg_to_depth(msg: Image) -> np.ndarray:
    """Read a REP 118 depth Image into a new (H, W) float32 array in metres, NaN where no reading.

    32FC1 is taken as metres; 16UC1 / mono16 as millimetres with 0 meaning no reading.
    """
    if msg.encoding == "32FC1":
        dtype = np.dtype(">f4" if msg.is_bigendian else "<f4")
        return _pixel_grid(msg, 1, dtype)[:, :, 0].astype(np.float32)
    if msg.encoding in ("16UC1", "mono16"):
        millimetres = _pixel_grid(msg, 1, _uint16_dtype(msg))[:, :, 0]
        depth = millimetres.astype(np.float32) * np.float32(0.001)
        depth[millimetres == 0] = np.nan
        return depth
    raise ImageConversionError(
        f"unsupported depth encoding '{msg.encoding}'; supported: 32FC1, 16UC1, mono16"
    )


def colorize_depth(
    depth_m: np.ndarray, min_depth: float, max_depth: float, colormap: str = "turbo"
) -> np.ndarray:
    """Render a depth map as an (H, W, 3) uint8 BGR picture for viewing.

    min_depth gets the top of the colour map (warm for turbo/jet), max_depth the bottom; depths
    outside the range take the end colours; non-finite or non-positive depths are black.
    """
    code = _COLORMAP_CODES.get(colormap)
    if code is None:
        raise ValueError(f"unknown colormap '{colormap}'; valid names: {', '.join(COLORMAP_NAMES)}")
    if not (math.isfinite(min_depth) and math.isfinite(max_depth) and max_depth > min_depth):
        raise ValueError(
            f"colorize_depth needs finite min_depth < max_depth, got {min_depth} and {max_depth}"
        )
    depth = _check_depth_array(depth_m)
    valid = valid_depth_mask(depth)
    scale = 255.0 / (max_depth - min_depth)
    # level = saturate_uint8((max_depth - depth) * scale) in one OpenCV pass (NaN -> 0, masked below);
    # the second source is weighted 0 and only there because addWeighted needs two.
    level = cv2.addWeighted(depth, -scale, depth, 0.0, max_depth * scale, dtype=cv2.CV_8U)
    bgr = cv2.applyColorMap(level, code)
    # Masked-off pixels of a freshly allocated output are zero: black; much faster than bgr[~valid] = 0.
    return cv2.bitwise_and(bgr, bgr, mask=valid.view(np.uint8))
