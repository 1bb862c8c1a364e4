"""space-clip-info: parameter counts and encoder facts for a configuration or a checkpoint."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from .common import add_model_arguments, backbone_from_args, decoder_from_args, setup_logging

if TYPE_CHECKING:
    from ..model import SpaceClip


def collect_info(model: SpaceClip) -> dict:
    return {
        "backbone": model.backbone.describe(),
        "decoder": model.config.decoder.to_dict(),
        "parameters": model.parameter_counts(),
    }


def format_info(info: dict) -> str:
    bb = info["backbone"]
    lines = [
        f"backbone        {bb['name']} ({bb['family']}), weights: {bb['pretrained'] or 'random'}",
        f"encoder         {bb['num_layers']} layers, width {bb['width']}, patch {bb['patch_size']}, "
        f"input {bb['input_size'][0]}x{bb['input_size'][1]} -> grid {bb['grid'][0]}x{bb['grid'][1]}",
        f"normalisation   mean {tuple(round(v, 8) for v in bb['mean'])}, std {tuple(round(v, 8) for v in bb['std'])}",
        "parameters",
    ]
    for key, value in info["parameters"].items():
        lines.append(f"  {key:<36}{value:>14,}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="space-clip-info", description=__doc__)
    add_model_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    setup_logging()
    from ..model import CheckpointError, DecoderConfig, ModelConfig, SpaceClip, load_model  # torch: after --help

    try:
        if args.checkpoint:
            model, _ = load_model(args.checkpoint, backbone=backbone_from_args(args), decoder=decoder_from_args(args))
        else:
            backbone = backbone_from_args(args)
            config = ModelConfig(decoder=decoder_from_args(args) or DecoderConfig())
            if backbone is not None:
                config = ModelConfig(backbone=backbone, decoder=config.decoder)
            model = SpaceClip(config)
    except (CheckpointError, ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"space-clip-info: error: {exc}", file=sys.stderr)
        return 2
    info = collect_info(model)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
