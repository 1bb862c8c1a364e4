"""space-clip-eval: score a decoder checkpoint on a test split under a named protocol.

Examples:
  space-clip-eval --checkpoint runs/nyu/best --config config/train/nyu.yaml --protocol nyu_eigen
  space-clip-eval --checkpoint runs/kitti/best --dataset kitti --data-path /data/kitti/raw \\
      --gt-path /data/kitti/data_depth_annotated --split kitti_eigen_test_files_with_gt.txt \\
      --protocol kitti_eigen
  space-clip-eval --checkpoint runs/synthetic/best --config config/train/synthetic.yaml --protocol custom

With ``--config`` the test split of the training config is used (``data.test_split`` and its
roots). The report (per-image and aggregate JSON, Markdown with the protocol spelled out) goes to
``--out`` (default: ``eval/`` beside the checkpoint) and the Markdown table is printed.
Also runs under torchrun (each process scores a share; metrics are all-reduced).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..model.checkpoint import CheckpointError, checkpoint_paths
from ..training.protocol import get_protocol, protocol_names
from .common import add_model_arguments, backbone_from_args, setup_logging, tool_parser


def build_parser() -> argparse.ArgumentParser:
    parser = tool_parser("space-clip-eval", __doc__)
    add_model_arguments(parser)
    data = parser.add_argument_group("data (either --config or --dataset)")
    data.add_argument("--config", help="training YAML whose data.test_split (and roots) to evaluate on")
    data.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of --config")
    data.add_argument("--dataset", choices=("kitti", "nyu", "folder"), help="dataset layout")
    data.add_argument("--data-path", help="root of the split's RGB paths (folder: the dataset root)")
    data.add_argument("--gt-path", help="root of the split's depth paths (default: --data-path)")
    data.add_argument("--split", help="BTS split file (optional for a folder dataset)")
    data.add_argument("--depth-scale", type=float, default=None, help="PNG value / scale = metres")
    proto = parser.add_argument_group("protocol")
    proto.add_argument("--protocol", required=True, choices=protocol_names(), help="evaluation protocol preset")
    proto.add_argument("--median-scaling", action="store_true", help="per-image median scaling (off by default)")
    proto.add_argument("--no-flip", action="store_true", help="disable flip averaging")
    proto.add_argument("--resolution", choices=("native", "release"), help="override the preset's resolution")
    proto.add_argument("--train-size", help="HxW for the release resolution (default: the checkpoint's)")
    proto.add_argument("--max-depth-eval", type=float, help="override the preset's evaluation cap (metres)")
    run = parser.add_argument_group("run")
    run.add_argument("--out", help="report folder (default: eval/ beside the checkpoint)")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--batch-size", type=int, default=4)
    run.add_argument("--num-workers", type=int, default=2)
    run.add_argument("--limit", type=int, default=None, help="only the first N images (quick checks)")
    run.add_argument("--progress", action="store_true", help="progress bar")
    return parser


def _dataset(args: argparse.Namespace):
    """(dataset, description) from --config or the explicit --dataset options."""
    from ..training import data_setup
    from ..training.config import load_config

    if args.config:
        config = load_config(args.config, args.overrides)
        data_setup.ensure_synthetic_dataset(config.data)
        paths = data_setup.resolve_data_paths(config.data)
        if paths.test_split is None and config.data.dataset != "folder":
            raise ValueError(f"{args.config} has no data.test_split; give one as an override or use --split")
        split = Path(args.split) if args.split else paths.test_split
        dataset = data_setup.eval_dataset(config.data.dataset, paths.test_data_path, paths.test_gt_path, split,
                                          config.data.depth_scale)
        return dataset, f"{config.data.dataset}: {split or paths.test_data_path}"
    if not args.dataset or not args.data_path:
        raise ValueError("give --config, or --dataset with --data-path (and --split)")
    if args.overrides:
        raise ValueError(f"key=value overrides {args.overrides} need --config")
    split = Path(args.split) if args.split else None
    dataset = data_setup.eval_dataset(args.dataset, Path(args.data_path), Path(args.gt_path or args.data_path),
                                      split, args.depth_scale)
    return dataset, f"{args.dataset}: {split or args.data_path}"


def _protocol(args: argparse.Namespace, record):
    overrides: dict = {}
    if args.median_scaling:
        overrides["median_scaling"] = True
    if args.no_flip:
        overrides["flip"] = False
    if args.resolution:
        overrides["resolution"] = args.resolution
    if args.max_depth_eval is not None:
        overrides["max_depth_eval"] = args.max_depth_eval
    if args.train_size:
        height, width = (int(v) for v in args.train_size.lower().split("x"))
        overrides["train_size"] = (height, width)
    preset = get_protocol(args.protocol)
    resolution = overrides.get("resolution", preset.resolution)
    if resolution == "release" and "train_size" not in overrides:
        if record is None or not record.train_image_size:
            raise ValueError("the release resolution needs --train-size (the checkpoint records none)")
        overrides["train_size"] = tuple(record.train_image_size)
    return get_protocol(args.protocol, **overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    setup_logging()
    if not args.checkpoint:
        print("space-clip-eval: error: --checkpoint is required (a NAME.safetensors + NAME.json pair written by "
              "space-clip-train)", file=sys.stderr)
        return 2
    from ..model import load_model
    from ..training.distributed import init_distributed, shutdown_distributed
    from ..training.evaluate import evaluate_model, write_eval_report

    try:
        model, record = load_model(args.checkpoint, backbone=backbone_from_args(args))
        protocol = _protocol(args, record)
        dataset, description = _dataset(args)
        context = init_distributed(args.device)
    except CheckpointError as exc:
        print(f"space-clip-eval: error: {exc}\nTrain a checkpoint with space-clip-train, or check the path.",
              file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"space-clip-eval: error: {exc}", file=sys.stderr)
        return 2
    try:
        model = model.to(context.device).eval()
        result = evaluate_model(
            model, dataset, protocol, device=context.device, batch_size=args.batch_size,
            num_workers=args.num_workers, context=context, progress=args.progress, limit=args.limit,
        )
        if context.is_main:
            weights = checkpoint_paths(args.checkpoint)[0]
            out = Path(args.out) if args.out else weights.parent / "eval"
            meta = {
                "checkpoint": str(weights),
                "dataset": description,
                "weights": (record.extra.get("weights") if record else None) or "unknown",
                "skipped_files": [f"{path} ({reason})" for path, reason in getattr(dataset, "skipped", [])],
            }
            json_path, md_path = write_eval_report(result, out, meta)
            print(f"{protocol.name}: {result.images_scored} images scored, {result.images_skipped} skipped")
            print(result.markdown())
            print(f"\n{protocol.describe()}\n\nreport: {json_path} and {md_path}")
    finally:
        shutdown_distributed(context)
    return 0


if __name__ == "__main__":
    sys.exit(main())
