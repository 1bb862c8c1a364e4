"""space-clip-bag writes the issue-13 outputs (confidence, flying-pixel filter, REP 117, scale
anchor, stamped embedding) into real rosbag2 files, with the node's output flags.

The model is ros_helpers' tiny checkpoint (depth varying over a few metres, random auxiliary
heads): what is checked is that each option reaches the bag as the node's builder makes it, not
depth quality (test_depth_quality.py and docs/ros_node.md measure that).
"""

from __future__ import annotations

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from ros_helpers import make_tiny_checkpoint
from rosbags.rosbag2 import StoragePlugin, Writer
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Float32MultiArray, Header
from test_bag_tool import CAMERA, FRAME_ID, START_NS, TYPESTORE, _frame, _stamp, read_bag, write_camera_bag
from test_bag_tool import run_tool as run_bag_tool

from space_clip_ros.cli import bag as bag_cli
from space_clip_ros.inference.runtime.predictor import DepthPredictor
from space_clip_ros.msgs import image_msg_to_depth, pointcloud2_to_xyz_grid
from space_clip_ros.outputs.cloud import PointCloudBuilder
from space_clip_ros.outputs.flying_pixels import flying_pixel_mask

IMAGE_TOPIC = "/camera/color/image_raw"
NS = "/camera/color"


def run_tool(*args: object) -> int:
    """The bag tool on the exact model (--no-optimize), which the ``predictor`` fixture runs too."""
    return run_bag_tool(*args, "--no-optimize")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """make_tiny_checkpoint's decoder with auxiliary heads scaled like its final head, so that the
    confidence map spreads over (0, 1] instead of sitting at ~0 (a random head predicts ~0 m)."""
    import torch

    from space_clip_ros.model import load_checkpoint, save_checkpoint

    path, _weights = make_tiny_checkpoint(tmp_path_factory.mktemp("bag_quality"))
    state, record = load_checkpoint(path)
    for head in (0, 1):
        state[f"aux_heads.{head}.net.1.weight"] = state[f"aux_heads.{head}.net.1.weight"] * 100.0
        state[f"aux_heads.{head}.net.1.bias"] = torch.full_like(state[f"aux_heads.{head}.net.1.bias"], 2.5)
    save_checkpoint(path, state, record)
    return path


@pytest.fixture(scope="module")
def predictor(checkpoint):
    return DepthPredictor.from_checkpoint(checkpoint, device="cpu")


def _messages(messages, topic, message_type):
    return [deserialize_message(raw, message_type) for _, raw in messages[topic]]


def test_confidence_maps_and_a_confidence_gated_cloud(tmp_path, checkpoint, predictor):
    source = tmp_path / "in"
    write_camera_bag(source, frames=3)
    output = tmp_path / "out"
    threshold = 0.5
    assert run_tool(source, output, checkpoint, "--image-topic", IMAGE_TOPIC, "--confidence",
                    "--points-min-confidence", str(threshold)) == 0
    messages, connections = read_bag(output)
    assert connections[f"{NS}/depth/confidence"].msgtype == "sensor_msgs/msg/Image"
    image_times = [t for t, _ in messages[IMAGE_TOPIC]]
    assert [t for t, _ in messages[f"{NS}/depth/confidence"]] == image_times
    gated = 0
    for index, (confidence, cloud) in enumerate(zip(_messages(messages, f"{NS}/depth/confidence", Image),
                                                    _messages(messages, f"{NS}/points", PointCloud2), strict=True)):
        assert confidence.header.stamp == _stamp(index) and confidence.header.frame_id == FRAME_ID
        assert (confidence.encoding, confidence.height, confidence.width) == ("32FC1", CAMERA.height, CAMERA.width)
        values = image_msg_to_depth(confidence)
        expected = predictor.infer(_frame(index)[None], with_confidence=True).confidence[0].numpy()
        np.testing.assert_allclose(values, expected, rtol=1e-5)
        assert values.min() > 0.0 and values.max() <= 1.0
        z = pointcloud2_to_xyz_grid(cloud)[..., 2]
        low = values < threshold
        assert np.isnan(z[low]).all()
        gated += np.count_nonzero(low)
    assert gated > 0


def test_flying_pixels_leave_the_clouds_and_optionally_the_depth_images(tmp_path, checkpoint):
    source = tmp_path / "in"
    write_camera_bag(source, frames=2)
    plain, filtered, invalid = tmp_path / "plain", tmp_path / "filtered", tmp_path / "invalid"
    assert run_tool(source, plain, checkpoint, "--image-topic", IMAGE_TOPIC) == 0
    assert run_tool(source, filtered, checkpoint, "--image-topic", IMAGE_TOPIC, "--flying-pixel-threshold", "0.1") == 0
    assert run_tool(source, invalid, checkpoint, "--image-topic", IMAGE_TOPIC, "--flying-pixel-threshold", "0.1",
                    "--flying-pixels-invalid") == 0
    runs = [read_bag(path)[0] for path in (plain, filtered, invalid)]
    depth = [_messages(m, f"{NS}/depth/image", Image) for m in runs]
    clouds = [_messages(m, f"{NS}/points", PointCloud2) for m in runs]
    removed = 0
    for index in range(2):
        values = image_msg_to_depth(depth[0][index])
        assert np.isfinite(values).all()  # the tiny model's depth is in range everywhere
        flying = flying_pixel_mask(values, 0.1)
        removed += np.count_nonzero(flying)
        # The depth image keeps flying pixels unless asked; the cloud drops them.
        assert bytes(depth[1][index].data) == bytes(depth[0][index].data)
        z = pointcloud2_to_xyz_grid(clouds[1][index])[..., 2]
        assert np.isnan(z[flying]).all() and np.isfinite(z[~flying]).all()
        marked = image_msg_to_depth(depth[2][index])
        assert np.isnan(marked[flying]).all() and np.isfinite(marked[~flying]).all()
    assert removed > 0


def test_rep117_depth_images_carry_infinities(tmp_path, checkpoint):
    source = tmp_path / "in"
    write_camera_bag(source, frames=2)
    nan_run, rep_run = tmp_path / "nan", tmp_path / "rep117"
    args = ("--image-topic", IMAGE_TOPIC, "--min-depth", "2.5", "--max-depth", "3.0")
    assert run_tool(source, nan_run, checkpoint, *args) == 0
    assert run_tool(source, rep_run, checkpoint, *args, "--out-of-range", "rep117") == 0
    (nan_msgs, _), (rep_msgs, _) = read_bag(nan_run), read_bag(rep_run)
    for nan_image, rep_image in zip(_messages(nan_msgs, f"{NS}/depth/image", Image),
                                    _messages(rep_msgs, f"{NS}/depth/image", Image), strict=True):
        nan_values, rep_values = image_msg_to_depth(nan_image), image_msg_to_depth(rep_image)
        assert not np.isinf(nan_values).any()
        assert np.isposinf(rep_values).any() and np.isneginf(rep_values).any()
        finite = np.isfinite(nan_values)
        np.testing.assert_array_equal(rep_values[finite], nan_values[finite])
        assert not np.isnan(rep_values).any()  # the model always estimates: no "no estimate" pixel
    # The clouds are the same: +-Inf pixels are not points.
    clouds = [_messages(m, f"{NS}/points", PointCloud2) for m in (nan_msgs, rep_msgs)]
    assert [bytes(c.data) for c in clouds[0]] == [bytes(c.data) for c in clouds[1]]


def _write_bag_with_anchor_clouds(path, predictor, factor: float, frames: int = 3) -> None:
    """write_camera_bag's recording plus, before each image, an anchor cloud: the back-projection of
    ``factor`` x the model's depth of that image (so the metric scale is ``factor``)."""
    written = write_camera_bag(path.with_name("plain"), frames=frames)
    builder = PointCloudBuilder()
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {}
        for topic, kind in ((IMAGE_TOPIC, "Image"), (f"{NS}/camera_info", "CameraInfo"),
                            (f"{NS}/anchor_points", "PointCloud2")):
            connections[topic] = writer.add_connection(topic, f"sensor_msgs/msg/{kind}", typestore=TYPESTORE)
        for index in range(frames):
            depth = predictor.predict(_frame(index)) * np.float32(factor)
            cloud = builder.build(depth, CAMERA, Header(stamp=_stamp(index), frame_id=FRAME_ID), organized=False,
                                  stride=4)
            writer.write(connections[f"{NS}/anchor_points"], START_NS + index * 100_000_000 - 10,
                         serialize_message(cloud))
        for topic in (IMAGE_TOPIC, f"{NS}/camera_info"):
            for log_time, raw in written[topic]:
                writer.write(connections[topic], log_time, raw)


def test_sparse_points_anchor_rescales_depth_from_the_bags_anchor_clouds(tmp_path, checkpoint, predictor):
    source = tmp_path / "in"
    _write_bag_with_anchor_clouds(source, predictor, factor=1.5)
    output = tmp_path / "out"
    assert run_tool(source, output, checkpoint, "--image-topic", IMAGE_TOPIC, "--scale-anchor", "sparse_points",
                    "--max-depth", "80") == 0
    messages, _ = read_bag(output)
    for index, image in enumerate(_messages(messages, f"{NS}/depth/image", Image)):
        np.testing.assert_allclose(image_msg_to_depth(image), 1.5 * predictor.predict(_frame(index)), rtol=1e-4)


def test_scale_anchor_arguments_are_checked(tmp_path, checkpoint, capsys):
    source = tmp_path / "in"
    write_camera_bag(source, frames=1)
    code = run_tool(source, tmp_path / "a", checkpoint, "--image-topic", IMAGE_TOPIC, "--scale-anchor", "ground_plane")
    assert code == bag_cli.EXIT_USAGE and "camera_height" in capsys.readouterr().err
    code = run_tool(source, tmp_path / "b", checkpoint, "--image-topic", IMAGE_TOPIC, "--scale-anchor", "sparse_points")
    assert code == bag_cli.EXIT_USAGE and "--anchor-points-topic" in capsys.readouterr().err
    # A plane-less scene keeps scale 1: the run succeeds and the depth is the model's.
    assert run_tool(source, tmp_path / "c", checkpoint, "--image-topic", IMAGE_TOPIC, "--scale-anchor",
                    "ground_plane", "--camera-height", "1.2") == 0
    assert run_tool(source, tmp_path / "d", checkpoint, "--image-topic", IMAGE_TOPIC) == 0
    with_anchor, without = read_bag(tmp_path / "c")[0], read_bag(tmp_path / "d")[0]
    # Compared as messages: two serialisations of one message may differ in their CDR padding bytes.
    assert [bytes(m.data) for m in _messages(with_anchor, f"{NS}/depth/image", Image)] == \
        [bytes(m.data) for m in _messages(without, f"{NS}/depth/image", Image)]


def test_embeddings_stamped_and_unstamped_and_colour_pictures(tmp_path, checkpoint, predictor, capsys):
    source = tmp_path / "in"
    write_camera_bag(source, frames=2)
    output = tmp_path / "out"
    assert run_tool(source, output, checkpoint, "--image-topic", IMAGE_TOPIC, "--embedding", "--colored") == 0
    messages, connections = read_bag(output)
    assert connections[f"{NS}/clip/image_embedding"].msgtype == "std_msgs/msg/Float32MultiArray"
    stamped = _messages(messages, f"{NS}/clip/image_embedding_stamped", Image)
    plain = _messages(messages, f"{NS}/clip/image_embedding", Float32MultiArray)
    colored = _messages(messages, f"{NS}/depth/colored", Image)
    assert len(stamped) == len(plain) == len(colored) == 2
    for index, (vector, array) in enumerate(zip(stamped, plain, strict=True)):
        assert vector.header.stamp == _stamp(index) and vector.header.frame_id == FRAME_ID
        expected = predictor.infer(_frame(index)[None], with_embedding=True).embedding[0].numpy()
        assert (vector.encoding, vector.height, vector.width) == ("32FC1", 1, expected.size)
        np.testing.assert_allclose(np.frombuffer(bytes(vector.data), "<f4"), expected, rtol=1e-5)
        np.testing.assert_array_equal(np.asarray(array.data, dtype=np.float32),
                                      np.frombuffer(bytes(vector.data), "<f4"))
        assert colored[index].encoding == "bgr8" and colored[index].header.stamp == _stamp(index)
    out = capsys.readouterr().out
    assert f"2 -> {NS}/clip/image_embedding_stamped" in out and f"2 -> {NS}/depth/colored" in out
