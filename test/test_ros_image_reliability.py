"""``image_reliability``: the image subscription's reliability, matched to the camera driver's.

A best-effort reader loses a whole frame with any lost fragment, and under Fast DDS a 640x480 rgb8
frame (0.9 MB) travels in fragments: measured on this 2-core machine, 0.47 of 5 frames/s reached a
best-effort subscription, 4.97 a reliable one. ``auto`` subscribes reliable when every publisher
offers reliable, best effort otherwise (and while there is none), and follows the publishers. The
same holds for the node's own large outputs: it warns about best-effort readers of them.
"""

from __future__ import annotations

import time

import pytest
import ros_helpers as rh
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import ReliabilityPolicy
from ros_helpers import CX, CY, FRAME_ID, FX, FY, WIDTH, camera_info_message, make_stamp, pattern_image
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from space_clip_ros.ros.qos import best_effort_readers, image_input_qos, matching_reliability

RELIABLE, BEST_EFFORT = ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT


def test_auto_matches_the_publishers_reliability():
    assert matching_reliability([]) == "best_effort"  # none yet: best effort matches whatever comes
    assert matching_reliability([RELIABLE]) == "reliable"
    assert matching_reliability([RELIABLE, RELIABLE]) == "reliable"
    assert matching_reliability([RELIABLE, BEST_EFFORT]) == "best_effort"  # a reliable reader misses one
    assert matching_reliability([BEST_EFFORT]) == "best_effort"
    assert image_input_qos("reliable", 3).reliability == RELIABLE and image_input_qos("reliable", 3).depth == 3
    assert image_input_qos("best_effort", 5).reliability == BEST_EFFORT
    with pytest.raises(ValueError, match="reliability must be one of"):
        image_input_qos("auto", 5)
    readers = [("rviz", RELIABLE), ("controller_server", BEST_EFFORT), ("controller_server", BEST_EFFORT),
               ("laserscan", BEST_EFFORT)]
    assert best_effort_readers(readers) == ["controller_server", "laserscan"]
    assert best_effort_readers([("rviz", RELIABLE)]) == []


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_node_follows_its_camera_drivers_reliability_and_gets_every_large_frame(tmp_path):
    checkpoint, weights = rh.make_tiny_checkpoint(tmp_path)
    domain = rh.module_domain_id(__name__)
    namespace = rh.unique_namespace()
    image_topic, info_topic = f"{namespace}/camera/color/image_raw", f"{namespace}/camera/color/camera_info"
    node = rh.NodeProcess(
        rh.depth_node_command(namespace=namespace, image=image_topic, camera_info=info_topic,
                              checkpoint=str(checkpoint),
                              overrides=rh.tiny_node_overrides(weights, backend="torch", optimize=False)),
        rh.node_environment(domain), tmp_path / "node.log")
    client = rh.RosTestClient(domain, name="reliability_client")
    node_name = "space_clip_depth"

    def subscribed(policy: ReliabilityPolicy) -> None:
        client.wait_for_endpoints(image_topic, "subscriptions",
                                  lambda info: info.node_name == node_name and info.qos_profile.reliability == policy,
                                  timeout=60)

    try:
        # No camera driver yet: best effort, which matches any that comes.
        node.wait_for_log(r"\(raw, best_effort as its publishers offer\)", timeout=120)
        subscribed(BEST_EFFORT)
        # A reliable driver of 640x480 rgb8 frames (0.9 MB, sent in fragments): the node subscribes
        # reliable, and every frame reaches it.
        driver = client.publisher(image_topic, Image, reliable=True, depth=5)
        info_pub = client.publisher(info_topic, CameraInfo)
        subscribed(RELIABLE)
        node.wait_for_log(r"its publishers offer reliable: subscribed reliable", timeout=30)
        client.wait_for_subscribers(driver)
        depth = client.collect(f"{namespace}/depth/image", Image)
        # best-effort readers, as Nav2's costmap layers and depthimage_to_laserscan subscribe: of the
        # clouds (auto stride: 160x120, 0.3 MB, one piece) and of the 640x480 depth images (1.2 MB)
        clouds = client.collect(f"{namespace}/points", PointCloud2, reliable=False)
        client.collect(f"{namespace}/depth/image", Image, reliable=False)
        diagnostics = client.collect("/diagnostics", DiagnosticArray)
        frame, scale = pattern_image(480, 640), 640 / WIDTH
        info = camera_info_message(640, 480, FX * scale, FY * scale, CX * scale, CY * scale, FRAME_ID)
        sent = []

        def send() -> None:
            stamp = make_stamp(200 + len(sent) // 10, (len(sent) % 10) * 100_000_000)
            info.header.stamp = stamp
            info_pub.publish(info)
            driver.publish(rh.image_message(frame, "rgb8", stamp, FRAME_ID))
            sent.append(stamp)

        def node_counts() -> dict[str, str]:
            latest = diagnostics.messages[-1] if diagnostics.messages else None
            return (rh.diagnostic_values(latest, "depth estimation") or {}) if latest is not None else {}

        send()
        rh.wait_until(lambda: depth.messages, timeout=60, what="the first depth image", details=node.log)
        for _ in range(19):  # a camera at 5 frames/s
            time.sleep(0.2)
            send()
        rh.wait_until(lambda: node_counts().get("frames received") == str(len(sent)), timeout=30,
                      what=f"all {len(sent)} frames received by the node", details=lambda: str(node_counts()))
        node.wait_for_log(rf"{namespace}/depth/image: \S*reliability_client\S* subscribes best effort, and "
                          r"these 1\.2 MB messages travel in fragments .*output_width/output_height", timeout=30)
        assert clouds.messages and (clouds.messages[-1].height, clouds.messages[-1].width) == (120, 160)
        assert f"{namespace}/points: " not in node.log()  # the auto-strided cloud travels in one piece
        # The driver is replaced by a best-effort one: the node follows (a reliable reader would not match).
        client.node.destroy_publisher(driver)
        client.publisher(image_topic, Image, reliable=False, depth=5)
        subscribed(BEST_EFFORT)
        node.wait_for_log(r"its publishers offer best effort: subscribed best_effort", timeout=30)
    finally:
        client.close()
        assert node.stop() == 0, node.log()
