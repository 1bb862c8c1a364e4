"""Image / CompressedImage <-> numpy conversions, REP 118 depth images and depth colouring."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from space_clip_ros import msgs

HEIGHT, WIDTH = 6, 7
PAD_BYTE = 0xAB  # padding filled with a value that would show up if it leaked into the pixels


@pytest.fixture
def header() -> Header:
    return Header(stamp=Time(sec=12, nanosec=345), frame_id="camera_optical_frame")


@pytest.fixture
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def image_from_pixels(pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    """A real Image message holding ``pixels`` (H, W[, C]) with ``pad`` extra bytes per row."""
    pixels = np.asarray(pixels)
    if pixels.dtype.itemsize > 1:
        pixels = pixels.astype(pixels.dtype.newbyteorder(">" if bigendian else "<"))
    height, width = pixels.shape[:2]
    row = pixels.reshape(height, -1).view(np.uint8).reshape(height, -1)
    padded = np.full((height, row.shape[1] + pad), PAD_BYTE, dtype=np.uint8)
    padded[:, : row.shape[1]] = row
    return Image(
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=int(bigendian),
        step=padded.shape[1],
        data=padded.tobytes(),
    )


def grey_of(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 1].copy()


def encode(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """``rgb`` laid out as ``encoding`` stores it (alpha 200 where there is one)."""
    alpha = np.full(rgb.shape[:2] + (1,), 200, dtype=np.uint8)
    return {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1],
        "8UC3": rgb[..., ::-1],
        "rgba8": np.concatenate([rgb, alpha], axis=2),
        "bgra8": np.concatenate([rgb[..., ::-1], alpha], axis=2),
        "8UC4": np.concatenate([rgb[..., ::-1], alpha], axis=2),
    }[encoding]


@pytest.mark.parametrize("pad", [0, 5])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "8UC3", "rgba8", "bgra8", "8UC4"])
def test_colour_encodings_decode_to_rgb(rgb, encoding, pad):
    msg = image_from_pixels(encode(rgb, encoding), encoding, pad=pad)
    out = msgs.image_msg_to_rgb(msg)
    assert out.dtype == np.uint8 and out.shape == (HEIGHT, WIDTH, 3)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("encoding", ["mono8", "8UC1"])
def test_mono8_decodes_to_three_equal_channels(rgb, encoding, pad):
    grey = grey_of(rgb)
    out = msgs.image_msg_to_rgb(image_from_pixels(grey, encoding, pad=pad))
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], grey)


@pytest.mark.parametrize("pad", [1, 2])  # an odd pad leaves the 16-bit rows misaligned
@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
def test_16_bit_grey_keeps_the_high_byte(encoding, bigendian, pad):
    values = np.arange(HEIGHT * WIDTH, dtype=np.uint16).reshape(HEIGHT, WIDTH) * 1531
    out = msgs.image_msg_to_rgb(image_from_pixels(values, encoding, pad=pad, bigendian=bigendian))
    np.testing.assert_array_equal(out[..., 0], (values >> 8).astype(np.uint8))
    np.testing.assert_array_equal(out[..., 2], out[..., 0])


def test_decoded_array_is_a_copy_not_a_view_of_the_message(rgb):
    msg = image_from_pixels(rgb, "rgb8")
    out = msgs.image_msg_to_rgb(msg)
    out[:] = 0
    np.testing.assert_array_equal(msgs.image_msg_to_rgb(msg), rgb)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_rgb_to_image_msg_round_trip(rgb, header, encoding):
    msg = msgs.rgb_to_image_msg(rgb, header, encoding)
    assert (msg.height, msg.width, msg.step) == (HEIGHT, WIDTH, WIDTH * 3)
    assert msg.encoding == encoding and msg.is_bigendian == 0
    assert msg.header.frame_id == "camera_optical_frame" and msg.header.stamp.nanosec == 345
    stored = np.frombuffer(msg.data, np.uint8).reshape(HEIGHT, WIDTH, 3)
    np.testing.assert_array_equal(stored, rgb if encoding == "rgb8" else rgb[..., ::-1])
    np.testing.assert_array_equal(msgs.image_msg_to_rgb(msg), rgb)


def test_rgb_to_mono8(rgb, header):
    grey = grey_of(rgb)
    msg = msgs.rgb_to_image_msg(grey, header, "mono8")
    assert msg.step == WIDTH
    np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint8).reshape(HEIGHT, WIDTH), grey)
    # An RGB array is converted with the ITU-R BT.601 luma weights.
    msg = msgs.rgb_to_image_msg(rgb, header, "mono8")
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    stored = np.frombuffer(msg.data, np.uint8).reshape(HEIGHT, WIDTH).astype(np.float64)
    assert np.abs(stored - luma).max() <= 1.0


def test_unsupported_encoding_names_the_encoding_and_every_supported_one(rgb):
    msg = image_from_pixels(rgb[..., :1].astype(np.float32), "32FC1")
    with pytest.raises(msgs.ImageConversionError, match=r"unsupported encoding '32FC1'; supported: rgb8, bgr8") as info:
        msgs.image_msg_to_rgb(msg)
    listed = str(info.value).split("supported: ", 1)[1].split(", ")
    assert listed == list(msgs.SUPPORTED_COLOUR_ENCODINGS)


def test_data_shorter_than_step_times_height_is_reported():
    msg = Image(height=480, width=640, encoding="bgr8", step=1920, data=bytes(1000))
    with pytest.raises(
        msgs.ImageConversionError,
        match=r"image data has 1000 bytes but step\*height = 921600 \(step 1920, height 480\)",
    ):
        msgs.image_msg_to_rgb(msg)


def test_step_smaller_than_a_row_is_reported():
    msg = Image(height=2, width=4, encoding="rgb8", step=10, data=bytes(24))
    with pytest.raises(msgs.ImageConversionError, match=r"step 10 is smaller than width\*bytes_per_pixel = 12"):
        msgs.image_msg_to_rgb(msg)


@pytest.mark.parametrize("height, width", [(0, 4), (4, 0)])
def test_zero_sized_image_is_refused(height, width):
    msg = Image(height=height, width=width, encoding="rgb8", step=width * 3, data=bytes(12))
    with pytest.raises(msgs.ImageConversionError, match="empty"):
        msgs.image_msg_to_rgb(msg)


# Camera encodings (YUV, Bayer, 16-bit colour). Every message is built from a known RGB picture by
# conversions written here (the BT.601 integer formulas, a Bayer mosaic sampled from the picture),
# never by the package. The package's result must equal OpenCV's conversion of the same bytes
# exactly (the codes below are cv_bridge's), and be close to the picture within the format's loss.

CAM_HEIGHT, CAM_WIDTH = 24, 32
YUV422_CODES = {  # ROS encoding -> (bytes of a pixel pair, OpenCV conversion)
    "yuv422": (("U", "Y0", "V", "Y1"), cv2.COLOR_YUV2RGB_UYVY),
    "uyvy": (("U", "Y0", "V", "Y1"), cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": (("Y0", "U", "Y1", "V"), cv2.COLOR_YUV2RGB_YUY2),
    "yuyv": (("Y0", "U", "Y1", "V"), cv2.COLOR_YUV2RGB_YUY2),
}
NV420_CODES = {"nv12": ("UV", cv2.COLOR_YUV2RGB_NV12), "nv21": ("VU", cv2.COLOR_YUV2RGB_NV21)}
# ROS names a Bayer pattern by its top-left 2x2 block, OpenCV by the block at (1, 1) (cv_bridge's map).
BAYER_CODES = {
    "rggb": cv2.COLOR_BayerBG2RGB,
    "bggr": cv2.COLOR_BayerRG2RGB,
    "gbrg": cv2.COLOR_BayerGR2RGB,
    "grbg": cv2.COLOR_BayerGB2RGB,
}


@pytest.fixture
def picture() -> np.ndarray:
    """A smooth RGB picture (two ramps and a wave): at most ~5 levels from one pixel to the next."""
    rows, columns = np.mgrid[0:CAM_HEIGHT, 0:CAM_WIDTH].astype(np.float64)
    red = 40 + 150 * columns / (CAM_WIDTH - 1)
    green = 210 - 110 * rows / (CAM_HEIGHT - 1)
    blue = 128 + 60 * np.sin(columns / 12.0 + rows / 16.0)
    return np.rint(np.stack([red, green, blue], axis=2)).astype(np.uint8)


def rgb_to_yuv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full-resolution Y, U, V of ``rgb`` by the BT.601 studio-range 8-bit integer formula."""
    red, green, blue = (rgb[..., channel].astype(np.int64) for channel in range(3))
    y = ((66 * red + 129 * green + 25 * blue + 128) >> 8) + 16
    u = ((-38 * red - 74 * green + 112 * blue + 128) >> 8) + 128
    v = ((112 * red - 94 * green - 18 * blue + 128) >> 8) + 128
    return y, u, v


def yuv_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """YUV -> RGB per pixel with the constants of OpenCV's BT.601 conversions (20-bit fixed point)."""
    luma = np.maximum(y.astype(np.int64) - 16, 0) * 1220542 + (1 << 19)
    u, v = u.astype(np.int64) - 128, v.astype(np.int64) - 128
    rgb = np.stack([luma + 1673527 * v, luma - 852492 * v - 409993 * u, luma + 2116026 * u], axis=-1) >> 20
    return np.clip(rgb, 0, 255).astype(np.uint8)


def block_mean(plane: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """Mean (rounded) of each rows x columns block: how a camera subsamples chroma."""
    height, width = plane.shape
    blocks = plane.reshape(height // rows, rows, width // columns, columns).sum(axis=(1, 3))
    return (blocks + rows * columns // 2) // (rows * columns)


def upsampled(plane: np.ndarray, rows: int, columns: int) -> np.ndarray:
    return plane.repeat(rows, axis=0).repeat(columns, axis=1)


def max_error(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max())


def semi_planar_image(luma: np.ndarray, chroma: np.ndarray, encoding: str, pad: int, factor: int) -> Image:
    """A Y plane then a chroma plane, rows padded: Y rows of ``step``, chroma rows of factor * step."""
    height, width = luma.shape
    step = width + pad
    planes = []
    for plane, stride in ((luma, step), (chroma, factor * step)):
        padded = np.full((plane.shape[0], stride), PAD_BYTE, dtype=np.uint8)
        padded[:, : plane.shape[1]] = plane
        planes.append(padded.tobytes())
    return Image(height=height, width=width, encoding=encoding, step=step, data=b"".join(planes))


@pytest.mark.parametrize("pad", [0, 6])
@pytest.mark.parametrize("encoding", list(YUV422_CODES))
def test_yuv422_matches_opencv_and_the_picture(picture, encoding, pad):
    order, code = YUV422_CODES[encoding]
    y, u, v = rgb_to_yuv(picture)
    u, v = block_mean(u, 1, 2), block_mean(v, 1, 2)  # one (U, V) per pair of pixels
    samples = {"Y0": y[:, 0::2], "Y1": y[:, 1::2], "U": u, "V": v}
    packed = np.stack([samples[name] for name in order], axis=2).astype(np.uint8).reshape(CAM_HEIGHT, CAM_WIDTH, 2)
    out = msgs.image_msg_to_rgb(image_from_pixels(packed, encoding, pad=pad))
    np.testing.assert_array_equal(out, cv2.cvtColor(packed, code))
    np.testing.assert_array_equal(out, yuv_to_rgb(y, upsampled(u, 1, 2), upsampled(v, 1, 2)))
    # Loss: 8-bit studio-range YUV (1-2 levels) and one chroma pair for two pixels that differ by up to
    # ~5 levels in this picture.
    assert max_error(out, picture) <= 6


@pytest.mark.parametrize("pad", [0, 4])
@pytest.mark.parametrize("encoding", list(NV420_CODES))
def test_nv12_nv21_match_opencv_and_the_picture(picture, encoding, pad):
    order, code = NV420_CODES[encoding]
    y, u, v = rgb_to_yuv(picture)
    u, v = block_mean(u, 2, 2), block_mean(v, 2, 2)
    first, second = (u, v) if order == "UV" else (v, u)
    chroma = np.stack([first, second], axis=2).reshape(CAM_HEIGHT // 2, CAM_WIDTH).astype(np.uint8)
    luma = y.astype(np.uint8)
    out = msgs.image_msg_to_rgb(semi_planar_image(luma, chroma, encoding, pad, factor=1))
    np.testing.assert_array_equal(out, cv2.cvtColor(np.concatenate([luma, chroma]), code))
    np.testing.assert_array_equal(out, yuv_to_rgb(y, upsampled(u, 2, 2), upsampled(v, 2, 2)))
    assert max_error(out, picture) <= 7  # as 4:2:2, with chroma shared by 2x2 pixels


@pytest.mark.parametrize("pad", [0, 3])
def test_nv24_uses_opencvs_yuv_arithmetic_and_matches_the_picture(picture, pad):
    y, u, v = rgb_to_yuv(picture)
    chroma = np.stack([u, v], axis=2).reshape(CAM_HEIGHT, 2 * CAM_WIDTH).astype(np.uint8)
    out = msgs.image_msg_to_rgb(semi_planar_image(y.astype(np.uint8), chroma, "nv24", pad, factor=2))
    np.testing.assert_array_equal(out, yuv_to_rgb(y, u, v))
    assert max_error(out, picture) <= 2  # full-resolution chroma: only the 8-bit YUV rounding

    # OpenCV has no NV24 conversion; with chroma constant over 2x2 blocks NV24 is NV12 in disguise.
    u2, v2 = block_mean(u, 2, 2), block_mean(v, 2, 2)
    full = np.stack([upsampled(u2, 2, 2), upsampled(v2, 2, 2)], axis=2).reshape(CAM_HEIGHT, -1)
    out = msgs.image_msg_to_rgb(semi_planar_image(y.astype(np.uint8), full.astype(np.uint8), "nv24", pad, factor=2))
    nv12 = np.concatenate([y, np.stack([u2, v2], axis=2).reshape(CAM_HEIGHT // 2, CAM_WIDTH)]).astype(np.uint8)
    np.testing.assert_array_equal(out, cv2.cvtColor(nv12, cv2.COLOR_YUV2RGB_NV12))


def test_yuv_formats_follow_opencvs_formula_over_the_whole_byte_range():
    # Random bytes reach the clipped corners of the formula that a natural picture does not.
    rng = np.random.default_rng(5)
    y = rng.integers(0, 256, (8, 10), dtype=np.uint8)
    u, v = rng.integers(0, 256, (2, 8, 10), dtype=np.uint8)
    chroma = np.stack([u, v], axis=2).reshape(8, 20)
    nv24 = semi_planar_image(y, chroma, "nv24", 0, 2)
    np.testing.assert_array_equal(msgs.image_msg_to_rgb(nv24), yuv_to_rgb(y, u, v))
    pairs = np.stack([y[:, 0::2], u[:, 0::2], y[:, 1::2], v[:, 0::2]], axis=2).reshape(8, 10, 2)
    expected = yuv_to_rgb(y, upsampled(u[:, 0::2], 1, 2), upsampled(v[:, 0::2], 1, 2))
    np.testing.assert_array_equal(msgs.image_msg_to_rgb(image_from_pixels(pairs, "yuyv")), expected)


def mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """The Bayer mosaic a sensor with ``pattern`` (ROS naming: the top-left 2x2 block) records."""
    out = np.empty(rgb.shape[:2], dtype=rgb.dtype)
    for index, colour in enumerate(pattern):
        row, column = divmod(index, 2)
        out[row::2, column::2] = rgb[row::2, column::2, "rgb".index(colour)]
    return out


@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("pattern", list(BAYER_CODES))
def test_bayer8_matches_opencv_and_the_picture(picture, pattern, pad):
    raw = mosaic(picture, pattern)
    out = msgs.image_msg_to_rgb(image_from_pixels(raw, f"bayer_{pattern}8", pad=pad))
    np.testing.assert_array_equal(out, cv2.cvtColor(raw, BAYER_CODES[pattern]))
    # Bilinear demosaicing of a smooth picture, away from the border OpenCV extrapolates.
    inner = (slice(2, -2), slice(2, -2))
    assert max_error(out[inner], picture[inner]) <= 3
    # Independently of cv_bridge's table: every other OpenCV pattern gives a far worse picture.
    for other in set(BAYER_CODES.values()) - {BAYER_CODES[pattern]}:
        assert max_error(cv2.cvtColor(raw, other)[inner], picture[inner]) > 40


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("pattern", list(BAYER_CODES))
def test_bayer16_is_demosaiced_at_16_bits_then_keeps_the_high_byte(picture, pattern, bigendian):
    low = np.random.default_rng(3).integers(0, 256, picture.shape, dtype=np.uint16)
    deep = picture.astype(np.uint16) * 256 + low
    raw = mosaic(deep, pattern)
    out = msgs.image_msg_to_rgb(image_from_pixels(raw, f"bayer_{pattern}16", pad=3, bigendian=bigendian))
    np.testing.assert_array_equal(out, (cv2.cvtColor(raw, BAYER_CODES[pattern]) >> 8).astype(np.uint8))
    inner = (slice(2, -2), slice(2, -2))
    assert max_error(out[inner], picture[inner]) <= 3


@pytest.mark.parametrize("pad", [0, 1])
@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("encoding", ["rgb16", "bgr16", "rgba16", "bgra16"])
def test_16_bit_colour_keeps_the_high_byte(picture, encoding, bigendian, pad):
    deep = picture.astype(np.uint16) * 256 + np.random.default_rng(4).integers(0, 256, picture.shape, np.uint16)
    alpha = np.full(picture.shape[:2] + (1,), 51234, dtype=np.uint16)
    stored = {
        "rgb16": deep,
        "bgr16": deep[..., ::-1],
        "rgba16": np.concatenate([deep, alpha], axis=2),
        "bgra16": np.concatenate([deep[..., ::-1], alpha], axis=2),
    }[encoding]
    out = msgs.image_msg_to_rgb(image_from_pixels(stored, encoding, pad=pad, bigendian=bigendian))
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, picture)


def test_every_camera_encoding_is_listed_as_supported():
    camera_encodings = {"yuv422", "yuv422_yuy2", "uyvy", "yuyv", "nv12", "nv21", "nv24", "rgb16", "bgr16",
                        "rgba16", "bgra16"}
    camera_encodings |= {f"bayer_{pattern}{bits}" for pattern in BAYER_CODES for bits in (8, 16)}
    assert camera_encodings <= set(msgs.SUPPORTED_COLOUR_ENCODINGS)
    assert len(set(msgs.SUPPORTED_COLOUR_ENCODINGS)) == len(msgs.SUPPORTED_COLOUR_ENCODINGS)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(encoding="yuyv", width=5, height=2, step=10, data=bytes(20)), "odd width 5"),
        (dict(encoding="nv21", width=4, height=3, step=4, data=bytes(24)), r"4x3; .* must be even"),
        (
            dict(encoding="nv21", width=4, height=4, step=4, data=bytes(20)),
            r"data has 20 bytes but 'nv21' needs 24: a Y plane of step\*height = 4\*4 bytes "
            r"and a chroma plane of 2 rows of 4 bytes",
        ),
        (dict(encoding="nv24", width=4, height=2, step=3, data=bytes(24)), "step 3 is smaller than the width 4"),
        (dict(encoding="uyvy", width=4, height=2, step=6, data=bytes(16)), r"step 6 is smaller than .* = 8"),
        (dict(encoding="bayer_rggb16", width=4, height=2, step=8, data=bytes(10)), r"data has 10 bytes"),
    ],
)
def test_malformed_camera_images_are_reported(fields, message):
    with pytest.raises(msgs.ImageConversionError, match=message):
        msgs.image_msg_to_rgb(Image(**fields))


def test_rgb_to_image_msg_refuses_bad_arrays_and_encodings(rgb, header):
    with pytest.raises(msgs.ImageConversionError, match="uint8"):
        msgs.rgb_to_image_msg(rgb.astype(np.float32), header)
    with pytest.raises(msgs.ImageConversionError, match=r"\(H, W, 3\)"):
        msgs.rgb_to_image_msg(rgb[..., 0], header, "rgb8")
    with pytest.raises(msgs.ImageConversionError, match="cannot write encoding 'rgba8'"):
        msgs.rgb_to_image_msg(rgb, header, "rgba8")


@pytest.fixture
def smooth_rgb() -> np.ndarray:
    # JPEG is lossy; a smooth picture keeps the error small enough to check tightly.
    rows, columns = np.mgrid[0:48, 0:64]
    return np.stack([rows * 5, columns * 4, 128 + 0 * rows], axis=2).astype(np.uint8)


def test_png_compressed_round_trip_is_exact(smooth_rgb, header):
    msg = msgs.rgb_to_compressed_msg(smooth_rgb, header, "png")
    assert msg.format == "rgb8; png compressed bgr8"
    assert msg.header.frame_id == header.frame_id
    # The stream holds BGR like image_transport's compressed plugin writes it.
    bgr = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(bgr[..., ::-1], smooth_rgb)
    np.testing.assert_array_equal(msgs.compressed_msg_to_rgb(msg), smooth_rgb)


def test_jpeg_compressed_round_trip_is_close(smooth_rgb, header):
    msg = msgs.rgb_to_compressed_msg(smooth_rgb, header, "jpeg", jpeg_quality=95)
    assert msg.format == "rgb8; jpeg compressed bgr8"
    assert bytes(msg.data[:2]) == b"\xff\xd8"  # JPEG start-of-image marker
    out = msgs.compressed_msg_to_rgb(msg)
    assert out.shape == smooth_rgb.shape
    assert np.abs(out.astype(int) - smooth_rgb.astype(int)).mean() < 2.0


def test_compressed_errors_name_the_problem(header):
    with pytest.raises(msgs.ImageConversionError, match="has no data"):
        msgs.compressed_msg_to_rgb(CompressedImage(format="jpeg", data=b""))
    with pytest.raises(msgs.ImageConversionError, match="could not decode 9 bytes"):
        msgs.compressed_msg_to_rgb(CompressedImage(format="jpeg", data=b"not a jpg"))
    with pytest.raises(msgs.ImageConversionError, match="unsupported compressed format 'bmp'"):
        msgs.rgb_to_compressed_msg(np.zeros((2, 2, 3), np.uint8), header, "bmp")


@pytest.fixture
def depth_with_holes() -> np.ndarray:
    """A 3x4 depth map in metres with every kind of invalid value."""
    return np.array(
        [
            [1.5, 0.0, -2.0, np.nan],
            [np.inf, 0.05, 12.0, 2.25],
            [0.1, 10.0, 3.2344, 3.2346],
        ],
        dtype=np.float32,
    )


def test_32fc1_is_metres_with_nan_where_invalid(depth_with_holes, header):
    msg = msgs.depth_to_image_msg(depth_with_holes, header, "32FC1", min_depth=0.1, max_depth=10.0)
    assert (msg.encoding, msg.is_bigendian, msg.step) == ("32FC1", 0, 4 * 4)
    assert (msg.height, msg.width) == (3, 4)
    stored = np.frombuffer(msg.data, dtype="<f4").reshape(3, 4)
    expected = depth_with_holes.copy()
    # invalid: 0, negative, NaN, inf, below min_depth (0.05), above max_depth (12); bounds included
    expected[0, 1:] = np.nan
    expected[1, :3] = np.nan
    np.testing.assert_array_equal(stored, expected)
    np.testing.assert_array_equal(msgs.image_msg_to_depth(msg), expected)


def test_16uc1_is_rounded_millimetres_with_zero_where_invalid(depth_with_holes, header):
    msg = msgs.depth_to_image_msg(depth_with_holes, header, "16UC1", min_depth=0.1, max_depth=10.0)
    assert (msg.encoding, msg.is_bigendian, msg.step) == ("16UC1", 0, 2 * 4)
    stored = np.frombuffer(msg.data, dtype="<u2").reshape(3, 4)
    expected = np.array([[1500, 0, 0, 0], [0, 0, 0, 2250], [100, 10000, 3234, 3235]], dtype=np.uint16)
    np.testing.assert_array_equal(stored, expected)
    back = msgs.image_msg_to_depth(msg)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(back), expected == 0)
    np.testing.assert_allclose(back[expected > 0], expected[expected > 0] / 1000.0, rtol=1e-6)


def test_16uc1_saturates_at_65535_millimetres(header):
    msg = msgs.depth_to_image_msg(np.array([[70.0, 65.535]], np.float32), header, "16UC1")
    np.testing.assert_array_equal(np.frombuffer(msg.data, dtype="<u2"), [65535, 65535])


def test_image_msg_to_depth_reads_big_endian_and_padded_rows():
    depth = np.array([[1.25, 0.0], [np.nan, 7.5]], dtype=np.float32)
    msg = image_from_pixels(depth, "32FC1", pad=4, bigendian=True)
    np.testing.assert_array_equal(msgs.image_msg_to_depth(msg), depth)
    millimetres = np.array([[1250, 0], [65535, 3]], dtype=np.uint16)
    back = msgs.image_msg_to_depth(image_from_pixels(millimetres, "mono16", pad=2, bigendian=True))
    np.testing.assert_allclose(back, [[1.25, np.nan], [65.535, 0.003]], rtol=1e-6)


def test_depth_errors_name_the_problem(header):
    with pytest.raises(msgs.ImageConversionError, match="unsupported depth encoding '8UC1'"):
        msgs.depth_to_image_msg(np.ones((2, 2), np.float32), header, "8UC1")
    with pytest.raises(msgs.ImageConversionError, match=r"\(H, W\) floating-point depth"):
        msgs.depth_to_image_msg(np.ones((2, 2, 1), np.float32), header)
    with pytest.raises(msgs.ImageConversionError, match="unsupported depth encoding 'rgb8'"):
        msgs.image_msg_to_depth(image_from_pixels(np.zeros((2, 2, 3), np.uint8), "rgb8"))
    with pytest.raises(msgs.ImageConversionError, match=r"data has 8 bytes but step\*height = 16"):
        msgs.image_msg_to_depth(Image(height=2, width=2, encoding="32FC1", step=8, data=bytes(8)))


def test_colorize_depth_maps_near_to_the_top_of_the_colormap_and_invalid_to_black():
    depth = np.array([[1.0, 5.0, 0.5, 9.0], [np.nan, 0.0, -1.0, np.inf]], dtype=np.float32)
    bgr = msgs.colorize_depth(depth, min_depth=1.0, max_depth=5.0, colormap="turbo")
    assert bgr.dtype == np.uint8 and bgr.shape == (2, 4, 3)
    lut = cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(1, 256), cv2.COLORMAP_TURBO)[0]
    np.testing.assert_array_equal(bgr[0, 0], lut[255])  # min_depth: top of the map (turbo: red)
    np.testing.assert_array_equal(bgr[0, 1], lut[0])  # max_depth: bottom
    np.testing.assert_array_equal(bgr[0, 2], lut[255])  # nearer than the range: clamped
    np.testing.assert_array_equal(bgr[0, 3], lut[0])  # farther than the range: clamped
    assert bgr[0, 0, 2] > bgr[0, 0, 0]  # near is warm: more red than blue
    np.testing.assert_array_equal(bgr[1], 0)


def test_colormap_names_and_unknown_name():
    for name in ("turbo", "jet", "viridis", "inferno", "magma", "plasma"):
        assert name in msgs.COLORMAP_NAMES
    depth = np.full((2, 2), 2.0, np.float32)
    assert not np.array_equal(msgs.colorize_depth(depth, 1, 3, "jet"), msgs.colorize_depth(depth, 1, 3, "viridis"))
    with pytest.raises(ValueError, match="unknown colormap 'rainbow2'; valid names: .*turbo"):
        msgs.colorize_depth(depth, 1.0, 3.0, "rainbow2")
    with pytest.raises(ValueError, match="min_depth < max_depth"):
        msgs.colorize_depth(depth, 3.0, 3.0)
    with pytest.raises(ValueError, match="min_depth < max_depth"):
        msgs.colorize_depth(depth, 0.0, math.inf)


def test_built_messages_survive_rclpy_serialization(rgb, header):
    from rclpy.serialization import deserialize_message, serialize_message

    depth_msg = msgs.depth_to_image_msg(np.array([[1.5, np.nan], [0.0, 2.0]], np.float32), header, "16UC1")
    back = deserialize_message(serialize_message(depth_msg), Image)
    assert (back.encoding, back.step, back.header.frame_id) == ("16UC1", 4, header.frame_id)
    np.testing.assert_array_equal(np.frombuffer(back.data, "<u2"), [1500, 0, 0, 2000])
    colour_back = deserialize_message(serialize_message(msgs.rgb_to_image_msg(rgb, header, "bgr8")), Image)
    np.testing.assert_array_equal(msgs.image_msg_to_rgb(colour_back), rgb)
    png = msgs.rgb_to_compressed_msg(rgb, header, "png")
    png_back = deserialize_message(serialize_message(png), CompressedImage)
    assert png_back.format == "rgb8; png compressed bgr8"
    np.testing.assert_array_equal(msgs.compressed_msg_to_rgb(png_back), rgb)
