#!/usr/bin/env python3
"""Print the depth-quality tables of docs/ros_node.md ("Depth a costmap can trust").

    .venv/bin/python scripts/depth_quality.py                 # every table (about 10 min on 2 CPU cores)
    .venv/bin/python scripts/depth_quality.py --only confidence scale

Decoders: the demo's, trained on synthetic rooms and streets (``space_clip_ros.demo.checkpoint``:
cached in ~/.cache/space_clip_ros/demo, trained first when missing, a few minutes each on a CPU),
unless --indoor-checkpoint / --street-checkpoint name others. Scenes: held-out synthetic scenes
(seeds no training run renders, ``outputs.quality.HELD_OUT_SEEDS``) with exact depth. Costs: the
reference ViT-B/16 + decoder (random weights: cost does not depend on them) at 640x480, torch on
the CPU, median of repeated runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from space_clip_ros.outputs import quality  # noqa: E402

TABLES = ("confidence", "flying", "scale", "jitter", "costs")
#: Camera sizes of the pictures and of the flying-pixel table's decoder rows (the filter's rule
#: depends on the resolution; the decoders predict at any size).
CAMERA_SIZES = {"indoor": (320, 240), "street": (640, 194)}
#: Sizes of the docs pictures (small files).
PICTURE_SIZES = {"indoor": (224, 168), "street": (416, 126)}


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration, subprocess.SubprocessError):
        name = platform.processor() or "unknown"
    import os

    return f"{name}, {os.cpu_count()} logical cores"


def _predictor(checkpoint: str | None, scene: str):
    from space_clip_ros.demo.checkpoint import DemoTraining, ensure_demo_checkpoint
    from space_clip_ros.inference.runtime.predictor import DepthPredictor

    path = checkpoint or ensure_demo_checkpoint(DemoTraining(scene=scene, device="cpu"))
    return DepthPredictor.from_checkpoint(path, device="cpu")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def confidence_table(predictors: dict, frames_per_scene: int) -> str:
    import torch

    from space_clip_ros.data.tiny_model import tiny_model_config
    from space_clip_ros.inference.runtime.predictor import DepthPredictor
    from space_clip_ros.model import create_model

    torch.manual_seed(0)
    untrained = DepthPredictor(create_model(tiny_model_config()), device="cpu")
    rows = []
    for label, kind, predictor in [(f"demo decoder, {k}", k, p) for k, p in predictors.items()] + [
        ("untrained tiny decoder (random weights), indoor", "indoor", untrained)
    ]:
        if predictor is untrained:
            frames = quality.held_out_frames(predictor, kind, frames_per_scene=frames_per_scene, with_confidence=True,
                                             size=(128, 96))
            report = quality.confidence_report(frames, 1e-3, 10.0, kind)
        else:
            report = quality.synthetic_confidence_report(predictor, kind, frames_per_scene=frames_per_scene)
        c = report.curves
        rows.append([
            label, str(c.images), f"{report.abs_rel:.4f}", f"{report.abs_rel_without_least_confident:.4f}",
            f"{report.abs_rel_without_random:.4f}", f"{report.abs_rel_oracle:.4f}",
            f"{100 * (1 - report.abs_rel_without_least_confident / report.abs_rel_without_random):.1f} %",
            f"{c.ause:.4f}", f"{c.ause_random:.4f}",
        ])
    return _table(["decoder, scenes", "frames", "AbsRel (all)", "- 20 % least confident", "- random 20 %",
                   "- 20 % largest errors (oracle)", "least confident below random by", "AUSE",
                   "AUSE of random order"], rows)


def flying_table(predictors: dict, frames_per_scene: int) -> str:
    rows = []
    for kind in ("indoor", "street"):
        for threshold in (0.02, 0.04, 0.08):
            r = quality.synthetic_flying_pixel_report(kind, seed=0, flying_pixel_threshold=threshold)
            rows.append([f"{kind}, 640 px wide", f"{threshold:g}", str(r.points),
                         f"{100 * r.flying_share:.2f} %", f"{100 * r.flying_share_filtered:.2f} %",
                         f"{r.reduction:.0f}x" if math.isfinite(r.reduction) else "all gone",
                         f"{100 * r.correct_lost_share:.1f} %"])
    stand_in = _table(["smeared exact depth (a network's edge ramps), scene", "flying_pixel_threshold", "cloud points",
                       "flying points", "flying points, filtered", "fewer flying by", "good points removed"], rows)
    rows = []
    for kind, predictor in predictors.items():
        frames = quality.held_out_frames(predictor, kind, frames_per_scene=frames_per_scene, size=CAMERA_SIZES[kind])
        low, high = quality._depth_range(predictor, kind)  # noqa: SLF001 - the checkpoint's range
        size = f"{frames[0].exact.shape[1]}x{frames[0].exact.shape[0]}"
        for threshold in (0.02, 0.04, 0.08):
            r = quality.flying_filter_errors(frames, threshold, low, high)
            rows.append([f"{kind}, {size}, {len(frames)} frames", f"{threshold:g}", str(r.points),
                         f"{100 * r.removed / r.points:.1f} %", f"{r.abs_rel_removed:.3f}", f"{r.abs_rel_kept:.3f}",
                         f"{100 * r.removed_at_true_edges:.0f} %", f"{100 * r.pixels_at_true_edges:.0f} %"])
    trained = _table(["demo decoder, scenes", "flying_pixel_threshold", "cloud points", "removed",
                      "AbsRel of removed points", "AbsRel of kept points", "removed points at true edges",
                      "all points at true edges"], rows)
    return stand_in + "\n\n" + trained


def scale_table(predictors: dict, frames_per_scene: int) -> str:
    rows = []
    for kind, predictor in predictors.items():
        frames = quality.held_out_frames(predictor, kind, frames_per_scene=frames_per_scene)
        low, high = quality._depth_range(predictor, kind)  # noqa: SLF001
        # The anchor on the scenes' exact depth (sky filled beyond the range): what the fit itself does.
        exact = [dataclasses.replace(f, depth=np.where(f.exact > 0, f.exact, np.float32(1.5 * high)).astype(np.float32))
                 for f in frames]
        for source, items in (("demo decoder", frames), ("exact depth", exact)):
            for anchor in ("ground_plane", "sparse_points"):
                for row in quality.scale_recovery_report(items, low, high, kind, anchor, wrong_scales=(0.7, 1.0, 1.4)):
                    rows.append([f"{kind}, {source}", anchor, f"{row.wrong_scale:g}", f"{row.abs_rel_correct:.4f}",
                                 f"{row.abs_rel_wrong:.4f}", f"{row.abs_rel_corrected:.4f}",
                                 "n/a" if math.isnan(row.relative_difference) else
                                 f"{100 * row.relative_difference:+.1f} %", f"{row.fitted_frames}/{row.frames}"])
    return _table(["scenes, depth", "scale_anchor", "depth x", "AbsRel as predicted", "AbsRel scaled",
                   "AbsRel scaled, anchored", "anchored vs as predicted", "frames with a fit"], rows)


def jitter_table(predictors: dict, frames: int) -> str:
    rows = []
    for kind, predictor in predictors.items():
        sequence = quality.held_out_frames(predictor, kind, seeds=(quality.HELD_OUT_SEEDS[0],),
                                           frames_per_scene=frames)
        for anchor in ("ground_plane", "sparse_points"):
            for row in quality.scale_jitter_report(sequence, kind, anchor, smoothings=(0.0, 0.5, 0.8)):
                rows.append([kind, anchor, f"{row.smoothing:g}", f"{row.fitted_frames}/{row.frames}",
                             "n/a" if math.isnan(row.jitter_percent) else f"{row.jitter_percent:.2f} %",
                             "n/a" if math.isnan(row.mean_scale) else f"{row.mean_scale:.3f}"])
    return _table(["sequence", "scale_anchor", "scale_smoothing", "frames with a fit",
                   "frame-to-frame jitter (std of d ln s)", "mean scale"], rows)


def write_pictures(predictors: dict, folder: Path) -> list[Path]:
    """The pictures of docs/ros_node.md (held-out scene 701, its second frame)."""
    import cv2

    from space_clip_ros.demo import pictures
    from space_clip_ros.outputs.scale_anchor import scale_from_ground_plane

    folder.mkdir(parents=True, exist_ok=True)
    small = [cv2.IMWRITE_PNG_COMPRESSION, 9]
    written = []

    def save(name: str, picture) -> None:
        path = folder / name
        cv2.imwrite(str(path), picture, small)
        written.append(path)

    frames = {kind: quality.held_out_frames(predictor, kind, seeds=(quality.HELD_OUT_SEEDS[0],), frames_per_scene=3,
                                            with_confidence=True, size=PICTURE_SIZES[kind])[1]
              for kind, predictor in predictors.items()}
    street, indoor = frames["street"], frames["indoor"]
    save("confidence_street.png", pictures.confidence_picture(
        street.rgb, street.depth, street.confidence, 0.0, 60.0, ground_truth=street.exact,
        caption="demo decoder on a held-out synthetic street: low confidence where the error is high"))
    smeared = quality.smear_depth_edges(indoor.exact, 4, fill_depth=15.0)
    save("flying_pixels.png", pictures.flying_pixels_picture(
        indoor.rgb, smeared, indoor.intrinsics, 0.04, 0.1, 10.0, view_size=PICTURE_SIZES["indoor"],
        caption="exact depth smeared at its edges as a network smears them; the filter takes the veils out"))
    save("rep117.png", pictures.rep117_picture(
        street.rgb, street.depth, 3.0, 30.0, caption="min_depth 3 m, max_depth 30 m: farther than 30 m "
        "become +Inf (free space up to 30 m), nearer than 3 m -Inf; NaN only where no estimate"))
    plane = scale_from_ground_plane(street.depth * np.float32(0.7), street.intrinsics, street.camera_height)
    save("ground_plane.png", pictures.ground_plane_picture(
        street.rgb, street.depth * np.float32(0.7), street.intrinsics, plane,
        caption=f"; depth x 0.7 on purpose, camera_height {street.camera_height:.2f} m"))
    return written


def _median_ms(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return 1000.0 * float(np.median(times))


def _decoder_macs(model, features, size, aux_heads) -> int:
    """Multiply-accumulates of the decoder's convolutions and linear layers for one frame (hooks)."""
    import torch

    total = 0

    def count(module, inputs, output):
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1] if hasattr(module, "kernel_size") else 1
        if isinstance(module, torch.nn.ConvTranspose2d):
            total += inputs[0].numel() * module.out_channels * kernel
        elif isinstance(module, torch.nn.Conv2d):
            total += output.numel() * module.in_channels // module.groups * kernel
        elif isinstance(module, torch.nn.Linear):
            total += output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.decoder.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear))]
    try:
        with torch.inference_mode():
            model.decode(features, size, aux_heads=aux_heads)
    finally:
        for hook in hooks:
            hook.remove()
    return total


def costs_table(repeats: int) -> str:
    import os

    import torch
    from std_msgs.msg import Header

    from space_clip_ros.data.synthetic import NYU_INTRINSICS, SceneConfig, make_scene, render, trajectory
    from space_clip_ros.inference.runtime.predictor import DepthPredictor
    from space_clip_ros.model import ModelConfig, create_model
    from space_clip_ros.model.confidence import RELEASE_AUX_WEIGHTS, aux_agreement_confidence
    from space_clip_ros.msgs import camera_info_from_intrinsics
    from space_clip_ros.outputs.anchoring import DepthScaleAnchor
    from space_clip_ros.outputs.builder import DepthOutputBuilder
    from space_clip_ros.outputs.calibration import CameraCalibration
    from space_clip_ros.outputs.options import OutputOptions

    torch.manual_seed(0)
    model = create_model(ModelConfig()).eval()
    predictor = DepthPredictor(model, device="cpu")
    scene = make_scene(SceneConfig(kind="indoor", seed=quality.HELD_OUT_SEEDS[0]))
    rgb, exact = render(scene, trajectory(scene, 3)[1], NYU_INTRINSICS)
    batch = rgb[None]
    size = rgb.shape[:2]
    heads = (0, 1)
    rows = []
    with torch.inference_mode():
        features = model.forward_features(predictor.prepare_inputs(batch))
    plain_macs = _decoder_macs(model, features, size, None)
    aux_macs = _decoder_macs(model, features, size, heads) - plain_macs
    rows.append(["decoder multiply-accumulates (reference decoder, 640x480)", f"{plain_macs / 1e9:.2f} G",
                 f"+{aux_macs / 1e9:.3f} G for aux heads 0, 1 ({100 * aux_macs / plain_macs:.1f} %)"])

    # Decoder alone, with and without the confidence, interleaved so that a load change hits both.
    def decode_plain():
        with torch.inference_mode():
            return model.decode(features, size).depth

    def decode_confidence():
        with torch.inference_mode():
            out = model.decode(features, size, aux_heads=heads)
            return aux_agreement_confidence(out.depth[:, 0], [a[:, 0] for a in out.aux], RELEASE_AUX_WEIGHTS[:2])

    decode_plain(), decode_confidence()
    plain, with_conf, differences = [], [], []
    for _ in range(repeats):
        started = time.perf_counter()
        decode_plain()
        middle = time.perf_counter()
        decode_confidence()
        done = time.perf_counter()
        plain.append(middle - started)
        with_conf.append(done - middle)
        differences.append((done - middle) - (middle - started))
    rows.append(["decoder, 640x480 depth (interleaved runs)", f"{1000 * np.median(plain):.0f}",
                 f"with confidence {1000 * np.median(with_conf):.0f} ms: median difference "
                 f"{1000 * np.median(differences):+.1f} ms"])
    whole = _median_ms(lambda: predictor.infer(batch), max(3, repeats // 3))
    rows.append(["whole model (ViT-B/16 + decoder), 640x480 depth", f"{whole:.0f}", "-"])

    prediction = predictor.infer(batch, with_confidence=True)
    confidence = prediction.confidence[0].numpy()
    depth = exact.astype(np.float32) * np.float32(1.05)  # the scene's structure, positive everywhere
    depth[depth <= 0] = 12.0
    header = Header(frame_id="camera")
    calibration = CameraCalibration.from_msg(camera_info_from_intrinsics(NYU_INTRINSICS, header))
    builder = DepthOutputBuilder(None)
    base_options = OutputOptions(max_depth=10.0)

    def build(**changes):
        options = base_options.replace(**changes)
        anchor = DepthScaleAnchor()
        return lambda: builder.build(depth, header, calibration, options, confidence=confidence, anchor=anchor)

    base = _median_ms(build(), repeats)
    rows.append(["outputs: depth image + organised cloud (defaults)", f"{base:.1f}", "-"])
    for label, changes in [
        ("+ depth/confidence message", {"publish_confidence": True}),
        ("+ points_min_confidence 0.5", {"points_min_confidence": 0.5}),
        ("+ flying_pixel_threshold 0.04", {"flying_pixel_threshold": 0.04}),
        ("+ out_of_range rep117", {"out_of_range": "rep117"}),
        ("+ scale_anchor ground_plane", {"scale_anchor": "ground_plane", "camera_height": scene.camera_height}),
    ]:
        cost = _median_ms(build(**changes), repeats)
        rows.append([label, f"{cost:.1f}", f"{cost - base:+.1f} ms"])
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return _table(["step (640x480, torch on the CPU)", "median ms", "added"], rows) + f"\n\nload average: {load}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=TABLES, default=list(TABLES),
                        help="tables to print (none: only --pictures)")
    parser.add_argument("--indoor-checkpoint", help="decoder for the indoor scenes (default: the demo's)")
    parser.add_argument("--street-checkpoint", help="decoder for the street scenes (default: the demo's)")
    parser.add_argument("--frames-per-scene", type=int, default=6, help="frames of each held-out scene (4 scenes)")
    parser.add_argument("--sequence-frames", type=int, default=40, help="frames of the jitter sequence")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per cost figure")
    parser.add_argument("--pictures", type=Path, metavar="DIR",
                        help="also write the pictures of docs/ros_node.md into DIR (e.g. docs/images)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(f"CPU: {_cpu()}\n")
    needs_models = set(args.only) & {"confidence", "flying", "scale", "jitter"} or args.pictures
    predictors = {}
    if needs_models:
        predictors = {"indoor": _predictor(args.indoor_checkpoint, "indoor"),
                      "street": _predictor(args.street_checkpoint, "street")}
    sections = {
        "confidence": ("Confidence: AbsRel after removing 20 % of the pixels, and AUSE",
                       lambda: confidence_table(predictors, args.frames_per_scene)),
        "flying": ("Flying points in the cloud, without and with the filter",
                   lambda: flying_table(predictors, args.frames_per_scene)),
        "scale": ("Scale recovery: depth scaled by 0.7 and 1.4, then anchored",
                  lambda: scale_table(predictors, args.frames_per_scene)),
        "jitter": ("Scale jitter over a camera sequence", lambda: jitter_table(predictors, args.sequence_frames)),
        "costs": ("Costs", lambda: costs_table(args.repeats)),
    }
    for name in args.only:
        title, make = sections[name]
        started = time.perf_counter()
        table = make()
        print(f"### {title}\n\n{table}\n\n({time.perf_counter() - started:.0f} s)\n", flush=True)
    if args.pictures:
        for path in write_pictures(predictors, args.pictures):
            print(f"wrote {path} ({path.stat().st_size // 1024} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
