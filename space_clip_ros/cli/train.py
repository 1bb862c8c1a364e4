"""space-clip-train: train the SPACE-CLIP decoder (frozen CLIP backbone) from a YAML config.

Examples:
  space-clip-train --config config/train/synthetic.yaml
  space-clip-train --config config/train/nyu.yaml data.data_path=/data/nyu/sync optim.lr=2e-4
  space-clip-train --resume runs/nyu                      # continue a stopped (or killed) run exactly
  space-clip-train --config config/train/nyu.yaml train.resume_every_steps=200   # resume state every 200 steps
  torchrun --nproc_per_node=8 -m space_clip_ros.cli.train --config config/train/kitti.yaml

Overrides are dotted ``key=value`` pairs of the config (values read as YAML: ``[352, 704]``,
``null``, ``true``); an unknown key is an error. The run directory (default ``run.out_dir/run.name``)
receives ``last``/``best`` decoder checkpoints (what the ROS node loads), ``last.resume.pt``,
``config.yaml``, ``history.jsonl``, the validation report of ``best`` and TensorBoard logs.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
from pathlib import Path

from ..training.checkpointing import RESUME_FILE, ResumeError, check_resume_config, load_resume_state, resume_path
from ..training.config import ConfigError, apply_override, config_from_dict, load_config
from ..training.distributed import DistContext, init_distributed, shutdown_distributed
from .common import setup_logging

logger = logging.getLogger("space_clip_ros.train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="space-clip-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="training YAML (config/train/*.yaml); optional with --resume")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=2e-4")
    parser.add_argument("--resume", metavar="PATH", help=f"run directory (or its {RESUME_FILE}) to continue")
    parser.add_argument("--out", metavar="DIR", help="run directory (default: run.out_dir/run.name)")
    parser.add_argument(
        "--stop-after-epochs", type=int, default=None, metavar="N",
        help="train at most N epochs in this session, then exit (continue later with --resume)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def _existing_run(run_dir: Path) -> bool:
    return (run_dir / RESUME_FILE).exists() or (run_dir / "last.json").exists()


def prepare(args: argparse.Namespace):
    """(config, run_dir, resume state or None) from the arguments; raises ConfigError / ResumeError."""
    if args.resume:
        state = load_resume_state(args.resume)
        if args.config:
            config = load_config(args.config, args.overrides)
        else:
            data = copy.deepcopy(state.config)  # the saved config stays the reference for the check
            for override in args.overrides:
                apply_override(data, override)
            config = config_from_dict(data)
        harmless = check_resume_config(state.config, config.to_dict())
        for change in harmless:
            logger.warning("resume with a changed setting: %s", change)
        run_dir = resume_path(args.resume).parent
        if args.out and Path(args.out).resolve() != run_dir.resolve():
            raise ResumeError(f"--out {args.out} differs from the resumed run's directory {run_dir}")
        # A state saved in the middle of epoch train.epochs + 1 would otherwise be skipped silently.
        if state.epoch > config.train.epochs or (state.epoch == config.train.epochs and state.step_in_epoch):
            done = f"{state.epoch} epochs" + (" and part of the next" if state.step_in_epoch else "")
            raise ResumeError(f"the run already completed {done}, more than train.epochs={config.train.epochs}")
        return config, run_dir, state
    if not args.config:
        raise ConfigError("--config is required (unless --resume names a run)")
    config = load_config(args.config, args.overrides)
    run_dir = Path(args.out) if args.out else config.run_dir()
    if _existing_run(run_dir):
        raise ConfigError(
            f"{run_dir} already holds a run; continue it with --resume {run_dir}, or pick another --out / run.name"
        )
    return config, run_dir, None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    setup_logging(args.verbose)
    try:
        config, run_dir, state = prepare(args)
        context = init_distributed(config.train.device)
    except (ConfigError, ResumeError, ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"space-clip-train: error: {exc}", file=sys.stderr)
        return 2
    if not context.is_main:
        logging.getLogger().setLevel(logging.WARNING)  # one voice: rank 0 logs
    try:
        return _train(config, run_dir, state, context, args.stop_after_epochs)
    finally:
        shutdown_distributed(context)


def _train(config, run_dir: Path, state, context: DistContext, stop_after: int | None) -> int:
    from ..training.trainer import Trainer  # heavy imports after argument errors are reported

    try:
        trainer = Trainer(config, run_dir, context=context, resume=state)
    except (ValueError, FileNotFoundError) as exc:
        print(f"space-clip-train: error: {exc}", file=sys.stderr)
        return 2
    summary = trainer.fit(stop_after_epochs=stop_after)
    if context.is_main:
        best = summary.best
        lines = [
            f"run directory    {summary.run_dir}",
            f"epochs           {summary.epochs_completed}/{config.train.epochs} ({summary.global_step} steps)",
            f"skipped steps    {sum(summary.counters.values())} ({summary.counters})",
        ]
        if best.get("epoch") is not None:
            lines.append(f"best             AbsRel {best['abs_rel']:.4f} at epoch {best['epoch']} "
                         f"({best['weights']} weights) -> {summary.run_dir / 'best.safetensors'}")
        lines.append(f"last             {summary.run_dir / 'last.safetensors'}")
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
