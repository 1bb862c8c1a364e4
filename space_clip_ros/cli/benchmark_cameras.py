"""space-clip-benchmark's cameras section (``--cameras N``): several cameras on one model, the way the
depth node runs them.

Each round takes one frame of each of N cameras through the node's own frame code (no DDS): the
image message is decoded and paired with its CameraInfo
(:class:`~space_clip_ros.outputs.camera_input.CameraInput`), the frames run through the model and
each camera's depth Image and organised PointCloud2 are built and serialised
(:class:`~space_clip_ros.outputs.frame_processor.DepthFrameProcessor`). Two ways, timed in
alternating rounds:

* **batched**: the N frames in one encoder + decoder pass (``predict`` on all N), as the node's
  worker does when N cameras have a frame waiting;
* **one by one**: the same N frames, one pass each (what the node does when its cameras' frames
  never wait together).

Memory: the process's resident set size after running one camera (one by one), then after running
N cameras batched; the model is loaded once either way. Run this section first in its process (the
benchmark does, before the model section's bigger batches) so that nothing else inflates the RSS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import psutil
from rclpy.serialization import serialize_message  # works without a running node
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from ..data.frame_sources import camera_from_fov
from ..inference.benchmarking.synthetic import synthetic_camera_image
from ..inference.benchmarking.timing import device_synchronizer, time_interleaved
from ..inference.runtime.predictor import DepthPredictor
from ..msgs import camera_info_from_intrinsics, rgb_to_image_msg
from ..outputs.camera_input import CameraFrame, CameraInput
from ..outputs.frame_processor import DepthFrameProcessor
from ..outputs.options import OutputOptions

#: Horizontal field of view of the benchmark's cameras (a typical RGB-D camera's).
CAMERA_FOV_DEG = 65.0
#: The node's default outputs: depth Image + organised xyz cloud (colour picture and embedding off).
NODE_OUTPUTS = OutputOptions(publish_points=True, points_organized=True, points_stride=1, points_rgb=False,
                             publish_colored=False, publish_embedding=False)


@dataclass
class Camera:
    """One benchmark camera: its input state and the image message it sends every round."""

    name: str
    input: CameraInput
    message: Image

    def frame(self) -> CameraFrame:
        return self.input.frame(self.message)


def make_cameras(count: int, size: tuple[int, int]) -> list[Camera]:
    """``count`` cameras of ``size`` (H, W), each with its own picture and a distortion-free CameraInfo."""
    height, width = size
    cameras = []
    for index in range(count):
        header = Header(frame_id=f"camera_{index}")
        picture = synthetic_camera_image(height, width, seed=index)
        camera = Camera(f"camera_{index}", CameraInput(), rgb_to_image_msg(picture, header))
        intrinsics = camera_from_fov(width, height, CAMERA_FOV_DEG).intrinsics
        camera.input.add_camera_info(camera_info_from_intrinsics(intrinsics, header))
        cameras.append(camera)
    return cameras


def run_batched(processor: DepthFrameProcessor, cameras: list[Camera]) -> int:
    """One round, the frames of all cameras in one pass; bytes serialised."""
    frames = [camera.frame() for camera in cameras]
    predictions = processor.predict([frame.rgb for frame in frames], [NODE_OUTPUTS] * len(frames))
    return sum(_serialised(processor, frame, prediction) for frame, prediction in zip(frames, predictions))


def run_one_by_one(processor: DepthFrameProcessor, cameras: list[Camera]) -> int:
    """One round, one pass per camera; bytes serialised."""
    total = 0
    for camera in cameras:
        frame = camera.frame()
        (prediction,) = processor.predict([frame.rgb], [NODE_OUTPUTS])
        total += _serialised(processor, frame, prediction)
    return total


def _serialised(processor: DepthFrameProcessor, frame: CameraFrame, prediction) -> int:
    outputs = processor.build(prediction, frame.header, frame.calibration, NODE_OUTPUTS, rgb=frame.rgb)
    return len(serialize_message(outputs.depth_image)) + len(serialize_message(outputs.points))


def resident_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def bench_cameras(
    predictor: DepthPredictor, count: int, size: tuple[int, int], warmup: int, repeats: int,
    log: Callable[[str], None] = lambda text: None,
) -> dict:
    """Memory (1 camera vs ``count``) and frames per second (``count`` batched vs one by one); see the module notes."""
    if count < 2:
        raise ValueError(f"--cameras needs at least 2 cameras to compare with one, got {count}")
    processor = DepthFrameProcessor(predictor)
    cameras = make_cameras(count, size)
    rss_model = resident_mb()
    for _ in range(warmup + repeats):
        run_one_by_one(processor, cameras[:1])
    rss_one = resident_mb()
    for _ in range(warmup + repeats):
        run_batched(processor, cameras)
    rss_all = resident_mb()
    log(f"cameras section: resident memory 1 camera {rss_one:.0f} MB, {count} cameras batched {rss_all:.0f} MB")

    stats = time_interleaved(
        {"batched": lambda: run_batched(processor, cameras), "one_by_one": lambda: run_one_by_one(processor, cameras)},
        warmup, repeats, device_synchronizer(predictor.device),
    )
    batched, one_by_one = stats["batched"], stats["one_by_one"]
    log(f"cameras section: {count} frames batched {batched.median_ms:.1f} ms, one by one {one_by_one.median_ms:.1f} ms")
    return {
        "cameras": count,
        "size": f"{size[1]}x{size[0]}",
        "outputs": "depth Image 32FC1 + organised xyz PointCloud2 per camera, serialised",
        "round_batched": batched.to_dict(),
        "round_one_by_one": one_by_one.to_dict(),
        "frames_per_s_batched": round(count / (batched.median_ms / 1e3), 2),
        "frames_per_s_one_by_one": round(count / (one_by_one.median_ms / 1e3), 2),
        "speedup_batched": round(one_by_one.median_ms / batched.median_ms, 3),
        "memory": {
            "rss_model_loaded_mb": round(rss_model, 1),
            "rss_1_camera_mb": round(rss_one, 1),
            f"rss_{count}_cameras_mb": round(rss_all, 1),
            "ratio": round(rss_all / rss_one, 3),
        },
    }


def format_cameras(row: dict) -> list[str]:
    """The report's lines for the cameras section."""
    memory = row["memory"]
    count = row["cameras"]
    return [
        f"{count} cameras, {row['size']} each (depth Image + PointCloud2 per camera, serialised), ms per round: "
        "median p95",
        f"  batched (one pass)  {row['round_batched']['median_ms']:8.1f} {row['round_batched']['p95_ms']:8.1f} | "
        f"{row['frames_per_s_batched']:.2f} frames/s",
        f"  one by one          {row['round_one_by_one']['median_ms']:8.1f} {row['round_one_by_one']['p95_ms']:8.1f} | "
        f"{row['frames_per_s_one_by_one']:.2f} frames/s",
        f"  batched is {row['speedup_batched']:.2f}x the frames per second of one by one",
        f"  resident memory: model loaded {memory['rss_model_loaded_mb']:.0f} MB, 1 camera "
        f"{memory['rss_1_camera_mb']:.0f} MB, {count} cameras {memory[f'rss_{count}_cameras_mb']:.0f} MB "
        f"({memory['ratio']:.2f}x)",
    ]


__all__ = ["bench_cameras", "format_cameras", "make_cameras", "run_batched", "run_one_by_one"]
