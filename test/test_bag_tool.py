"""space-clip-bag: depth, depth camera info and point clouds added to recorded bags.

Bags are written here with rosbags (MCAP and SQLite3), from messages built by ``msgs`` and
serialised by rclpy, like a real recording. The model is the tiny test backbone with a randomly
initialised decoder (its last bias set so depth is about 2 m everywhere) saved as a checkpoint:
shapes, stamps, bytes and geometry are what is checked, not depth quality.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import CompressionFormat, CompressionMode, Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header, String

from space_clip_ros.bags.bag_depth import BagDepthOptions, CameraInfoIndex, image_namespace
from space_clip_ros.cli import bag as bag_cli
from space_clip_ros.msgs import (
    CameraIntrinsics,
    camera_info_from_intrinsics,
    image_msg_to_depth,
    pointcloud2_to_xyz_grid,
    rgb_to_compressed_msg,
    rgb_to_image_msg,
)

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
CAMERA = CameraIntrinsics(fx=60.0, fy=60.0, cx=31.5, cy=23.5, width=64, height=48)
FRAME_ID = "camera_color_optical_frame"
SENSOR_QOS = Qos(
    QosHistory.KEEP_LAST, 7, QosReliability.BEST_EFFORT, QosDurability.VOLATILE,
    QosTime(0, 0), QosTime(0, 0), QosLiveliness.AUTOMATIC, QosTime(0, 0), False,
)
START_NS = 1_700_000_000_000_000_000
PERIOD_NS = 100_000_000


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, tiny_model_config) -> Path:
    """A tiny-backbone decoder checkpoint with random weights (the checkpoint path is exercised)."""
    import torch

    from space_clip_ros.model import create_model, make_record, save_checkpoint

    torch.manual_seed(0)
    model = create_model(tiny_model_config)
    with torch.no_grad():  # random but positive depth (about 2 m) so every pixel is valid
        final_conv = model.decoder.head.net[1]
        final_conv.weight.mul_(0.01)
        final_conv.bias.fill_(2.0)
    record = make_record(model, train_focal=CAMERA.fx, train_image_size=[CAMERA.height, CAMERA.width],
                         dataset="test", min_depth=0.1, max_depth=10.0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_checkpoint(path, model.decoder.state_dict(), record)
    return path


def _frame(index: int, size: tuple[int, int] = (CAMERA.height, CAMERA.width)) -> np.ndarray:
    rng = np.random.default_rng(index)
    return rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)


def _stamp(index: int) -> Time:
    ns = START_NS + index * PERIOD_NS + 12345  # the header stamp differs from the log time
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def write_camera_bag(
    path: Path,
    storage: str = "mcap",
    frames: int = 6,
    compressed: bool = False,
    image_size: tuple[int, int] = (CAMERA.height, CAMERA.width),
    camera_info: bool = True,
    message_compression: bool = False,
    garbage_image: int | None = None,
) -> dict[str, list[tuple[int, bytes]]]:
    """A bag like a camera driver's recording; returns topic -> [(log time, raw bytes)]."""
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    image_topic = "/camera/color/image_raw" + ("/compressed" if compressed else "")
    image_type = "sensor_msgs/msg/" + ("CompressedImage" if compressed else "Image")
    written: dict[str, list[tuple[int, bytes]]] = {}
    intrinsics = CAMERA.scaled_to(image_size[1], image_size[0])
    writer = Writer(path, version=9, storage_plugin=plugin)
    if message_compression:
        writer.set_compression(CompressionMode.MESSAGE, CompressionFormat.ZSTD)
    with writer:
        image_conn = writer.add_connection(image_topic, image_type, typestore=TYPESTORE,
                                           offered_qos_profiles=[SENSOR_QOS])
        info_conn = writer.add_connection("/camera/color/camera_info", "sensor_msgs/msg/CameraInfo",
                                          typestore=TYPESTORE, offered_qos_profiles=[SENSOR_QOS])
        note_conn = writer.add_connection("/notes", "std_msgs/msg/String", typestore=TYPESTORE)
        writer.add_connection("/never_published", "std_msgs/msg/String", typestore=TYPESTORE)

        def put(connection, log_time: int, message) -> None:
            raw = serialize_message(message)
            damaged = garbage_image is not None and log_time == START_NS + garbage_image * PERIOD_NS
            if damaged and connection is image_conn:
                raw = b"\x00\x01\x00\x00" + b"not an image" * 3  # a record damaged on its own
            writer.write(connection, log_time, raw)
            written.setdefault(connection.topic, []).append((log_time, raw))

        put(note_conn, START_NS - 1, String(data="recording started"))
        for index in range(frames):
            header = Header(stamp=_stamp(index), frame_id=FRAME_ID)
            rgb = _frame(index, image_size)
            image = rgb_to_compressed_msg(rgb, header, "jpeg") if compressed else rgb_to_image_msg(rgb, header)
            log_time = START_NS + index * PERIOD_NS
            put(image_conn, log_time, image)
            if camera_info:
                # Logged after its image, as drivers often publish it, with the image's stamp.
                put(info_conn, log_time + 1000, camera_info_from_intrinsics(intrinsics, header))
    return written


def read_bag(path: Path) -> tuple[dict[str, list[tuple[int, bytes]]], dict[str, object]]:
    """topic -> [(log time, raw bytes)] in log-time order, and topic -> connection."""
    messages: dict[str, list[tuple[int, bytes]]] = {}
    with Reader(path) as reader:
        connections = {c.topic: c for c in reader.connections}
        for connection, log_time, raw in reader.messages():
            messages.setdefault(connection.topic, []).append((log_time, bytes(raw)))
    return messages, connections


def run_tool(input_path: Path, output_path: Path, checkpoint: Path, *extra: str) -> int:
    return bag_cli.main([str(input_path), str(output_path), "--checkpoint", str(checkpoint),
                         "--device", "cpu", "--no-progress", *extra])


@pytest.mark.slow  # runs space-clip-bag with a model
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_gets_depth_and_keeps_originals(tmp_path, tiny_checkpoint, storage):
    source = tmp_path / "in"
    original = write_camera_bag(source, storage, frames=5)
    output = tmp_path / "out"
    assert run_tool(source, output, tiny_checkpoint, "--image-topic", "/camera/color/image_raw",
                    "--batch-size", "2") == 0

    assert (output / "metadata.yaml").exists()
    assert any(output.glob("*.mcap" if storage == "mcap" else "*.db3"))  # same storage as the input
    messages, connections = read_bag(output)
    _, source_connections = read_bag(source)
    for topic, expected in original.items():
        assert messages[topic] == expected, f"{topic} changed"  # same bytes, same log times
    for topic, connection in source_connections.items():
        copy = connections[topic]
        assert (copy.msgtype, copy.digest) == (connection.msgtype, connection.digest)
        assert copy.ext.offered_qos_profiles == connection.ext.offered_qos_profiles
    assert "/never_published" in connections  # topics without messages are kept too

    image_times = [t for t, _ in original["/camera/color/image_raw"]]
    depth = messages["/camera/color/depth/image"]
    infos = messages["/camera/color/depth/camera_info"]
    clouds = messages["/camera/color/points"]
    assert [t for t, _ in depth] == image_times
    assert [t for t, _ in infos] == image_times
    assert [t for t, _ in clouds] == image_times
    for index, ((_, raw_depth), (_, raw_info), (_, raw_cloud)) in enumerate(zip(depth, infos, clouds, strict=True)):
        depth_msg = deserialize_message(raw_depth, Image)
        info_msg = deserialize_message(raw_info, CameraInfo)
        cloud_msg = deserialize_message(raw_cloud, PointCloud2)
        for header in (depth_msg.header, info_msg.header, cloud_msg.header):
            assert header.stamp == _stamp(index)
            assert header.frame_id == FRAME_ID
        assert (depth_msg.encoding, depth_msg.height, depth_msg.width) == ("32FC1", CAMERA.height, CAMERA.width)
        values = image_msg_to_depth(depth_msg)
        finite = values[np.isfinite(values)]
        assert finite.size > 0 and finite.min() >= 0.1 and finite.max() <= 10.0
        assert np.allclose(np.asarray(info_msg.k).reshape(3, 3), CAMERA.matrix())
        assert (cloud_msg.height, cloud_msg.width) == (CAMERA.height, CAMERA.width)
        # The cloud is the back-projection of the depth image: z equals the depth.
        z = pointcloud2_to_xyz_grid(cloud_msg)[..., 2]
        assert np.array_equal(np.isnan(z), np.isnan(values))
        assert np.allclose(z[np.isfinite(z)], values[np.isfinite(values)])


@pytest.mark.slow  # runs space-clip-bag with a model
def test_compressed_image_topic(tmp_path, tiny_checkpoint):
    source = tmp_path / "in"
    original = write_camera_bag(source, "mcap", frames=3, compressed=True)
    output = tmp_path / "out"
    assert run_tool(source, output, tiny_checkpoint, "--image-topic", "/camera/color/image_raw/compressed",
                    "--depth-topic", "/estimated/depth", "--points-topic", "/estimated/points",
                    "--depth-encoding", "16UC1") == 0
    messages, _ = read_bag(output)
    assert messages["/camera/color/image_raw/compressed"] == original["/camera/color/image_raw/compressed"]
    depth = [deserialize_message(raw, Image) for _, raw in messages["/estimated/depth"]]
    assert [m.header.stamp for m in depth] == [_stamp(i) for i in range(3)]
    assert {(m.encoding, m.height, m.width) for m in depth} == {("16UC1", CAMERA.height, CAMERA.width)}
    assert len(messages["/estimated/points"]) == 3
    assert len(messages["/camera/color/depth/camera_info"]) == 3


@pytest.mark.slow  # compressed bags
def test_message_compression_is_kept(tmp_path, tiny_checkpoint):
    source = tmp_path / "in"
    original = write_camera_bag(source, "sqlite3", frames=2, message_compression=True)
    output = tmp_path / "out"
    assert run_tool(source, output, tiny_checkpoint, "--image-topic", "/camera/color/image_raw") == 0
    with Reader(output) as reader:
        assert (reader.compression_mode, reader.compression_format) == ("message", "zstd")
    messages, _ = read_bag(output)
    assert messages["/camera/color/image_raw"] == original["/camera/color/image_raw"]
    assert len(messages["/camera/color/points"]) == 2


@pytest.mark.slow  # runs space-clip-bag with a model
def test_an_undecodable_image_is_skipped_and_still_copied(tmp_path, tiny_checkpoint, capsys):
    source = tmp_path / "in"
    original = write_camera_bag(source, "mcap", frames=3, garbage_image=1)
    output = tmp_path / "out"
    assert run_tool(source, output, tiny_checkpoint, "--image-topic", "/camera/color/image_raw") == 0
    assert "(1 could not be decoded)" in capsys.readouterr().out
    messages, _ = read_bag(output)
    assert messages["/camera/color/image_raw"] == original["/camera/color/image_raw"]  # garbage included
    image_times = [t for t, _ in original["/camera/color/image_raw"]]
    assert [t for t, _ in messages["/camera/color/depth/image"]] == [image_times[0], image_times[2]]


@pytest.mark.slow  # runs space-clip-bag with a model
def test_without_camera_info_writes_depth_only(tmp_path, tiny_checkpoint, capsys):
    source = tmp_path / "in"
    write_camera_bag(source, "mcap", frames=2, camera_info=False)
    output = tmp_path / "out"
    assert run_tool(source, output, tiny_checkpoint, "--image-topic", "/camera/color/image_raw") == 0
    messages, connections = read_bag(output)
    assert len(messages["/camera/color/depth/image"]) == 2
    # The camera_info topic exists but holds nothing: no empty output topics are made.
    assert "/camera/color/depth/camera_info" not in connections
    assert "/camera/color/points" not in connections
    assert "no camera info   2 image(s)" in capsys.readouterr().out


def _truncate(path: Path, keep_fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])


@pytest.mark.slow  # writes, cuts and salvages two bags
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_bag_is_reported_and_partial_output_kept(tmp_path, tiny_checkpoint, capsys, storage):
    source = tmp_path / "in"
    # 160x120 frames: 57.6 kB each, so the MCAP file has several 1 MB chunks to cut between.
    frames = 40
    original = write_camera_bag(source, storage, frames=frames, image_size=(120, 160))
    storage_file = next(source.glob("*.mcap" if storage == "mcap" else "*.db3"))
    _truncate(storage_file, 0.6)
    output = tmp_path / "out"

    code = run_tool(source, output, tiny_checkpoint, "--image-topic", "/camera/color/image_raw",
                    "--batch-size", "8")
    captured = capsys.readouterr()
    assert code == bag_cli.EXIT_DAMAGED_INPUT
    assert "the input bag is damaged" in captured.err
    assert "recovered" in captured.err

    messages, _ = read_bag(output)  # the partial output is a valid bag
    images = messages["/camera/color/image_raw"]
    assert 0 < len(images) < frames
    # What was kept is the beginning of the recording, byte for byte.
    assert images == original["/camera/color/image_raw"][: len(images)]
    added = ("/camera/color/depth/image", "/camera/color/depth/camera_info", "/camera/color/points")
    originals_kept = sum(len(kept) for topic, kept in messages.items() if topic not in added)
    assert f"recovered {originals_kept} " in captured.err
    assert [t for t, _ in messages["/camera/color/depth/image"]] == [t for t, _ in images]


@pytest.mark.slow  # runs space-clip-bag with a model
def test_missing_topic_lists_the_image_topics(tmp_path, tiny_checkpoint, capsys):
    source = tmp_path / "in"
    write_camera_bag(source, "mcap", frames=1)
    code = run_tool(source, tmp_path / "out", tiny_checkpoint, "--image-topic", "/camera/image")
    assert code == bag_cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "/camera/image is not in the bag" in err and "/camera/color/image_raw" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # runs space-clip-bag with a model
def test_existing_output_topic_is_refused(tmp_path, tiny_checkpoint, capsys):
    source = tmp_path / "in"
    write_camera_bag(source, "mcap", frames=1)
    code = run_tool(source, tmp_path / "out", tiny_checkpoint, "--image-topic", "/camera/color/image_raw",
                    "--depth-topic", "/notes")
    assert code == bag_cli.EXIT_USAGE
    assert "already exist" in capsys.readouterr().err


@pytest.mark.slow  # runs space-clip-bag with a model
def test_single_mcap_file_without_metadata_is_read(tmp_path, tiny_checkpoint):
    source = tmp_path / "in"
    original = write_camera_bag(source, "mcap", frames=2)
    (source / "metadata.yaml").unlink()  # a recorder that never closed the bag
    output = tmp_path / "out"
    assert run_tool(source, output, tiny_checkpoint, "--image-topic", "/camera/color/image_raw") == 0
    messages, _ = read_bag(output)
    assert messages["/camera/color/image_raw"] == original["/camera/color/image_raw"]
    assert len(messages["/camera/color/points"]) == 2


def test_camera_info_index_prefers_equal_stamp_then_nearest_log_time():
    index = CameraInfoIndex()
    for i, fx in enumerate((100.0, 200.0, 300.0)):
        info = CameraInfo(header=Header(stamp=Time(sec=10 + i)), k=[fx, 0, 1, 0, fx, 1, 0, 0, 1])
        index.add(info, log_time_ns=1000 * i)
    assert index.for_image(stamp_ns=11 * 1_000_000_000, log_time_ns=0).k[0] == 200.0
    assert index.for_image(stamp_ns=5, log_time_ns=1900).k[0] == 300.0
    assert index.for_image(stamp_ns=5, log_time_ns=-50).k[0] == 100.0
    assert CameraInfoIndex().for_image(0, 0) is None


def test_namespace_of_image_topics():
    assert image_namespace("/camera/color/image_raw") == "/camera/color"
    assert image_namespace("/camera/color/image_raw/compressed") == "/camera/color"
    assert image_namespace("/image") == ""
    assert BagDepthOptions(image_topic="/x").batch_size >= 1
    assert math.isfinite(CAMERA.fx)


def test_argument_errors_come_before_torch_is_imported(run_python):
    out = run_python("""
        import sys
        from space_clip_ros.cli import bag
        assert bag.main(['in', 'out', '--image-topic', '/x', '--batch-size', '0']) == bag.EXIT_USAGE
        assert 'torch' not in sys.modules
    """)
    assert out.returncode == 0, out.stderr
    assert "--batch-size must be >= 1 and --points-stride >= 0 (0: auto)" in out.stderr
