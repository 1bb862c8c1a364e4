"""space-clip-benchmark: latency, throughput and memory of SPACE-CLIP inference on this machine.

Sections (each timed after warm-up, repeated, median and p95 reported):
  model   encoder, decoder and total at each batch size (depth at --output-size, 640x480 by
          default), images/s;
  frame   the depth node's per-frame work without DDS: Image message -> array -> inference ->
          depth Image + organised PointCloud2 -> serialised bytes, per camera size;
  memory  CUDA max allocated (GPU) or resident set size (CPU) of the measured path;
  compare (--compare) a plain fp32 eager baseline of the same model, timed in alternation with
          the fast path in this process: speed ratio and depth difference;
  cameras (--cameras N) N cameras on one model as the depth node runs them: N frames in one
          batched pass vs one by one (frames/s), resident memory with N cameras vs one; runs first.
The measured path is what the depth node would run: --backend auto (the default) measures this
device's candidate paths once and caches the choice (inference/runtime/auto_select.py); the JSON
and the table say which it chose and what each candidate measured.
Prints a table and, with --json, writes everything with the machine (CPU model and flags), software
and settings.
Without a checkpoint the weights are random, with decoder statistics made realistic
(space_clip_ros.inference.benchmarking.synthetic) so that depth differences are measured on metres, not zeros.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.frame_sources import camera_from_fov
from ..data.tiny_model import tiny_model_config
from ..devices import resolve_device
from ..inference.benchmarking.machine import MemoryProbe, machine_info, software_versions
from ..inference.benchmarking.synthetic import make_decoder_realistic, synthetic_camera_image
from ..inference.benchmarking.timing import (
    StageClock,
    TimingStats,
    device_synchronizer,
    time_interleaved,
    torch_threads,
)
from ..inference.runtime.auto_select import predictor_for
from ..inference.runtime.options import (
    COMPILE_MODES,
    unoptimized_options,
)
from ..inference.runtime.predictor import DepthPredictor
from ..inference.runtime.tolerance import DEPTH_TOLERANCE
from ..inference.runtime.tolerance import depth_agreement as depth_agreement
from ..model import BackboneConfig, DecoderConfig, ModelConfig, SpaceClip, load_model
from ..model.checkpoint import CheckpointError
from ..model.preprocess import pixels_from_frames
from .common import (
    add_inference_arguments,
    add_model_arguments,
    backbone_from_args,
    decoder_from_args,
    setup_logging,
    tool_parser,
)

logger = logging.getLogger("space-clip-benchmark")

MODEL_OUTPUT_SIZE = (480, 640)  # default depth size of the model and compare sections (H, W); --output-size
BENCHMARK_CAMERA_FOV_DEG = 65.0  # horizontal field of view of the frame section's camera: a typical RGB-D one


@dataclass(frozen=True)
class Settings:
    device: str
    precision: str
    backend: str
    optimize: bool
    batch_sizes: tuple[int, ...]
    repeats: int
    warmup: int
    sizes: tuple[tuple[int, int], ...]  # (H, W)
    tiny: bool
    compare: bool
    compile_mode: str
    cuda_graphs: bool
    threads: int | None
    output_size: tuple[int, int] = MODEL_OUTPUT_SIZE  # (H, W) of the model and compare sections' depth
    auto_cache: str = ""  # backend auto's cache file ("" default, see auto_select)
    calibration_images: str = ""  # camera frames for the int8 decoder (rewrites.decoder_int8)
    cameras: int = 0  # --cameras: the cameras section's camera count (0: no such section)


# ---- argument parsing ----------------------------------------------------------------------------


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """``640x480,1280x720`` (width x height, as cameras are named) -> ((480, 640), (720, 1280))."""
    sizes = []
    for item in text.split(","):
        width, _, height = item.strip().lower().partition("x")
        if not width.isdigit() or not height.isdigit() or int(width) < 1 or int(height) < 1:
            raise argparse.ArgumentTypeError(f"size {item!r} is not WIDTHxHEIGHT, e.g. 640x480")
        sizes.append((int(height), int(width)))
    return tuple(sizes)


def parse_size(text: str) -> tuple[int, int]:
    """One ``WIDTHxHEIGHT`` -> (H, W)."""
    sizes = parse_sizes(text)
    if len(sizes) != 1:
        raise argparse.ArgumentTypeError(f"expected one size WIDTHxHEIGHT, got {text!r}")
    return sizes[0]


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"batch sizes {text!r} are not comma-separated integers") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = tool_parser("space-clip-benchmark", __doc__)
    add_model_arguments(parser)
    parser.add_argument("--tiny", action="store_true", help="tiny test backbone (width 64) for a quick smoke run")
    add_inference_arguments(parser)  # --device, --backend, --precision, --no-optimize, --auto-cache
    parser.add_argument("--output-size", type=parse_size, default=MODEL_OUTPUT_SIZE,
                        help="depth size WIDTHxHEIGHT of the model and compare sections and of backend auto's "
                        "measurement (default 640x480; the issue's KITTI-like depth is 704x352)")
    parser.add_argument("--batch-sizes", type=parse_batch_sizes, default=(1, 4, 16), help="e.g. 1,4,16")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repetitions (default 100 on CUDA, 20 on the CPU; fewer for big CPU batches)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 10 CUDA, 3 CPU)")
    parser.add_argument("--sizes", type=parse_sizes, default=((480, 640), (720, 1280)),
                        help="camera sizes WIDTHxHEIGHT of the frame section, e.g. 640x480,1280x720")
    parser.add_argument("--compare", action="store_true", help="also run a plain fp32 eager baseline and print ratios")
    parser.add_argument("--compile", dest="compile_mode", default="none", choices=COMPILE_MODES,
                        help="torch backend: torch.compile mode")
    parser.add_argument("--cuda-graphs", action="store_true", help="torch backend on CUDA: capture CUDA graphs")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of every backend, the --compare baseline included (default: physical cores)")
    parser.add_argument("--cameras", type=int, default=0,
                        help="also measure N cameras on one model (N frames batched vs one by one, memory vs one "
                             "camera) at the first --sizes size, before the other sections")
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    device = resolve_device(args.device)
    on_cuda = device.type == "cuda"
    precision, backend = args.precision, args.backend  # auto: resolved (or measured) by auto_select.predictor_for
    repeats = args.repeats if args.repeats is not None else (100 if on_cuda else 20)
    warmup = args.warmup if args.warmup is not None else (10 if on_cuda else 3)
    if repeats < 1 or warmup < 0:
        raise ValueError("--repeats must be >= 1 and --warmup >= 0")
    return Settings(
        device=str(device), precision=precision, backend=backend, optimize=not args.no_optimize,
        batch_sizes=tuple(args.batch_sizes), repeats=repeats, warmup=warmup, sizes=tuple(args.sizes),
        tiny=args.tiny, compare=args.compare, compile_mode=args.compile_mode, cuda_graphs=args.cuda_graphs,
        threads=args.threads, output_size=tuple(args.output_size), auto_cache=args.auto_cache, cameras=args.cameras,
        calibration_images=args.calibration_images,
    )


# ---- model and predictors ------------------------------------------------------------------------


def build_model(args: argparse.Namespace, probe_image: np.ndarray) -> tuple[SpaceClip, object, str]:
    """The model to measure, its checkpoint record, and a note on where its weights come from."""
    if args.checkpoint:
        model, record = load_model(args.checkpoint, backbone=backbone_from_args(args), decoder=decoder_from_args(args))
        return model.eval(), record, f"checkpoint {args.checkpoint}"
    if args.tiny:
        config = tiny_model_config()
    else:
        backbone = backbone_from_args(args) or BackboneConfig()
        config = ModelConfig(backbone=backbone, decoder=decoder_from_args(args) or DecoderConfig())
    torch.manual_seed(0)
    model = SpaceClip(config).eval()
    make_decoder_realistic(model, probe_image)
    weights = config.backbone.pretrained or "random"
    return model, None, f"encoder {weights}, decoder random with realistic batch-norm statistics"


def repeats_for_batch(settings: Settings, batch: int) -> tuple[int, int]:
    """(warm-up, repeats) for a batch: CPU batches take seconds, so big ones get 1 warm-up and
    about repeats / batch timed runs (at least 3), which keeps a default CPU run to a few minutes."""
    if settings.device.startswith("cuda") or batch == 1:
        return settings.warmup, settings.repeats
    return min(settings.warmup, 1), max(3, math.ceil(settings.repeats / batch))


def encoder_pixels(predictor: DepthPredictor, image: np.ndarray, batch: int) -> torch.Tensor:
    pixels = pixels_from_frames(image, predictor.input_size, predictor.mean, predictor.std)
    return pixels.repeat(batch, 1, 1, 1).to(predictor.device)


# ---- sections ------------------------------------------------------------------------------------


def bench_model(predictor: DepthPredictor, settings: Settings, image: np.ndarray, memory: MemoryProbe) -> list[dict]:
    """Encoder, decoder and total latency per batch size; total includes the resize to 640x480.

    Memory per batch: CUDA max allocated during that batch's runs, or the process RSS after them
    (ONNX Runtime's arena keeps its peak, so the batch-1 row is the batch-1 footprint).
    """
    synchronize = device_synchronizer(predictor.device)
    split = predictor.engine.split_runners() if hasattr(predictor.engine, "split_runners") else None
    rows = []
    for batch in settings.batch_sizes:
        pixels = encoder_pixels(predictor, image, batch)
        candidates = {"total": lambda p=pixels: predictor.engine.run(p, settings.output_size, False)}
        if split is not None:
            encode, decode = split
            with torch.inference_mode():
                features = encode(pixels)
            candidates["encoder"] = lambda p=pixels, run=encode: run(p)
            candidates["decoder"] = lambda f=features, run=decode: run(f, settings.output_size)
        warmup, repeats = repeats_for_batch(settings, batch)
        logger.info("model section: batch %d, %d repeats", batch, repeats)
        memory.reset()
        with torch.inference_mode():
            stats = time_interleaved(candidates, warmup, repeats, synchronize)
        rows.append({
            "batch": batch,
            "total": stats["total"].to_dict(),
            "encoder": stats["encoder"].to_dict() if "encoder" in stats else None,
            "decoder": stats["decoder"].to_dict() if "decoder" in stats else None,
            "images_per_s": round(batch / (stats["total"].median_ms / 1e3), 2),
            "memory": memory.read(),
        })
    return rows


def bench_pre_and_post(predictor: DepthPredictor, settings: Settings, image: np.ndarray) -> dict:
    """The torch work around the model at batch 1: frame upload + resize/normalise, and the final
    bilinear resize of the 224x224 depth map to 640x480 (part of the decoder timing above)."""
    import torch.nn.functional as F

    synchronize = device_synchronizer(predictor.device)
    frame = image[None]
    depth_map = torch.rand(1, 1, *predictor.input_size, device=predictor.device)
    candidates = {
        "preprocess": lambda: predictor.prepare_inputs(frame),
        "final_resize": lambda: F.interpolate(depth_map, size=settings.output_size, mode="bilinear",
                                              align_corners=False),
    }
    with torch.inference_mode():
        stats = time_interleaved(candidates, settings.warmup, settings.repeats, synchronize)
    return {name: value.to_dict() for name, value in stats.items()}


def bench_frames(predictor: DepthPredictor, settings: Settings) -> list[dict]:
    """The node's per-frame path at each camera size, stage by stage, ending in serialised bytes.

    Runs the node's own frame processor (``outputs.frame_processor``) with its default outputs: a depth
    Image and an organised xyz PointCloud2 (colour picture and embedding off).
    """
    from rclpy.serialization import serialize_message  # works without a running node
    from std_msgs.msg import Header

    from ..msgs import camera_info_from_intrinsics, rgb_to_image_msg
    from ..outputs.calibration import CameraCalibration
    from ..outputs.frame_processor import DepthFrameProcessor
    from ..outputs.options import OutputOptions

    synchronize = device_synchronizer(predictor.device)
    processor = DepthFrameProcessor(predictor)
    options = OutputOptions(
        publish_points=True, points_organized=True, points_stride=1, points_rgb=False,
        publish_colored=False, publish_embedding=False, output_width=0, output_height=0,
    )
    rows = []
    for height, width in settings.sizes:
        header = Header(frame_id="camera")
        image_msg = rgb_to_image_msg(synthetic_camera_image(height, width, seed=1), header)
        camera = camera_from_fov(width, height, BENCHMARK_CAMERA_FOV_DEG).intrinsics
        calibration = CameraCalibration.from_msg(camera_info_from_intrinsics(camera, header))
        samples: list[dict[str, float]] = []
        for index in range(settings.warmup + settings.repeats):
            clock = StageClock(synchronize=synchronize)
            clock.start()
            outputs = processor.process(image_msg, calibration, options, clock)
            serialize_message(outputs.depth_image)
            serialize_message(outputs.points)
            clock.stamp("serialize")
            if index >= settings.warmup:
                samples.append(clock.seconds)
        stages = {name: TimingStats.from_seconds([s[name] for s in samples]).to_dict() for name in samples[0]}
        total = TimingStats.from_seconds([sum(s.values()) for s in samples])
        rows.append({
            "size": f"{width}x{height}",
            "total": total.to_dict(),
            "stages": stages,
            "frames_per_s": round(1e3 / total.median_ms, 2),
            "cloud_points": int(outputs.points.width * outputs.points.height),
        })
        logger.info("frame section: %dx%d median %.1f ms", width, height, total.median_ms)
    return rows


def bench_compare(
    model: SpaceClip, fast: DepthPredictor, settings: Settings, image: np.ndarray, baseline_threads: int
) -> dict:
    """Plain fp32 eager baseline of the same model, timed in alternation with the fast path, each
    timed call after an untimed one of the same path (``time_interleaved``'s ``lead_in``).

    Each runs with its own torch thread count (the baseline with the process default, the fast
    path with what its options set), since the setting is process-wide.
    """
    fast_threads = torch.get_num_threads()
    with torch_threads(baseline_threads):
        baseline = DepthPredictor(model, device=settings.device, precision="fp32", options=unoptimized_options("torch"))
    synchronize = device_synchronizer(fast.device)
    pixels = encoder_pixels(fast, image, 1)
    size = settings.output_size

    def with_threads(count: int, function):
        def call(*args):
            with torch_threads(count):
                return function(*args)

        return call

    candidates = {
        "baseline_total": with_threads(baseline_threads, lambda: baseline.engine.run(pixels, size, False)),
        "fast_total": with_threads(fast_threads, lambda: fast.engine.run(pixels, size, False)),
    }
    for name, engine, threads in (("baseline", baseline.engine, baseline_threads), ("fast", fast.engine, fast_threads)):
        split = engine.split_runners() if hasattr(engine, "split_runners") else None
        if split is None:
            continue
        encode, decode = (with_threads(threads, runner) for runner in split)
        with torch.inference_mode():
            features = encode(pixels)
        candidates[f"{name}_encoder"] = lambda p=pixels, run=encode: run(p)
        candidates[f"{name}_decoder"] = lambda f=features, run=decode: run(f, size)

    logger.info("compare: %d alternating rounds of baseline and fast path", settings.repeats)
    with torch.inference_mode():
        # lead_in: each path is timed after a call of its own, as it runs in a node, not right after
        # the other one (whose torch threads would still be spinning: time_interleaved)
        stats = time_interleaved(candidates, settings.warmup, settings.repeats, synchronize, lead_in=1)
        with torch_threads(baseline_threads):
            reference = baseline.infer(image[None], output_size=size).depth
        fast_depth = fast.infer(image[None], output_size=size).depth
    agreement = depth_agreement(fast_depth, reference)
    return {
        "baseline": f"torch eager fp32, no re-writes, {baseline_threads} torch threads",
        "fast_torch_threads": fast_threads,
        **{name: value.to_dict() for name, value in stats.items()},
        "speedup_median": round(stats["baseline_total"].median_ms / stats["fast_total"].median_ms, 3),
        "speedup_min": round(stats["baseline_total"].min_ms / stats["fast_total"].min_ms, 3),
        "depth_agreement": agreement,
        "tolerance": {"median_relative_error": DEPTH_TOLERANCE.median_relative,
                      "max_abs_error_m": DEPTH_TOLERANCE.max_abs_m},
        "cpu_flags": machine_info(fast.device)["cpu_flags"],
        "within_tolerance": DEPTH_TOLERANCE.problem(agreement) is None,
    }


# ---- report --------------------------------------------------------------------------------------


def _ms(stats: dict | None) -> str:
    return "     n/a      " if stats is None else f"{stats['median_ms']:8.2f} {stats['p95_ms']:8.2f}"


def format_report(report: dict) -> str:
    height, width = report["model_output_size"]
    lines = [
        f"SPACE-CLIP benchmark - {report['predictor']}",
        f"machine: {report['machine']['cpu_model']}, {report['machine']['physical_cores']} cores"
        + (f", GPU {report['machine']['gpu']['name']}" if report["machine"]["gpu"] else "")
        + f"; load average at start {report['machine']['load_average_at_start']}, "
        f"at end {report['machine']['load_average_1_5_15']}; CPU flags {' '.join(report['machine']['cpu_flags'])}",
        *([f"backend auto chose: {report['auto_choice']['description']}"] if report.get("auto_choice") else []),
        "",
        f"model only (depth {width}x{height}), ms: median p95",
        f"{'batch':>5} | {'encoder':^17} | {'decoder':^17} | {'total':^17} | images/s",
    ]
    for row in report["model_latency"]:
        lines.append(
            f"{row['batch']:>5} | {_ms(row['encoder'])} | {_ms(row['decoder'])} | {_ms(row['total'])} | "
            f"{row['images_per_s']:8.1f}"
        )
    around = report["around_model"]
    lines.append(
        f"around the model (batch 1): preprocess 640x480 frame {around['preprocess']['median_ms']:.2f} ms, "
        f"final depth resize to {width}x{height} {around['final_resize']['median_ms']:.2f} ms (inside 'decoder')"
    )
    if report["frame_latency"]:
        lines += ["", "node per-frame path (Image msg -> depth Image + PointCloud2, serialised), ms: median p95"]
        for row in report["frame_latency"]:
            stages = ", ".join(f"{name} {s['median_ms']:.2f}" for name, s in row["stages"].items())
            lines.append(f"{row['size']:>9} | total {_ms(row['total'])} | {row['frames_per_s']:.1f} fps | {stages}")
    lines += [""]
    for row in report["model_latency"]:
        lines.append(f"memory, batch {row['batch']}: " + ", ".join(f"{k} {v}" for k, v in row["memory"].items()))
    lines.append("memory, frame path: " + ", ".join(f"{k} {v}" for k, v in report["memory"]["frame_path"].items()))
    if report.get("cameras"):
        from .benchmark_cameras import format_cameras

        lines += ["", *format_cameras(report["cameras"])]
    compare = report.get("compare")
    if compare:
        agreement = compare["depth_agreement"]
        lines += ["", "compare at batch 1, alternating rounds, ms: median p95"]
        for name in ("baseline", "fast"):
            lines.append(
                f"{name:>8} | {_ms(compare.get(name + '_encoder'))} | {_ms(compare.get(name + '_decoder'))} | "
                f"{_ms(compare[name + '_total'])}"
            )
        lines += [
            f"fast path {compare['speedup_median']:.2f}x faster than the baseline by median "
            f"(by minimum {compare['speedup_min']:.2f}x)",
            f"depth vs baseline: median relative error {agreement['median_relative_error']:.2e}, "
            f"p99 {agreement['p99_relative_error']:.2e}, max abs error {agreement['max_abs_error_m']:.3f} m "
            f"(reference median depth {agreement['reference_median_depth_m']:.2f} m): "
            + ("within" if compare["within_tolerance"] else "OUTSIDE")
            + f" the tolerance (median <= {compare['tolerance']['median_relative_error']:.0%}, "
            f"max abs <= {compare['tolerance']['max_abs_error_m']} m)",
        ]
    return "\n".join(lines)


def auto_choice_report(predictor: DepthPredictor) -> dict | None:
    """What backend auto chose (None when a backend was named): path, latency, every candidate's outcome."""
    choice = predictor.auto_choice
    if choice is None:
        return None
    return {"path": choice.name, "latency_ms": choice.latency_ms, "measured_now": choice.measured_now,
            "measured_at": choice.measured_at, "candidates": choice.candidates, "cache_file": choice.cache_file,
            "output_size": list(choice.output_size), "description": choice.describe()}


def run(args: argparse.Namespace) -> dict:
    load_at_start = [round(v, 2) for v in os.getloadavg()]
    settings = settings_from_args(args)
    device = torch.device(settings.device)
    probe_image = synthetic_camera_image(*MODEL_OUTPUT_SIZE, seed=0)
    model, record, weights = build_model(args, probe_image)
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)  # the baseline and torch pre/post-processing too
    baseline_threads = torch.get_num_threads()  # before the fast path's options change it
    memory = MemoryProbe(device)
    predictor = predictor_for(
        model, record, device=settings.device, precision=settings.precision, backend=settings.backend,
        optimize=settings.optimize, compile_mode=settings.compile_mode, cuda_graphs=settings.cuda_graphs,
        threads=settings.threads, output_size=settings.output_size, cache_path=settings.auto_cache,
        calibration_images=settings.calibration_images or None,
    )
    logger.info("measuring %s", predictor.describe())
    cameras = None
    if settings.cameras:  # first: no bigger batch has grown the process yet
        from .benchmark_cameras import bench_cameras

        warmup, repeats = repeats_for_batch(settings, settings.cameras)
        cameras = bench_cameras(predictor, settings.cameras, (settings.sizes or (MODEL_OUTPUT_SIZE,))[0], warmup,
                                repeats, log=logger.info)
    model_rows = bench_model(predictor, settings, probe_image, memory)
    around_model = bench_pre_and_post(predictor, settings, probe_image)
    memory.reset()
    frame_rows = bench_frames(predictor, settings) if settings.sizes else []
    memory_used = {"frame_path": memory.read(), **{f"batch_{row['batch']}": row["memory"] for row in model_rows}}
    fast_torch_threads = torch.get_num_threads()
    compare = bench_compare(model, predictor, settings, probe_image, baseline_threads) if settings.compare else None
    report = {
        "tool": "space-clip-benchmark",
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": args.command_line or " ".join(["space-clip-benchmark", *sys.argv[1:]]),
        "machine": machine_info(device),
        "software": software_versions(),
        "settings": {**asdict(settings), "sizes": [f"{w}x{h}" for h, w in settings.sizes]},
        "weights": weights,
        "predictor": predictor.describe(),
        "parameters": model.parameter_counts()["total"],
        "model_output_size": list(settings.output_size),
        "auto_choice": auto_choice_report(predictor),
        "model_latency": model_rows,
        "around_model": around_model,
        "frame_latency": frame_rows,
        "memory": memory_used,
        "compare": compare,
        "cameras": cameras,
    }
    report["software"]["torch_threads"] = fast_torch_threads
    report["machine"]["load_average_at_start"] = load_at_start
    return report


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = None if argv is None else " ".join(["space-clip-benchmark", *argv])
    setup_logging()
    try:
        report = run(args)
    except (CheckpointError, ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"space-clip-benchmark: error: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
