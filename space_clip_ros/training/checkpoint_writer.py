"""What a run writes after an epoch: ``last``/``best`` checkpoints, the best's report, history, resume state.

Rank 0 writes; every rank meets at a barrier before and after, so nobody moves on (or exits) while a
file is half-written, and nobody reads the run directory before rank 0 has filled it. The checkpoint
record is built once per epoch and serves both ``last`` and ``best``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from ..model import CheckpointRecord, SpaceClip, make_record, save_checkpoint
from .checkpointing import RESUME_FILE, ResumeState, save_resume_state
from .config import TrainConfig
from .distributed import DistContext
from .ema import DecoderEMA
from .evaluate import EvalResult, write_eval_report
from .run_setup import RunData


def choose_weights(results: dict[str, EvalResult], has_ema: bool) -> str:
    """``raw`` or ``ema``: the lower validation AbsRel (ties and NaN keep the raw weights)."""
    if not results:
        return "ema" if has_ema else "raw"

    def score(name: str) -> float:
        value = results[name].abs_rel
        return value if math.isfinite(value) else math.inf

    return min(results, key=score)  # ties keep the raw weights (first)


class CheckpointWriter:
    """Writes a run's files into ``run_dir``; see the module docstring.

    Args:
        config: the run's configuration (recorded in full).
        run_dir: the run directory.
        context: distributed context (rank 0 writes).
        model: the model (the record describes it; its decoder holds the raw weights).
        ema: the EMA of the decoder, or ``None``.
        data: the run's datasets (training focal length and image size, dataset name).
        backbone_file: the saved random backbone the record names, or ``None``.
    """

    def __init__(self, config: TrainConfig, run_dir: Path, context: DistContext, model: SpaceClip,
                 ema: DecoderEMA | None, data: RunData, backbone_file: Path | None) -> None:
        self.config = config
        self.run_dir = run_dir
        self.ctx = context
        self.model = model
        self.ema = ema
        self.data = data
        self.backbone_file = backbone_file

    def weights(self, name: str) -> dict[str, torch.Tensor]:
        module = self.ema.module if name == "ema" and self.ema is not None else self.model.decoder
        return module.state_dict()

    def record(self, chosen: str, results: dict[str, EvalResult], epoch: int, global_step: int) -> CheckpointRecord:
        config = self.config
        metrics: dict[str, Any] = {}
        if results:
            result = results[chosen]
            metrics = {**result.aggregate, "protocol": result.protocol.name,
                       "protocol_description": result.protocol.describe(),
                       "split": "validation (scenes held out of the training list)",
                       "images": result.images_scored}
        paths = self.data.paths
        record = make_record(
            self.model,
            train_focal=self.data.train_focal,
            train_image_size=list(self.data.train_image_size),
            dataset=f"{config.data.dataset}: {paths.train_split or paths.data_path}",
            min_depth=config.loss.min_depth,
            max_depth=config.loss.max_depth,
            metrics=metrics,
            extra={
                "weights": chosen,
                "epoch": epoch,
                "global_step": global_step,
                "validation": {name: r.aggregate for name, r in results.items()},
                "run_dir": str(self.run_dir),
                "config": config.to_dict(),
            },
        )
        if self.backbone_file is not None:
            record.model["backbone"]["pretrained"] = str(self.backbone_file)
        return record

    def write_epoch(self, results: dict[str, EvalResult], summary: dict[str, Any], resume: ResumeState) -> None:
        """``last`` (and ``best`` with its report when ``summary["is_best"]``), resume state, history line."""
        self.ctx.barrier()
        if self.ctx.is_main:
            chosen = summary["weights"]
            record = self.record(chosen, results, summary["epoch"], summary["global_step"])
            weights = self.weights(chosen)
            save_checkpoint(self.run_dir / "last", weights, record)
            if summary["is_best"]:
                save_checkpoint(self.run_dir / "best", weights, record)
                write_eval_report(results[chosen], self.run_dir, {"checkpoint": str(self.run_dir / "best"),
                                  "dataset": "validation", "weights": chosen, "epoch": summary["epoch"]},
                                  stem="best_validation")
            save_resume_state(self.run_dir / RESUME_FILE, resume)
            with (self.run_dir / "history.jsonl").open("a") as handle:
                handle.write(json.dumps(summary) + "\n")
        self.ctx.barrier()  # nobody moves on (or exits) while rank 0 is still writing

    def write_resume(self, resume: ResumeState) -> None:
        """The resume state alone (mid-epoch)."""
        self.ctx.barrier()
        if self.ctx.is_main:
            save_resume_state(self.run_dir / RESUME_FILE, resume)
        self.ctx.barrier()
