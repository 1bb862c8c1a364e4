"""Image / CompressedImage <-> numpy conversions, REP 118 depth images and depth colouring."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from space_clip_ros.msgs import (
    COLORMAP_NAMES,
    ImageConversionError,
    colorize_depth,
    compressed_msg_to_rgb,
    depth_to_image_msg,
    image_msg_to_depth,
    image_msg_to_rgb,
    rgb_to_compressed_msg,
    rgb_to_image_msg,
)

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
    out = image_msg_to_rgb(msg)
    assert out.dtype == np.uint8 and out.shape == (HEIGHT, WIDTH, 3)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("encoding", ["mono8", "8UC1"])
def test_mono8_decodes_to_three_equal_channels(rgb, encoding, pad):
    grey = grey_of(rgb)
    out = image_msg_to_rgb(image_from_pixels(grey, encoding, pad=pad))
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], grey)


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
def test_16_bit_grey_keeps_the_high_byte(encoding, bigendian):
    values = np.arange(HEIGHT * WIDTH, dtype=np.uint16).reshape(HEIGHT, WIDTH) * 1531
    out = image_msg_to_rgb(image_from_pixels(values, encoding, pad=2, bigendian=bigendian))
    np.testing.assert_array_equal(out[..., 0], (values >> 8).astype(np.uint8))
    np.testing.assert_array_equal(out[..., 2], out[..., 0])


def test_decoded_array_is_a_copy_not_a_view_of_the_message(rgb):
    msg = image_from_pixels(rgb, "rgb8")
    out = image_msg_to_rgb(msg)
    out[:] = 0
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_rgb_to_image_msg_round_trip(rgb, header, encoding):
    msg = rgb_to_image_msg(rgb, header, encoding)
    assert (msg.height, msg.width, msg.step) == (HEIGHT, WIDTH, WIDTH * 3)
    assert msg.encoding == encoding and msg.is_bigendian == 0
    assert msg.header.frame_id == "camera_optical_frame" and msg.header.stamp.nanosec == 345
    stored = np.frombuffer(msg.data, np.uint8).reshape(HEIGHT, WIDTH, 3)
    np.testing.assert_array_equal(stored, rgb if encoding == "rgb8" else rgb[..., ::-1])
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)


def test_rgb_to_mono8(rgb, header):
    grey = grey_of(rgb)
    msg = rgb_to_image_msg(grey, header, "mono8")
    assert msg.step == WIDTH
    np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint8).reshape(HEIGHT, WIDTH), grey)
    # An RGB array is converted with the ITU-R BT.601 luma weights.
    msg = rgb_to_image_msg(rgb, header, "mono8")
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    stored = np.frombuffer(msg.data, np.uint8).reshape(HEIGHT, WIDTH).astype(np.float64)
    assert np.abs(stored - luma).max() <= 1.0


def test_unsupported_encoding_names_the_encoding_and_the_supported_ones(rgb):
    msg = image_from_pixels(rgb[..., :2].copy(), "yuv422")
    with pytest.raises(ImageConversionError, match=r"unsupported encoding 'yuv422'; supported: rgb8, bgr8"):
        image_msg_to_rgb(msg)


def test_data_shorter_than_step_times_height_is_reported():
    msg = Image(height=480, width=640, encoding="bgr8", step=1920, data=bytes(1000))
    with pytest.raises(
        ImageConversionError,
        match=r"image data has 1000 bytes but step\*height = 921600 \(step 1920, height 480\)",
    ):
        image_msg_to_rgb(msg)


def test_step_smaller_than_a_row_is_reported():
    msg = Image(height=2, width=4, encoding="rgb8", step=10, data=bytes(24))
    with pytest.raises(ImageConversionError, match=r"step 10 is smaller than width\*bytes_per_pixel = 12"):
        image_msg_to_rgb(msg)


@pytest.mark.parametrize("height, width", [(0, 4), (4, 0)])
def test_zero_sized_image_is_refused(height, width):
    msg = Image(height=height, width=width, encoding="rgb8", step=width * 3, data=bytes(12))
    with pytest.raises(ImageConversionError, match="empty"):
        image_msg_to_rgb(msg)


def test_rgb_to_image_msg_refuses_bad_arrays_and_encodings(rgb, header):
    with pytest.raises(ImageConversionError, match="uint8"):
        rgb_to_image_msg(rgb.astype(np.float32), header)
    with pytest.raises(ImageConversionError, match=r"\(H, W, 3\)"):
        rgb_to_image_msg(rgb[..., 0], header, "rgb8")
    with pytest.raises(ImageConversionError, match="cannot write encoding 'rgba8'"):
        rgb_to_image_msg(rgb, header, "rgba8")


@pytest.fixture
def smooth_rgb() -> np.ndarray:
    # JPEG is lossy; a smooth picture keeps the error small enough to check tightly.
    rows, columns = np.mgrid[0:48, 0:64]
    return np.stack([rows * 5, columns * 4, 128 + 0 * rows], axis=2).astype(np.uint8)


def test_png_compressed_round_trip_is_exact(smooth_rgb, header):
    msg = rgb_to_compressed_msg(smooth_rgb, header, "png")
    assert msg.format == "rgb8; png compressed bgr8"
    assert msg.header.frame_id == header.frame_id
    # The stream holds BGR like image_transport's compressed plugin writes it.
    bgr = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(bgr[..., ::-1], smooth_rgb)
    np.testing.assert_array_equal(compressed_msg_to_rgb(msg), smooth_rgb)


def test_jpeg_compressed_round_trip_is_close(smooth_rgb, header):
    msg = rgb_to_compressed_msg(smooth_rgb, header, "jpeg", jpeg_quality=95)
    assert msg.format == "rgb8; jpeg compressed bgr8"
    assert bytes(msg.data[:2]) == b"\xff\xd8"  # JPEG start-of-image marker
    out = compressed_msg_to_rgb(msg)
    assert out.shape == smooth_rgb.shape
    assert np.abs(out.astype(int) - smooth_rgb.astype(int)).mean() < 2.0


def test_compressed_errors_name_the_problem(header):
    with pytest.raises(ImageConversionError, match="has no data"):
        compressed_msg_to_rgb(CompressedImage(format="jpeg", data=b""))
    with pytest.raises(ImageConversionError, match="could not decode 9 bytes"):
        compressed_msg_to_rgb(CompressedImage(format="jpeg", data=b"not a jpg"))
    with pytest.raises(ImageConversionError, match="unsupported compressed format 'bmp'"):
        rgb_to_compressed_msg(np.zeros((2, 2, 3), np.uint8), header, "bmp")


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
    msg = depth_to_image_msg(depth_with_holes, header, "32FC1", min_depth=0.1, max_depth=10.0)
    assert (msg.encoding, msg.is_bigendian, msg.step) == ("32FC1", 0, 4 * 4)
    assert (msg.height, msg.width) == (3, 4)
    stored = np.frombuffer(msg.data, dtype="<f4").reshape(3, 4)
    expected = depth_with_holes.copy()
    # invalid: 0, negative, NaN, inf, below min_depth (0.05), above max_depth (12); bounds included
    expected[0, 1:] = np.nan
    expected[1, :3] = np.nan
    np.testing.assert_array_equal(stored, expected)
    np.testing.assert_array_equal(image_msg_to_depth(msg), expected)


def test_16uc1_is_rounded_millimetres_with_zero_where_invalid(depth_with_holes, header):
    msg = depth_to_image_msg(depth_with_holes, header, "16UC1", min_depth=0.1, max_depth=10.0)
    assert (msg.encoding, msg.is_bigendian, msg.step) == ("16UC1", 0, 2 * 4)
    stored = np.frombuffer(msg.data, dtype="<u2").reshape(3, 4)
    expected = np.array([[1500, 0, 0, 0], [0, 0, 0, 2250], [100, 10000, 3234, 3235]], dtype=np.uint16)
    np.testing.assert_array_equal(stored, expected)
    back = image_msg_to_depth(msg)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(back), expected == 0)
    np.testing.assert_allclose(back[expected > 0], expected[expected > 0] / 1000.0, rtol=1e-6)


def test_16uc1_saturates_at_65535_millimetres(header):
    msg = depth_to_image_msg(np.array([[70.0, 65.535]], np.float32), header, "16UC1")
    np.testing.assert_array_equal(np.frombuffer(msg.data, dtype="<u2"), [65535, 65535])


def test_image_msg_to_depth_reads_big_endian_and_padded_rows():
    depth = np.array([[1.25, 0.0], [np.nan, 7.5]], dtype=np.float32)
    msg = image_from_pixels(depth, "32FC1", pad=4, bigendian=True)
    np.testing.assert_array_equal(image_msg_to_depth(msg), depth)
    millimetres = np.array([[1250, 0], [65535, 3]], dtype=np.uint16)
    back = image_msg_to_depth(image_from_pixels(millimetres, "mono16", pad=2, bigendian=True))
    np.testing.assert_allclose(back, [[1.25, np.nan], [65.535, 0.003]], rtol=1e-6)


def test_depth_errors_name_the_problem(header):
    with pytest.raises(ImageConversionError, match="unsupported depth encoding '8UC1'"):
        depth_to_image_msg(np.ones((2, 2), np.float32), header, "8UC1")
    with pytest.raises(ImageConversionError, match=r"\(H, W\) floating-point depth"):
        depth_to_image_msg(np.ones((2, 2, 1), np.float32), header)
    with pytest.raises(ImageConversionError, match="unsupported depth encoding 'rgb8'"):
        image_msg_to_depth(image_from_pixels(np.zeros((2, 2, 3), np.uint8), "rgb8"))
    with pytest.raises(ImageConversionError, match=r"data has 8 bytes but step\*height = 16"):
        image_msg_to_depth(Image(height=2, width=2, encoding="32FC1", step=8, data=bytes(8)))


def test_colorize_depth_maps_near_to_the_top_of_the_colormap_and_invalid_to_black():
    depth = np.array([[1.0, 5.0, 0.5, 9.0], [np.nan, 0.0, -1.0, np.inf]], dtype=np.float32)
    bgr = colorize_depth(depth, min_depth=1.0, max_depth=5.0, colormap="turbo")
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
        assert name in COLORMAP_NAMES
    depth = np.full((2, 2), 2.0, np.float32)
    assert not np.array_equal(colorize_depth(depth, 1, 3, "jet"), colorize_depth(depth, 1, 3, "viridis"))
    with pytest.raises(ValueError, match="unknown colormap 'rainbow2'; valid names: .*turbo"):
        colorize_depth(depth, 1.0, 3.0, "rainbow2")
    with pytest.raises(ValueError, match="min_depth < max_depth"):
        colorize_depth(depth, 3.0, 3.0)
    with pytest.raises(ValueError, match="min_depth < max_depth"):
        colorize_depth(depth, 0.0, math.inf)


def test_built_messages_survive_rclpy_serialization(rgb, header):
    from rclpy.serialization import deserialize_message, serialize_message

    depth_msg = depth_to_image_msg(np.array([[1.5, np.nan], [0.0, 2.0]], np.float32), header, "16UC1")
    back = deserialize_message(serialize_message(depth_msg), Image)
    assert (back.encoding, back.step, back.header.frame_id) == ("16UC1", 4, header.frame_id)
    np.testing.assert_array_equal(np.frombuffer(back.data, "<u2"), [1500, 0, 0, 2000])
    colour_back = deserialize_message(serialize_message(rgb_to_image_msg(rgb, header, "bgr8")), Image)
    np.testing.assert_array_equal(image_msg_to_rgb(colour_back), rgb)
    png = rgb_to_compressed_msg(rgb, header, "png")
    png_back = deserialize_message(serialize_message(png), CompressedImage)
    assert png_back.format == "rgb8; png compressed bgr8"
    np.testing.assert_array_equal(compressed_msg_to_rgb(png_back), rgb)
