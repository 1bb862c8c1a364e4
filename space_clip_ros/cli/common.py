"""Helpers shared by the command-line tools: model arguments, output-option flags, logging.

The model package (torch) is imported inside the functions that build its configurations, and the
output options (messages, OpenCV) inside theirs: a tool that uses these helpers loads them only
when it needs them (``--help`` and argument errors stay fast).
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..inference.runtime.predictor import DepthPredictor
    from ..model import BackboneConfig, DecoderConfig
    from ..outputs.options import OptionValue

#: inference.runtime.options.BACKEND_CHOICES and PRECISION_CHOICES, written out so that ``--help`` and
#: argument errors need no torch (test_auto_select checks that they are the same).
BACKEND_CHOICES = ("auto", "torch", "onnxruntime", "tensorrt")
PRECISION_CHOICES = ("auto", "fp32", "fp16", "bf16")


#: Exit status of a console script that did its job, and of one refusing its arguments (argparse's own).
EXIT_OK = 0
EXIT_USAGE = 2


def tool_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of a console script: its name, and its module docstring as the help text, kept as written."""
    return argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Backbone/decoder options common to every tool that builds a model."""
    group = parser.add_argument_group("model")
    group.add_argument("--checkpoint", default=None, help="decoder checkpoint (NAME, NAME.safetensors or NAME.json)")
    group.add_argument(
        "--backbone", default=None, help="open_clip model name (default: the checkpoint's, else ViT-B-16)"
    )
    group.add_argument(
        "--pretrained",
        default=None,
        help="open_clip pretrained tag (e.g. openai, webli) or a local weights file; omit for random weights",
    )
    group.add_argument(
        "--vision-overrides",
        default=None,
        help='JSON dict replacing open_clip vision_cfg entries, e.g. \'{"width": 64}\' (random/local weights only)',
    )
    group.add_argument("--decoder-config", default=None, help="JSON dict of decoder settings (DecoderConfig fields)")


def backbone_from_args(args: argparse.Namespace) -> BackboneConfig | None:
    """The backbone the user asked for, or None to take the checkpoint's (``model.backbone_from_options``)."""
    from ..model import backbone_from_options

    return backbone_from_options(args.backbone, args.pretrained, args.vision_overrides)


def decoder_from_args(args: argparse.Namespace) -> DecoderConfig | None:
    if not args.decoder_config:
        return None
    from ..model import DecoderConfig

    return DecoderConfig.from_dict(json.loads(args.decoder_config))


def add_output_arguments(group: argparse._ArgumentGroup) -> None:
    """One flag per output option that has one (``outputs.options``: name, help, type, choices).

    A bool option gets a flag that flips its default (``--no-points``, ``--points-rgb``); others a
    flag taking a value. A flag not given leaves its option out of :func:`output_values` (None).
    """
    from ..outputs.options import OPTIONS

    for option in OPTIONS:
        if option.flag is None:
            continue
        text = option.flag_help + (f" (default: {option.flag_default_text})" if option.flag_default_text else "")
        if isinstance(option.default, bool):
            group.add_argument(option.flag, dest=option.name, action="store_const", const=not option.default,
                               default=None, help=text)
        else:
            group.add_argument(option.flag, dest=option.name, type=type(option.default),
                               choices=option.choices or None, default=None, help=text)


def output_values(args: argparse.Namespace) -> dict[str, OptionValue]:
    """The output options given on the command line (flags of :func:`add_output_arguments`)."""
    from ..outputs.options import OPTIONS

    return {o.name: getattr(args, o.name) for o in OPTIONS if o.flag is not None and getattr(args, o.name) is not None}


def add_inference_arguments(group: argparse._ArgumentGroup) -> None:
    """Device and path flags of the tools that run the predictor (the depth node's parameters of the
    same names: device, backend, precision, optimize, auto_cache, calibration_images)."""
    group.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    group.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                       help="auto (default): measure this device's fast paths once, keep the fastest within the "
                       "depth tolerance, cache the choice; or force one")
    group.add_argument("--precision", default="auto", choices=PRECISION_CHOICES,
                       help="auto (default): what backend auto measures fastest (else fp16 on CUDA, fp32 on a CPU); "
                       "bf16 on a CPU with bf16 arithmetic: torch's decoder and attention, or ONNX Runtime's "
                       "last decoder stage, in bf16")
    group.add_argument("--no-optimize", action="store_true", help="the model exactly as trained (torch eager fp32)")
    group.add_argument("--auto-cache", default="",
                       help="backend auto's cache file (default: $SPACE_CLIP_AUTO_CACHE, else "
                       "$XDG_CACHE_HOME/space_clip_ros/auto_paths.json); the ONNX Runtime graphs are kept "
                       "beside it (onnx_graphs/)")
    group.add_argument("--calibration-images", default="", metavar="FOLDER_OR_GLOB",
                       help="frames from the camera that calibrate the int8 decoder (CPUs with VNNI/AMX): backend "
                       "auto then also measures it and checks every path on these frames; backend onnxruntime "
                       "uses it (docs/benchmarks.md)")


def predictor_from_args(args: argparse.Namespace, **overrides: Any) -> DepthPredictor:
    """The predictor of :func:`add_model_arguments` and :func:`add_inference_arguments`' flags, by the
    rule the depth node uses (``auto_select.predictor_from_checkpoint``; ``overrides`` such as
    ``device``, ``threads`` or ``output_size`` replace or add its arguments); raises what it raises."""
    from ..inference.runtime.auto_select import predictor_from_checkpoint

    settings: dict[str, Any] = {
        "device": args.device, "precision": args.precision, "backend": args.backend,
        "optimize": not args.no_optimize, "cache_path": args.auto_cache,
        "calibration_images": args.calibration_images or None, **overrides,
    }
    return predictor_from_checkpoint(args.checkpoint, backbone=backbone_from_args(args),
                                     decoder=decoder_from_args(args), **settings)
