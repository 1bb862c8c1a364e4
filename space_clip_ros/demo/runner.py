"""The demo from start to end: camera simulator + depth node as processes, a recorder, the files.

1. Decoder checkpoint: the one given, else the cached demo checkpoint (trained first if missing).
2. The depth node starts as ``depth_node --ros-args --params-file config/depth.yaml ...`` with the
   launch file's own remappings and overrides (checkpoint, device), plus the demo's: coloured
   depth and XYZRGB clouds on, the checkpoint's depth range, the tiny backbone in quick mode.
3. Once the node subscribes, the camera simulator starts (synthetic scene, exact depth on).
4. The recorder keeps what the node publishes for ``seconds`` after the first depth image.
5. Camera first, then node, are stopped (SIGINT, SIGTERM, SIGKILL with timeouts); then the
   pictures, the point cloud and the summary are written: side-by-side pictures, the node's
   depth/confidence beside the depth and its error against the exact depth (``confidence.png``),
   and the node's cloud of one frame seen from the side before and after the flying-pixel filter
   (``flying_pixels.png``).

Any failure (a node that exits, no depth in time) raises :class:`DemoError` with the nodes' last
log lines; the processes are stopped either way.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from space_clip_ros.data.ply import write_ply
from space_clip_ros.data.tiny_model import TINY_VISION_OVERRIDES
from space_clip_ros.demo import pictures, processes
from space_clip_ros.demo.checkpoint import DemoTraining, ensure_demo_checkpoint
from space_clip_ros.demo.package_files import DEPTH_PARAMS, load_launch_module, package_file
from space_clip_ros.demo.processes import ProcessGroup, find_console_script, node_environment, wait_until
from space_clip_ros.demo.recorder import DemoRecorder, RecorderTopics
from space_clip_ros.demo.recording import Recording
from space_clip_ros.demo.summary import (
    DemoSummary,
    accuracy_vs_exact_depth,
    latency_percentiles_ms,
    node_facts,
    write_summary,
)

logger = logging.getLogger(__name__)

NAMESPACE = "/space_clip_demo"  # everything of the demo lives under it: no clash with a real camera
CAMERA_NAMESPACE = f"{NAMESPACE}/camera/color"
SIMULATOR = "camera_simulator"
SIDE_BY_SIDE_COUNT = 4
_PNG_SMALLEST = [cv2.IMWRITE_PNG_COMPRESSION, 9]
#: The flying-pixel threshold the demo's before/after picture shows (the node's cloud itself is unfiltered).
FLYING_PIXEL_THRESHOLD = 0.04


class DemoError(RuntimeError):
    """The demo could not finish; the text says why and shows the nodes' last log lines."""


@dataclass(frozen=True)
class DemoOptions:
    """What the CLI asks for (see ``space-clip-demo --help``)."""

    output_dir: Path = Path("demo_output")
    seconds: float = 10.0
    checkpoint: str | None = None
    pretrained: str | None = None
    scene: str = "indoor"
    quick: bool = False
    device: str = "auto"
    train: bool = True  # train (or reuse) a demo checkpoint when none is given
    cache_dir: Path | None = None
    width: int = 0  # 0: 320x240 (indoor) / 416x128 (street); 160x120 / 208x64 in quick mode
    height: int = 0
    rate_hz: float = 0.0  # 0: 5 Hz, 4 Hz in quick mode
    node_start_timeout_s: float = 180.0
    first_depth_timeout_s: float = 90.0

    @property
    def camera_size(self) -> tuple[int, int]:
        if self.width and self.height:
            return self.width, self.height
        if self.quick:
            return (160, 120) if self.scene == "indoor" else (208, 64)
        # Small enough for two CPU cores to render, infer and record at the camera rate.
        return (320, 240) if self.scene == "indoor" else (416, 128)

    @property
    def camera_rate(self) -> float:
        return self.rate_hz or (4.0 if self.quick else 5.0)


@dataclass
class DemoResult:
    summary: DemoSummary
    output_dir: Path
    exit_codes: dict[str, int] = field(default_factory=dict)


# ---- the model --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckpointFacts:
    """What the demo needs from a checkpoint's JSON record (read without importing torch: the
    demo process only runs the recorder; the model runs in the depth node)."""

    dataset: str
    min_depth: float
    max_depth: float
    confidence: bool = True  # the decoder has trained auxiliary heads: the node can publish depth/confidence


@dataclass(frozen=True)
class ModelChoice:
    checkpoint: str  # "" = untrained decoder
    record: CheckpointFacts | None
    note: str  # for people: what this model knows


def _read_record(checkpoint: str) -> CheckpointFacts:
    # NAME, NAME.json or NAME.safetensors all name the pair, as model.checkpoint.checkpoint_paths reads them.
    path = Path(checkpoint)
    stem = path.with_suffix("") if path.suffix in (".json", ".safetensors") else path
    record_path = stem.with_name(stem.name + ".json")
    try:
        record = json.loads(record_path.read_text())
        decoder = (record.get("model") or {}).get("decoder") or {}
        loss = ((record.get("extra") or {}).get("config") or {}).get("loss") or {}
        weights = loss.get("aux_weights", [0.1, 0.05, 0.0])  # the release's when the record does not say
        confidence = bool(decoder.get("aux_heads", True)) and any(float(w) != 0.0 for w in weights)
        return CheckpointFacts(str(record.get("dataset") or "unknown"), float(record.get("min_depth", 1e-3)),
                               float(record.get("max_depth", 80.0)), confidence)
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise DemoError(f"cannot read the checkpoint record {record_path}: {exc}") from exc


def choose_model(options: DemoOptions) -> ModelChoice:
    backbone = (f"pretrained CLIP weights ({options.pretrained})" if options.pretrained else
                "a RANDOM backbone (no pretrained CLIP weights can be downloaded here; pass --pretrained "
                "FILE_OR_TAG for real ones)")
    if options.checkpoint:
        record = _read_record(options.checkpoint)
        return ModelChoice(options.checkpoint, record,
                           f"decoder checkpoint {options.checkpoint} (trained on: {record.dataset}).")
    if not options.train:
        return ModelChoice("", None, f"UNTRAINED decoder (random weights) on {backbone}: the depth pictures show "
                                     "the pipeline working, not depth.")
    training = DemoTraining(options.scene, options.quick, options.pretrained, options.device)
    try:
        checkpoint = str(ensure_demo_checkpoint(training, options.cache_dir))
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        raise DemoError(f"could not train the demo checkpoint: {exc}") from exc
    steps = "a few training steps (--quick)" if options.quick else "a short training run"
    return ModelChoice(
        checkpoint, _read_record(checkpoint),
        f"decoder trained by {steps} on synthetic {options.scene} scenes only, on {backbone}. It knows these "
        "rendered scenes and nothing else: do not expect it to work on a real camera.",
    )


# ---- the processes ----------------------------------------------------------------------------------
def depth_node_command(options: DemoOptions, model: ModelChoice) -> list[str]:
    """``depth_node`` exactly as the launch file starts it (its remappings, config/depth.yaml and its
    checkpoint/device overrides), in the demo namespace, plus the demo's own parameters."""
    extra: dict[str, object] = {"publish_colored": True, "points_rgb": True,
                                "publish_confidence": model.record is None or model.record.confidence}
    if model.record is not None:
        extra["max_depth"] = float(model.record.max_depth)  # the range the decoder was trained for
    if options.pretrained:
        extra["pretrained"] = options.pretrained
    if options.quick and model.record is None:
        extra["vision_overrides"] = json.dumps(TINY_VISION_OVERRIDES)
    return processes.depth_node_command(
        load_launch_module(), namespace=NAMESPACE, image=f"{CAMERA_NAMESPACE}/image_raw",
        camera_info=f"{CAMERA_NAMESPACE}/camera_info", params_file=package_file(DEPTH_PARAMS),
        checkpoint=model.checkpoint, device=options.device, overrides=extra,
    )


def simulator_command(options: DemoOptions) -> list[str]:
    width, height = options.camera_size
    parameters = {"source": "synthetic", "scene": options.scene, "width": width, "height": height,
                  "rate": float(options.camera_rate), "publish_ground_truth": True,
                  "frames_per_pass": max(int(options.seconds * options.camera_rate) + 10, 20)}
    command = [find_console_script(SIMULATOR), "--ros-args", "-r", f"__ns:={CAMERA_NAMESPACE}"]
    for name, value in parameters.items():
        command += ["-p", f"{name}:={processes.ros_argument_value(value)}"]
    return command


def _failure(message: str, group: ProcessGroup) -> DemoError:
    parts = [message]
    for process in group.processes:
        state = "running" if process.running else f"exited with code {process.returncode}"
        parts.append(f"--- {process.name} ({state}), last lines of {process.log_path}:\n{process.log_tail()}")
    return DemoError("\n".join(parts))


def _check_alive(group: ProcessGroup, during: str) -> None:
    crashed = group.crashed()
    if crashed is not None:
        raise _failure(f"{crashed.name} exited (code {crashed.returncode}) {during}", group)


def record_stream(
    options: DemoOptions, model: ModelChoice, recording: Recording, log_dir: Path
) -> tuple[dict[str, int], float]:
    """Run camera + node, record, stop everything; the processes' exit codes and the length of the
    recording window (from the capture of the first depth image's frame to the camera's stop)."""
    launch = load_launch_module()
    topics = RecorderTopics(
        image=f"{CAMERA_NAMESPACE}/image_raw", camera_info=f"{CAMERA_NAMESPACE}/camera_info",
        ground_truth=f"{CAMERA_NAMESPACE}/ground_truth/depth", depth=f"{NAMESPACE}/depth/image",
        depth_info=f"{NAMESPACE}/depth/camera_info", points=f"{NAMESPACE}/points",
        colored=f"{NAMESPACE}/depth/colored", diagnostics="/diagnostics",
        node_name=f"{NAMESPACE}/{launch.NODE_NAME}", confidence=f"{NAMESPACE}/depth/confidence",
    )
    env = node_environment()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", env["ROS_AUTOMATIC_DISCOVERY_RANGE"])
    recorder = DemoRecorder(topics, recording)
    try:
        with ProcessGroup() as group:
            print(f"starting the depth node (log: {log_dir / 'depth_node.log'}) ...", flush=True)
            node = group.start("depth_node", depth_node_command(options, model), log_dir / "depth_node.log", env)
            if not wait_until(lambda: recorder.subscribers(topics.image) > 0, options.node_start_timeout_s, group):
                _check_alive(group, "while starting")
                raise _failure(f"the depth node did not subscribe to {topics.image} within "
                               f"{options.node_start_timeout_s:.0f} s", group)
            print("starting the camera simulator ...", flush=True)
            camera = group.start(SIMULATOR, simulator_command(options), log_dir / "camera_simulator.log", env)
            if not wait_until(lambda: recording.depth_frames_received > 0, options.first_depth_timeout_s, group):
                _check_alive(group, "before the first depth image")
                inputs, _ = recording.snapshot_counts()
                raise _failure(f"no depth image on {topics.depth} within {options.first_depth_timeout_s:.0f} s "
                               f"({inputs} camera images received)", group)
            print(f"recording for {options.seconds:g} s ...", flush=True)
            deadline = time.monotonic() + options.seconds
            while time.monotonic() < deadline:
                _check_alive(group, "while recording")
                time.sleep(0.1)
            codes = {SIMULATOR: camera.stop()}
            recorded_s = time.time() - recording.first_depth_stamp_ns * 1e-9
            # The frame in the node's hands when the camera stopped still comes out.
            in_flight = recording.depth_frames_received
            wait_until(lambda: recording.depth_frames_received > in_flight, 2.0)
            codes["depth_node"] = node.stop()
            return codes, recorded_s
    finally:
        recorder.close()


# ---- the files ----------------------------------------------------------------------------------------
def _pick_frames(recording: Recording, count: int) -> list:
    usable = [f for f in recording.frames if f.rgb is not None]
    if len(usable) <= count:
        return usable
    return [usable[round(i * (len(usable) - 1) / (count - 1))] for i in range(count)]


def _quality_pictures(recording: Recording, frames: list, depth_range: tuple[float, float], caption: str,
                      out: Path) -> dict[str, str]:
    """confidence.png and flying_pixels.png of one recorded frame (the first one that has what they need)."""
    files: dict[str, str] = {}
    with_confidence = [f for f in recording.frames if f.confidence is not None and f.rgb is not None]
    if with_confidence:
        frame = with_confidence[len(with_confidence) // 2]
        picture = pictures.confidence_picture(frame.rgb, frame.depth, frame.confidence, *depth_range,
                                              ground_truth=frame.ground_truth, caption=caption)
        cv2.imwrite(str(out / "confidence.png"), picture, _PNG_SMALLEST)
        files["the node's depth/confidence beside depth and its error against the exact depth"] = "confidence.png"
    info = recording.last_depth_info
    if info is not None and frames:
        from space_clip_ros.msgs import CameraIntrinsics

        frame = frames[len(frames) // 2]
        height, width = frame.depth.shape
        k = info.k
        camera = CameraIntrinsics(fx=k[0], fy=k[4], cx=k[2], cy=k[5], width=info.width, height=info.height)
        if camera.size == (width, height):
            valid = frame.depth[np.isfinite(frame.depth)]
            low, high = (float(valid.min()), float(valid.max())) if valid.size else (0.0, 1.0)
            picture = pictures.flying_pixels_picture(
                frame.rgb, frame.depth, camera, FLYING_PIXEL_THRESHOLD, low, high,
                caption=f"{caption}; the node's cloud of one frame from the side, before and after",
                view_size=(width, height),
            )
            cv2.imwrite(str(out / "flying_pixels.png"), picture, _PNG_SMALLEST)
            files[f"one frame's cloud before and after flying_pixel_threshold {FLYING_PIXEL_THRESHOLD:g}"] = \
                "flying_pixels.png"
    return files


def write_outputs(options: DemoOptions, model: ModelChoice, recording: Recording, exit_codes: dict[str, int],
                  recorded_s: float) -> DemoSummary:
    out = options.output_dir
    files: dict[str, str] = {}
    frames = _pick_frames(recording, SIDE_BY_SIDE_COUNT)
    if not frames:
        raise DemoError("depth images arrived but none could be paired with its camera image")
    # One scale for every picture, covering the scene's exact depth (when known) and the predictions.
    depth_range = pictures.nice_depth_range(
        [f.depth for f in recording.frames] + [f.ground_truth for f in recording.frames if f.ground_truth is not None]
    )
    caption = "synthetic scene; " + ("decoder trained on synthetic scenes only" if model.record is not None
                                     else "UNTRAINED decoder")
    start_ns = recording.frames[0].stamp_ns
    for number, frame in enumerate(frames):
        picture = pictures.side_by_side(frame.rgb, frame.depth, *depth_range, ground_truth=frame.ground_truth,
                                        caption=f"{caption}; t = {(frame.stamp_ns - start_ns) / 1e9:.1f} s")
        path = out / f"side_by_side_{number}.png"
        cv2.imwrite(str(path), picture, _PNG_SMALLEST)
        files[f"side-by-side picture {number} (camera | depth | exact depth | scale)"] = path.name
    if recording.last_colored is not None:
        from space_clip_ros.msgs import image_msg_to_rgb

        colored = out / "depth_colored.png"
        cv2.imwrite(str(colored), cv2.cvtColor(image_msg_to_rgb(recording.last_colored), cv2.COLOR_RGB2BGR),
                    _PNG_SMALLEST)
        files["the node's own depth/colored picture (last frame)"] = colored.name
    files.update(_quality_pictures(recording, frames, depth_range, caption, out))
    if recording.last_cloud is not None:
        from space_clip_ros.msgs import pointcloud2_to_rgb, pointcloud2_to_xyz

        cloud = recording.last_cloud
        colours = pointcloud2_to_rgb(cloud) if any(f.name == "rgb" for f in cloud.fields) else None
        ply = out / "point_cloud.ply"
        count = write_ply(ply, pointcloud2_to_xyz(cloud), colours)
        files[f"point cloud of one frame, {count} points (optical frame: x right, y down, z forward)"] = ply.name
    p50, p95 = latency_percentiles_ms(recording.latencies_s)
    width, height = options.camera_size
    facts = node_facts(recording)
    record = model.record
    summary = DemoSummary(
        output_dir=str(out.resolve()),
        seconds_recorded=recorded_s,
        scene=options.scene,
        camera=f"camera simulator, synthetic {options.scene} scene, {width}x{height} at {options.camera_rate:g} Hz",
        frames_in=recording.inputs_while_recording,
        frames_out=recording.depth_frames_received,
        frames_without_depth=max(recording.inputs_while_recording - recording.depth_frames_received, 0),
        output_rate_hz=recording.depth_frames_received / recorded_s if recorded_s > 0 else math.nan,
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        checkpoint=model.checkpoint or "(none: untrained decoder)",
        checkpoint_note=model.note,
        depth_range_m=depth_range,
        accuracy_vs_exact_depth=accuracy_vs_exact_depth(
            recording, record.min_depth if record else 0.1, record.max_depth if record else 10.0),
        point_clouds=recording.clouds_received,
        files={**files, "this summary (and summary.json)": "summary.md", "node logs": "logs/"},
        **facts,
    )
    if any(code != 0 for code in exit_codes.values()):
        logger.warning("processes exited with %s", exit_codes)
    write_summary(summary, out)
    return summary


def run_demo(options: DemoOptions) -> DemoResult:
    """The whole demo; raises :class:`DemoError` (processes stopped, logs kept) when it fails."""
    out = options.output_dir
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("side_by_side_*.png"), out / "point_cloud.ply", out / "depth_colored.png",
                  out / "confidence.png", out / "flying_pixels.png"]:
        stale.unlink(missing_ok=True)  # nothing of an earlier run is mistaken for this one's
    log_dir = out / "logs"
    shutil.rmtree(log_dir, ignore_errors=True)
    model = choose_model(options)
    recording = Recording()
    exit_codes, recorded_s = record_stream(options, model, recording, log_dir)
    summary = write_outputs(options, model, recording, exit_codes, recorded_s)
    return DemoResult(summary, out, exit_codes)
