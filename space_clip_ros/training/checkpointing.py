"""Resume state: everything beyond the decoder checkpoint that continuing a run exactly needs.

The decoder checkpoints (``last``/``best``, via :func:`space_clip_ros.model.save_checkpoint`) are
what the ROS node loads. Continuing a run also needs the raw and EMA decoder weights, the
optimiser's moments, the step counters, the random generators of every process and the data
order; they go to ``last.resume.pt`` beside the checkpoints, written atomically (temporary file in
the same folder, then ``os.replace``), so a crash mid-write leaves the previous file intact.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..fileio import atomic_write
from .config import config_differences, is_harmless_on_resume

logger = logging.getLogger(__name__)

RESUME_FILE = "last.resume.pt"
RESUME_FORMAT = "space_clip_ros.resume"
RESUME_VERSION = 1


class ResumeError(RuntimeError):
    """A resume state that is missing, unreadable, or belongs to a different configuration."""


@dataclass
class ResumeState:
    """Saved after every epoch.

    Attributes:
        config: the run's ``TrainConfig.to_dict()`` (checked against the resuming config).
        epoch: number of completed epochs (the resumed run starts at this epoch index).
        global_step: iterations done so far (drives the lr schedule).
        decoder, ema, optimizer: state dicts (raw decoder weights, EMA weights or ``None``).
        rng: one entry per rank (see :func:`capture_rng_state`, plus ``data_generator``: the state
            of that rank's DataLoader generator, which seeds its workers); restored rank by rank.
        sampler_seed: seed of the epoch-indexed data order (order = f(seed, epoch)).
        counters: skipped steps and friends.
        best: best validation score so far and where it came from.
        history: per-epoch summaries (losses, validation metrics).
        world_size: processes of the run that wrote it.
    """

    config: dict[str, Any]
    epoch: int
    global_step: int
    decoder: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None
    optimizer: dict[str, Any]
    rng: list[dict[str, Any]]
    sampler_seed: int
    counters: dict[str, int] = field(default_factory=dict)
    best: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    world_size: int = 1
    schedule: dict[str, Any] = field(default_factory=dict)


def capture_rng_state() -> dict[str, Any]:
    """States of python's ``random``, numpy's global generator, torch's CPU and CUDA generators."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resume_path(path: str | os.PathLike) -> Path:
    """``--resume`` accepts a run directory or the resume file itself."""
    path = Path(path)
    return path / RESUME_FILE if path.is_dir() else path


def save_resume_state(path: str | os.PathLike, state: ResumeState) -> Path:
    payload = {"format": RESUME_FORMAT, "version": RESUME_VERSION, **asdict(state)}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_resume_state(path: str | os.PathLike) -> ResumeState:
    path = resume_path(path)
    if not path.is_file():
        raise ResumeError(
            f"no resume state at {path}: --resume takes a run directory holding {RESUME_FILE} "
            "(written after every completed epoch) or that file itself"
        )
    try:
        # The file holds numpy RNG states and python tuples besides tensors: not weights-only.
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch.load raises many types for damaged files
        raise ResumeError(f"resume state {path} is unreadable: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != RESUME_FORMAT:
        raise ResumeError(f"{path} is not a space_clip_ros resume state")
    if int(payload.get("version", 0)) > RESUME_VERSION:
        raise ResumeError(f"{path} was written by a newer space_clip_ros (version {payload['version']})")
    fields = set(ResumeState.__dataclass_fields__)
    return ResumeState(**{k: v for k, v in payload.items() if k in fields})


def check_resume_config(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Refuse a resume whose configuration differs in anything that changes the computation.

    Returns the harmless differences (to log); raises :class:`ResumeError` naming every other one.
    """
    diffs = config_differences(saved, current)
    harmful = {k: v for k, v in diffs.items() if not is_harmless_on_resume(k)}
    if harmful:
        lines = [f"{key}: run has {old!r}, now {new!r}" for key, (old, new) in harmful.items()]
        raise ResumeError(
            "refusing to resume: the configuration differs from the run's in\n  "
            + "\n  ".join(lines)
            + "\nResume with the run's own configuration (its config.yaml), or start a new run."
        )
    return [f"{key}: {old!r} -> {new!r}" for key, (old, new) in diffs.items()]
