"""space-clip-predict: depth for an image, a folder of images or a video, with the node's predictor.

Examples:
  space-clip-predict --checkpoint runs/nyu/best photo.jpg
  space-clip-predict --checkpoint runs/nyu/best frames/ --out depth/ --npy
  space-clip-predict --checkpoint runs/kitti/best drive.mp4 --ply --intrinsics 721.5,721.5,609.6,172.9

Per frame, in --out (default ``predictions/``):
  <name>_depth.png        16-bit PNG, depth in millimetres (0 = invalid; clipped at 65.535 m)
  <name>_depth_color.png  colour-mapped depth for viewing (turbo, near = warm)
  <name>_depth.npy        float32 metres (with --npy)
  <name>.ply              coloured point cloud in the camera's optical frame (with --ply; needs
                          --intrinsics "fx,fy,cx,cy" in pixels of the input, or a YAML file with
                          fx, fy, cx, cy [, width, height] or a ROS camera_info YAML)
Video frames are named frame_000000, frame_000001, ...

With intrinsics and a checkpoint that records its training focal length, depth is rescaled by the
ratio of focal lengths (SPEC section 6, canonical camera); --no-focal-rescale turns that off.
Inference is inference.runtime.predictor.DepthPredictor, the ROS node's own predictor.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..data.camera import CameraIntrinsics
from ..data.formats import read_intrinsics_file
from ..model.checkpoint import CheckpointError, checkpoint_paths
from .common import add_inference_arguments, add_model_arguments, predictor_from_args, setup_logging, tool_parser

logger = logging.getLogger("space_clip_ros.predict")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
MM_PER_M = 1000.0


@dataclass
class Frame:
    name: str
    rgb: np.ndarray | None  # None: unreadable (reported and skipped)
    source: str


def build_parser() -> argparse.ArgumentParser:
    parser = tool_parser("space-clip-predict", __doc__)
    add_model_arguments(parser)
    parser.add_argument("input", help="an image, a folder of images, or a video file")
    parser.add_argument("--out", default="predictions", help="output folder (default: predictions/)")
    parser.add_argument("--npy", action="store_true", help="also write float32 depth in metres as .npy")
    parser.add_argument("--ply", action="store_true", help="also write a coloured point cloud (.ply)")
    parser.add_argument("--intrinsics", help='"fx,fy,cx,cy" (pixels of the input) or a YAML file')
    parser.add_argument("--no-focal-rescale", action="store_true", help="do not rescale depth by f_camera/f_train")
    parser.add_argument("--batch-size", type=int, default=4, help="frames per forward pass")
    add_inference_arguments(parser.add_argument_group("inference"))
    parser.add_argument("--max-depth", type=float, default=None, help="far end of the colour map (default: "
                        "the checkpoint's max depth)")
    parser.add_argument("--colormap", default="turbo", help="OpenCV colour map name for the colour PNG")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


# ---------------------------------------------------------------------------------------------- inputs


def _read_image(path: Path) -> np.ndarray | None:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def iter_frames(source: Path) -> Iterator[Frame]:
    """Frames of an image, a folder of images (sorted by name) or a video."""
    if source.is_dir():
        for path in sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            yield Frame(path.stem, _read_image(path), str(path))
        return
    if source.suffix.lower() in IMAGE_SUFFIXES:
        yield Frame(source.stem, _read_image(source), str(source))
        return
    capture = cv2.VideoCapture(str(source))
    if not capture.isOpened():
        raise ValueError(f"{source} is neither an image ({', '.join(IMAGE_SUFFIXES)}), a folder, nor a readable video")
    try:
        index = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            yield Frame(f"frame_{index:06d}", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), f"{source}#{index}")
            index += 1
    finally:
        capture.release()


def count_frames(source: Path) -> int | None:
    if source.is_dir():
        return sum(1 for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if source.suffix.lower() in IMAGE_SUFFIXES:
        return 1
    capture = cv2.VideoCapture(str(source))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    capture.release()
    return count or None


def batches(frames: Iterator[Frame], size: int, report) -> Iterator[list[Frame]]:
    """Readable frames grouped by image size, at most ``size`` per group; unreadable ones reported."""
    batch: list[Frame] = []
    for frame in frames:
        if frame.rgb is None:
            report(frame)
            continue
        if batch and (len(batch) >= size or batch[0].rgb.shape != frame.rgb.shape):  # type: ignore[union-attr]
            yield batch
            batch = []
        batch.append(frame)
    if batch:
        yield batch


# ---------------------------------------------------------------------------------------------- intrinsics


@dataclass(frozen=True)
class IntrinsicsArgument:
    """What --intrinsics says: "fx,fy,cx,cy" in pixels of the input, or an intrinsics file."""

    inline: tuple[float, float, float, float] | None = None
    path: Path | None = None


def parse_intrinsics(text: str) -> IntrinsicsArgument:
    """--intrinsics "fx,fy,cx,cy", or a YAML/JSON file (read by ``data.formats.read_intrinsics_file``:
    flat fx, fy, cx, cy [, width, height] or a ROS camera_info YAML)."""
    path = Path(text)
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.is_file():
        if not path.is_file():
            raise ValueError(f"intrinsics file not found: {path}")
        return IntrinsicsArgument(path=path)
    try:
        fx, fy, cx, cy = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f'--intrinsics {text!r}: expected "fx,fy,cx,cy" or a YAML file') from None
    return IntrinsicsArgument(inline=(fx, fy, cx, cy))


def intrinsics_for(parsed: IntrinsicsArgument, height: int, width: int) -> CameraIntrinsics:
    """Intrinsics for a frame of ``height`` x ``width`` (scaled when the calibration's size differs)."""
    if parsed.inline is not None:
        return CameraIntrinsics(*parsed.inline, width, height).validate()
    calibrated = read_intrinsics_file(parsed.path, image_size=(width, height)).camera.intrinsics
    return calibrated if calibrated.size == (width, height) else calibrated.scaled_to(width, height)


# ---------------------------------------------------------------------------------------------- outputs


def depth_to_mm_png(depth_m: np.ndarray) -> np.ndarray:
    """Metres -> uint16 millimetres; non-finite or non-positive = 0 (invalid), clipped at 65535."""
    finite = np.isfinite(depth_m) & (depth_m > 0)
    mm = np.where(finite, np.round(depth_m * MM_PER_M), 0.0)
    return np.clip(mm, 0, 65535).astype(np.uint16)


def write_outputs(out: Path, frame: Frame, depth: np.ndarray, args, intrinsics, colour_range) -> None:
    from ..data.ply import write_ply
    from ..msgs.image import colorize_depth
    from ..msgs.pointcloud import backproject_depth

    if not cv2.imwrite(str(out / f"{frame.name}_depth.png"), depth_to_mm_png(depth)):
        raise OSError(f"could not write {out / f'{frame.name}_depth.png'}")
    colour = colorize_depth(depth.astype(np.float32), *colour_range, colormap=args.colormap)
    cv2.imwrite(str(out / f"{frame.name}_depth_color.png"), colour)
    if args.npy:
        np.save(out / f"{frame.name}_depth.npy", depth.astype(np.float32))
    if args.ply:
        points = backproject_depth(depth, intrinsics)  # (H, W, 3), NaN where depth is invalid
        write_ply(out / f"{frame.name}.ply", points.reshape(-1, 3), frame.rgb.reshape(-1, 3))  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    source = Path(args.input)
    if not source.exists():
        print(f"space-clip-predict: error: input {source} does not exist", file=sys.stderr)
        return 2
    if not args.checkpoint:
        print("space-clip-predict: error: --checkpoint is required (a NAME.safetensors + NAME.json pair "
              "written by space-clip-train)", file=sys.stderr)
        return 2
    weights, record_file = checkpoint_paths(args.checkpoint)
    if not weights.is_file() or not record_file.is_file():
        print(f"space-clip-predict: error: checkpoint {args.checkpoint} not found (need {weights} and "
              f"{record_file}). Train one with `space-clip-train --config config/train/synthetic.yaml` "
              "(quick start) or pass the path of an existing run's best/last checkpoint.", file=sys.stderr)
        return 2
    try:
        parsed_intrinsics = parse_intrinsics(args.intrinsics) if args.intrinsics else None
    except ValueError as exc:
        print(f"space-clip-predict: error: {exc}", file=sys.stderr)
        return 2
    if args.ply and parsed_intrinsics is None:
        print("space-clip-predict: error: --ply needs the camera intrinsics: --intrinsics fx,fy,cx,cy (pixels of "
              "the input images) or --intrinsics camera.yaml", file=sys.stderr)
        return 2

    from tqdm import tqdm

    from ..data.camera import focal_rescale_factor

    try:
        predictor = predictor_from_args(args)
    except (CheckpointError, ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"space-clip-predict: error: {exc}", file=sys.stderr)
        return 2
    logger.info("%s", predictor.describe())
    record = predictor.record
    max_depth = args.max_depth or (record.max_depth if record else 10.0)
    colour_range = (record.min_depth if record else 1e-3, max_depth)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    failures: list[str] = []

    def report(frame: Frame) -> None:
        failures.append(frame.source)
        print(f"space-clip-predict: warning: cannot read {frame.source}; skipped", file=sys.stderr)

    written = 0
    try:
        bar = tqdm(total=count_frames(source), unit="frame", disable=args.quiet)
        for group in batches(iter_frames(source), max(1, args.batch_size), report):
            height, width = group[0].rgb.shape[:2]  # type: ignore[union-attr]
            depth = predictor.predict(np.stack([f.rgb for f in group]))
            intrinsics = intrinsics_for(parsed_intrinsics, height, width) if parsed_intrinsics else None
            if intrinsics is not None and not args.no_focal_rescale:
                depth = depth * focal_rescale_factor(intrinsics.fx, intrinsics.fy, (height, width), record)
            for frame, frame_depth in zip(group, depth):
                write_outputs(out, frame, frame_depth, args, intrinsics, colour_range)
                written += 1
            bar.update(len(group))
        bar.close()
    except ValueError as exc:
        print(f"space-clip-predict: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {written} frame(s) to {out}" + (f"; {len(failures)} unreadable input(s) skipped" if failures else ""))
    return 0 if written or not failures else 1


if __name__ == "__main__":
    sys.exit(main())
