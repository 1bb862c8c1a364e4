"""Resident memory of the managed depth node through its transitions (docs/benchmarks.md).

Starts ``depth_lifecycle_node`` (ViT-B/16 with random weights and the reference decoder unless
``--tiny``; CPU; the model exactly as trained unless ``--backend onnxruntime``, the int8 CPU path),
drives it over DDS like nav2_lifecycle_manager (configure, activate, 640x480 frames, deactivate,
cleanup, shutdown) and prints the process's RSS after each step::

    .venv/bin/python scripts/lifecycle_memory.py                           # ViT-B/16, torch fp32
    .venv/bin/python scripts/lifecycle_memory.py --backend onnxruntime     # ViT-B/16, int8 encoder
    .venv/bin/python scripts/lifecycle_memory.py --tiny                    # the tests' tiny model
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from space_clip_ros.data.frame_sources import camera_from_fov
from space_clip_ros.data.tiny_model import TINY_VISION_OVERRIDES
from space_clip_ros.demo import package_files, processes
from space_clip_ros.demo.recorder import SpinningNode
from space_clip_ros.msgs import camera_info_from_intrinsics, rgb_to_image_msg

REPO = Path(__file__).resolve().parents[1]


def change_state(client: SpinningNode, node: str, transition: int, timeout: float = 300.0) -> bool:
    service = client.node.create_client(ChangeState, f"{node}/change_state")
    if not service.wait_for_service(timeout_sec=timeout):
        raise RuntimeError(f"{node}/change_state is not there")
    request = ChangeState.Request()
    request.transition.id = transition
    future = service.call_async(request)
    if not processes.wait_until(future.done, timeout):
        raise RuntimeError(f"no answer to transition {transition}")
    client.node.destroy_client(service)
    return future.result().success


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny backbone instead of ViT-B/16")
    parser.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                        help="torch: the model exactly as trained (optimize false); onnxruntime: optimize true")
    parser.add_argument("--domain", type=int, default=77, help="ROS domain id of the run")
    args = parser.parse_args()

    overrides = {"backend": args.backend, "optimize": args.backend != "torch", "precision": "fp32"}
    if args.tiny:
        overrides["vision_overrides"] = json.dumps(TINY_VISION_OVERRIDES)
    command = processes.depth_node_command(
        package_files.load_launch_module(REPO / "launch" / "depth.launch.py"), image="/camera/image",
        camera_info="/camera/camera_info", params_file=REPO / "config" / "depth.yaml", checkpoint="", device="cpu",
        overrides=overrides, executable="depth_lifecycle_node",
    )
    log = Path(tempfile.mkdtemp(prefix="lifecycle_memory_")) / "node.log"
    node = processes.ManagedProcess("depth_lifecycle_node", command, log,
                                    processes.node_environment({"ROS_DOMAIN_ID": str(args.domain)}), cwd=REPO)
    client = SpinningNode(f"lifecycle_memory_{os.getpid()}", domain_id=args.domain)
    rss = {}

    def measure(step: str) -> None:
        time.sleep(1.0)
        rss[step] = psutil.Process(node.process.pid).memory_info().rss / 2**20
        print(f"{step:<28} {rss[step]:8.0f} MB", flush=True)

    try:
        name = "/space_clip_depth"
        image_pub = client.node.create_publisher(Image, "/camera/image", 10)
        info_pub = client.node.create_publisher(CameraInfo, "/camera/camera_info", 10)
        depth: list[Image] = []
        client.node.create_subscription(Image, "/depth/image", depth.append, 10)
        processes.wait_until(lambda: "unconfigured" in node.log(), 120.0)
        measure("unconfigured (start)")
        assert change_state(client, name, Transition.TRANSITION_CONFIGURE), node.log()
        measure("inactive (model loaded)")
        assert change_state(client, name, Transition.TRANSITION_ACTIVATE)
        header = Header(frame_id="camera")
        rgb = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
        info = camera_info_from_intrinsics(camera_from_fov(640, 480, 65.0).intrinsics, header)
        for _ in range(120):  # until a depth image came back (discovery first)
            info_pub.publish(info)
            image_pub.publish(rgb_to_image_msg(rgb, header))
            if processes.wait_until(lambda: depth, 2.0):
                break
        measure("active (after frames)")
        assert change_state(client, name, Transition.TRANSITION_DEACTIVATE)
        measure("inactive (deactivated)")
        assert change_state(client, name, Transition.TRANSITION_CLEANUP)
        measure("unconfigured (cleaned up)")
        change_state(client, name, Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        print(f"exit code {node.process.wait(timeout=60)}; the node's own lines:")
        for line in node.log().splitlines():
            if "resident memory" in line:
                print("  " + line.split("]: ", 1)[-1])
        freed = rss["active (after frames)"] - rss["unconfigured (cleaned up)"]
        print(f"cleanup gave back {freed:.0f} MB of {rss['active (after frames)'] - rss['unconfigured (start)']:.0f} "
              "MB that configure and the frames took")
    finally:
        client.close()
        node.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
