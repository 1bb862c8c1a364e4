"""space-clip-export: write the whole SPACE-CLIP model (encoder + decoder) as one ONNX graph.

Without --image-size the graph takes normalised float pixels (B, 3, 224, 224) and preprocessing
stays outside (the predictor's onnxruntime backend does it in torch). With --image-size H W it
takes uint8 RGB frames (B, H, W, 3) of that camera size and resizes (bicubic, antialiased, as
two exact matrix products) and normalises inside the graph - what a robot's TensorRT engine
wants. Output ``depth`` (B, 1, H', W') in metres; ``embedding`` (B, D) with --with-embedding.
See docs/export.md for building a TensorRT engine from the file.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from ..inference.benchmarking.synthetic import synthetic_camera_image
from ..inference.rewrites.decoder_int8 import (
    calibration_files,
    graph_inputs,
    quantize_onnx_decoder_int8,
    read_calibration_frames,
)
from ..inference.rewrites.export import IMAGE_INPUT, PIXELS_INPUT, ExportOptions, export_onnx, trtexec_command
from ..inference.rewrites.quantize import quantize_onnx_int8
from ..model import DecoderConfig, ModelConfig, SpaceClip, load_model
from ..model.checkpoint import CheckpointError
from ..model.preprocess import pixels_from_frames
from .common import add_model_arguments, backbone_from_args, decoder_from_args, setup_logging, tool_parser

logger = logging.getLogger("space-clip-export")


def _size(values: list[int] | None) -> tuple[int, int] | None:
    if values is None:
        return None
    height, width = values
    if height < 1 or width < 1:
        raise ValueError(f"sizes must be positive, got {height} x {width}")
    return int(height), int(width)


def build_parser() -> argparse.ArgumentParser:
    parser = tool_parser("space-clip-export", __doc__)
    add_model_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                        help="take uint8 RGB frames of this size, preprocessing inside the graph")
    parser.add_argument("--output-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                        help="depth output size (default: the image size, else the decoder's 224x224 map)")
    parser.add_argument("--dynamic-batch", action="store_true", help="free batch dimension (default: fixed)")
    parser.add_argument("--batch-size", type=int, default=1, help="the fixed batch size (default 1)")
    parser.add_argument("--with-embedding", action="store_true", help="add the CLIP image embedding output")
    parser.add_argument("--int8", action="store_true",
                        help="also write NAME.int8.onnx with int8 encoder MatMuls (for ONNX Runtime on CPUs)")
    parser.add_argument("--int8-decoder", action="store_true",
                        help="with --int8: the decoder's convolutions in int8 too (static, calibrated on "
                        "--calibration-images; for CPUs with VNNI/AMX; docs/benchmarks.md)")
    parser.add_argument("--calibration-images", default="", metavar="FOLDER_OR_GLOB",
                        help="frames from the robot's camera that calibrate --int8-decoder")
    parser.add_argument("--no-check", action="store_true",
                        help="skip running the file through onnxruntime against the torch model")
    return parser


def load_for_export(args: argparse.Namespace) -> SpaceClip:
    if args.checkpoint:
        model, _ = load_model(args.checkpoint, backbone=backbone_from_args(args), decoder=decoder_from_args(args))
        return model.eval()
    backbone = backbone_from_args(args)
    config = ModelConfig(decoder=decoder_from_args(args) or DecoderConfig())
    if backbone is not None:
        config = ModelConfig(backbone=backbone, decoder=config.decoder)
    logger.warning("no --checkpoint: exporting an UNTRAINED decoder (for trying the tool chain only)")
    return SpaceClip(config).eval()


def check_with_onnxruntime(model: SpaceClip, path: Path, options: ExportOptions) -> dict[str, float]:
    """Run the exported file in onnxruntime (CPU) and the torch model on one synthetic frame; compare depth."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    height, width = options.image_size or (480, 640)
    frames = np.repeat(synthetic_camera_image(height, width, seed=3)[None], options.batch_size, axis=0)
    pixels = pixels_from_frames(frames, model.input_size, model.mean, model.std)
    output_size = options.resolved_output_size(model.input_size)
    with torch.inference_mode():
        reference = model(pixels, output_size=output_size).depth.numpy()
    feed = {IMAGE_INPUT: frames} if options.image_size is not None else {PIXELS_INPUT: pixels.numpy()}
    depth = session.run(["depth"], feed)[0]
    difference = np.abs(depth - reference)
    return {"max_abs_error_m": float(difference.max()), "median_depth_m": float(np.median(reference))}


def quantize_decoder(model: SpaceClip, path: Path, options: ExportOptions, calibration_images: str) -> int:
    """Quantise the decoder convolutions of the graph at ``path`` in place, calibrated on the camera frames
    of ``calibration_images`` fed as the graph takes them; returns how many frames calibrated it."""
    frames = read_calibration_frames(calibration_files(calibration_images))
    takes_images = options.image_size is not None
    name = IMAGE_INPUT if takes_images else PIXELS_INPUT
    batch = 1 if options.dynamic_batch else options.batch_size
    feeds = [{name: np.repeat(inputs, batch, axis=0)}
             for inputs in graph_inputs(model, frames, takes_images, options.image_size)]
    staged = path.with_name(path.name + ".partial")
    try:
        quantize_onnx_decoder_int8(path, staged, model.decoder.config, feeds)
        staged.replace(path)
    finally:
        staged.unlink(missing_ok=True)
    return len(frames)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        if args.int8_decoder and not (args.int8 and args.calibration_images):
            raise ValueError("--int8-decoder needs --int8 and --calibration-images (frames from the camera)")
        options = ExportOptions(
            opset=args.opset,
            image_size=_size(args.image_size),
            output_size=_size(args.output_size),
            dynamic_batch=args.dynamic_batch,
            batch_size=args.batch_size,
            with_embedding=args.with_embedding,
        )
        model = load_for_export(args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(model, args.out, options)
        print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB)")
        if not args.no_check:
            check = check_with_onnxruntime(model, args.out, options)
            print(
                f"onnxruntime check: max abs depth difference {check['max_abs_error_m']:.2e} m "
                f"(median depth {check['median_depth_m']:.2f} m)"
            )
        if args.int8:
            int8_path = args.out.with_suffix(".int8.onnx")
            quantize_onnx_int8(args.out, int8_path)
            what = "int8 encoder MatMuls, for onnxruntime on CPUs"
            if args.int8_decoder:
                count = quantize_decoder(model, int8_path, options, args.calibration_images)
                what = (f"int8 encoder MatMuls and decoder convolutions calibrated on {count} camera frames, "
                        "for onnxruntime on CPUs with VNNI/AMX")
            print(f"wrote {int8_path} ({what})")
    except (CheckpointError, ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"space-clip-export: error: {exc}", file=sys.stderr)
        return 2
    print("build a TensorRT engine (docs/export.md):\n  " + trtexec_command(args.out, options, model.input_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
