"""``calibration_images: auto`` over DDS: a depth node without kept frames keeps its camera's frames
while it serves depth, switches to the int8 decoder calibrated on them without a restart (where the
CPU has int8 dot products), and the next start of the same node hands them to the path at once."""

from __future__ import annotations

from typing import Any

import pytest
import ros_helpers as rh
from ros_helpers import CX, CY, FRAME_ID, FX, FY, HEIGHT, WIDTH, camera_info_message, make_stamp, pattern_image
from sensor_msgs.msg import CameraInfo, Image

from space_clip_ros.inference.rewrites.decoder_int8 import KEPT_FRAMES, calibration_files, kept_frames_folder
from space_clip_ros.inference.runtime.cpu_features import has_int8_dot_product

pytestmark = [pytest.mark.ros, pytest.mark.timeout(600), pytest.mark.slow]  # node processes over DDS


def start_node(directory, checkpoint, weights, namespace: str, cache, domain: int, log_name: str):
    command = rh.depth_node_command(
        namespace=namespace,
        image=f"{namespace}/camera/color/image_raw",
        camera_info=f"{namespace}/camera/color/camera_info",
        checkpoint=str(checkpoint),
        # backend onnxruntime: no auto measurement of the tiny model; it takes the int8 decoder with frames
        overrides=rh.tiny_node_overrides(weights, calibration_images="auto", auto_cache=str(cache),
                                         backend="onnxruntime"),
    )
    return rh.NodeProcess(command, rh.node_environment(domain), directory / log_name)


def test_the_node_keeps_its_camera_frames_and_the_next_start_uses_them(tmp_path):
    checkpoint, weights = rh.make_tiny_checkpoint(tmp_path)
    domain = rh.module_domain_id(__name__)
    namespace = rh.unique_namespace()
    cache = tmp_path / "cache" / "auto.json"
    folder = kept_frames_folder(cache, f"{namespace}/space_clip_depth")

    node = start_node(tmp_path, checkpoint, weights, namespace, cache, domain, "first.log")
    client = rh.RosTestClient(domain, name="calibration_client")
    try:
        node.wait_for_log(r"calibration_images auto: no frames of this camera kept yet; keeping "
                          rf"{KEPT_FRAMES}, 1 s apart, in \S+camera_frames", timeout=120)
        image_pub = client.publisher(f"{namespace}/camera/color/image_raw", Image)
        info_pub = client.publisher(f"{namespace}/camera/color/camera_info", CameraInfo)
        depth = client.collect(f"{namespace}/depth/image", Image)
        client.wait_for_subscribers(image_pub)
        info = camera_info_message(WIDTH, HEIGHT, FX, FY, CX, CY, FRAME_ID)
        sent = [0]

        def publish_frame() -> Any:
            stamp = make_stamp(100 + sent[0] // 5, (sent[0] % 5) * 200_000_000)
            info.header.stamp = stamp
            info_pub.publish(info)
            image_pub.publish(rh.image_message(pattern_image(HEIGHT, WIDTH, seed=sent[0]), "rgb8", stamp, FRAME_ID))
            sent[0] += 1
            return folder.is_dir()

        # Frames at ~5 Hz until the whole set appears (one kept per second: ~12 s).
        rh.wait_until(publish_frame, timeout=120, what=f"{KEPT_FRAMES} frames kept in {folder}",
                      details=node.log, interval=0.2)
        assert depth.messages, "the node served depth while it kept frames"
        kept = calibration_files(folder)
        assert len(kept) == KEPT_FRAMES and not folder.with_name(folder.name + ".partial").exists()
        node.wait_for_log(rf"kept {KEPT_FRAMES} camera frames in \S+, for calibrating the int8 decoder", timeout=30)
        # The path is chosen again with the frames, in the background, while depth keeps coming.
        if has_int8_dot_product():
            node.wait_for_log(r"switched the inference path to onnxruntime .*int8 decoder convolutions \(static, "
                              rf"calibrated on {KEPT_FRAMES} camera frames\)", timeout=120)
        else:  # without VNNI / AMX the decoder stays float: same path
            node.wait_for_log(r"with the kept camera frames the inference path stays onnxruntime", timeout=120)
        served = len(depth.messages)

        def served_again() -> bool:
            publish_frame()
            return len(depth.messages) >= served + 3

        rh.wait_until(served_again, timeout=60, what="depth on the path chosen with the kept frames",
                      details=node.log, interval=0.2)
    finally:
        client.close()
        assert node.stop() == 0, node.log()

    again = start_node(tmp_path, checkpoint, weights, namespace, cache, domain, "second.log")
    try:
        again.wait_for_log(rf"calibration_images auto: using the camera frames kept in {folder}", timeout=120)
        again.wait_for_log(r"\[INFO\].*SPACE-CLIP .* Input: ", timeout=120)  # started in full on them
        if has_int8_dot_product():
            assert "int8 decoder convolutions (static, calibrated on" in again.log()
    finally:
        assert again.stop() == 0, again.log()
