"""Resume state: everything beyond the decoder checkpoint that continuing a run exactly needs.

The decoder checkpoints (``last``/``best``, via :func:`space_clip_ros.model.save_checkpoint`) are
what the ROS node loads. Continuing a run also needs the raw and EMA decoder weights, the
optimiser's moments, the step counters, the random generators of every process and the data
order; they go to ``last.resume.pt`` beside the checkpoints, written atomically (temporary file in
the same folder, then ``os.replace``), so a crash mid-write leaves the previous file intact.

The file is read with ``torch.load(weights_only=True)``: it may hold tensors and plain containers
(dict, list, tuple, str, int, float, bool, None) and nothing else, so a resume file from someone
else cannot run code when it is loaded (unpickling an arbitrary object can). Everything that is
not plain by nature is converted on the way in: numpy's and python's RNG states become tensors and
numbers (:func:`capture_rng_state`), numpy scalars become python numbers, and the writer refuses
anything it cannot convert, so a run never writes a file that it could not read back.
"""

from __future__ import annotations

import logging
import os
import pickle
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
# 2: weights-only content (RNG states as tensors), mid-epoch position, GradScaler state.
RESUME_VERSION = 2


class ResumeError(RuntimeError):
    """A resume state that is missing, unreadable, unsafe, or belongs to a different configuration."""


@dataclass
class ResumeState:
    """Saved after every epoch, and every ``train.resume_every_steps`` optimiser steps.

    Attributes:
        config: the run's ``TrainConfig.to_dict()`` (checked against the resuming config).
        epoch: number of completed epochs (the resumed run continues in this epoch index).
        global_step: iterations done so far (drives the lr schedule).
        decoder, ema, optimizer: state dicts (raw decoder weights, EMA weights or ``None``).
        rng: one entry per rank (see :func:`capture_rng_state`, plus ``data_generator``: the state
            of that rank's DataLoader generator to restore before the loader's iterator of the
            epoch to run is created, which seeds its workers); restored rank by rank.
        sampler_seed: seed of the epoch-indexed data order (order = f(seed, epoch)).
        counters: skipped steps and friends.
        best: best validation score so far and where it came from.
        history: per-epoch summaries (losses, validation metrics).
        world_size: processes of the run that wrote it.
        schedule: the learning-rate schedule's parameters (informative: it is a function of the step).
        step_in_epoch: optimiser steps already done in epoch ``epoch`` (0: saved between epochs).
        epoch_sums: one entry per rank when saved mid-epoch: that rank's loss sums, step and skip
            counts of the epoch so far (the epoch's averages then equal an uninterrupted run's).
        scaler: the fp16 GradScaler's state (empty when it is disabled).
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
    step_in_epoch: int = 0
    epoch_sums: list[dict[str, Any]] = field(default_factory=list)
    scaler: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# Random generators, in a weights-only form.


def capture_rng_state() -> dict[str, Any]:
    """States of python's ``random``, numpy's global generator, torch's CPU and CUDA generators.

    Tensors and numbers only (see the module docstring): python's Mersenne Twister words and
    numpy's key become int64 tensors (every word fits: they are below 2**32).
    """
    version, words, gauss_next = random.getstate()
    kind, key, pos, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": int(version), "words": torch.tensor(words, dtype=torch.int64),
                   "gauss_next": None if gauss_next is None else float(gauss_next)},
        "numpy": {"kind": str(kind), "key": torch.from_numpy(np.asarray(key, dtype=np.int64).copy()),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(int(w) for w in py["words"].tolist()), py["gauss_next"]))
    np.random.set_state((npy["kind"], npy["key"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------------------
# The file.


def resume_path(path: str | os.PathLike) -> Path:
    """``--resume`` accepts a run directory or the resume file itself."""
    path = Path(path)
    return path / RESUME_FILE if path.is_dir() else path


def plain(value: Any, where: str = "state") -> Any:
    """``value`` with numpy scalars turned into python numbers; TypeError for anything not plain.

    Plain: tensors, dict (str or int keys), list, tuple, str, int, float, bool, None; exactly what
    ``torch.load(weights_only=True)`` reads back. Checked when writing, so that an object slipping
    into the state (a numpy array in a metric, a dataclass) fails the run at once, not the resume.
    """
    if value is None or type(value) in (bool, int, float, str) or isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.generic) and not isinstance(value, (np.str_, np.bytes_, np.void)):
        return value.item()
    if type(value) in (list, tuple):
        items = [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if type(value) is list else tuple(items)
    if isinstance(value, dict):  # state dicts are OrderedDicts: written as plain dicts, which load the same
        out = {}
        for key, item in value.items():
            if type(key) not in (str, int):
                raise TypeError(f"{where}: key {key!r} ({type(key).__name__}) is not a str or int")
            out[key] = plain(item, f"{where}.{key}")
        return out
    raise TypeError(f"{where} holds a {type(value).__module__}.{type(value).__qualname__}: only tensors and "
                    "plain containers go into a resume file (it is read with weights_only=True)")


def save_resume_state(path: str | os.PathLike, state: ResumeState) -> Path:
    payload = plain({"format": RESUME_FORMAT, "version": RESUME_VERSION, **asdict(state)}, "resume state")
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_resume_state(path: str | os.PathLike) -> ResumeState:
    """Read a resume file without unpickling anything but tensors and plain containers.

    Raises :class:`ResumeError` for a missing, damaged, foreign, newer or unsafe file.
    """
    path = resume_path(path)
    if not path.is_file():
        raise ResumeError(
            f"no resume state at {path}: --resume takes a run directory holding {RESUME_FILE} "
            "(written after every completed epoch, and every train.resume_every_steps steps) or that file itself"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # The weights-only unpickler refuses any other global before calling it: nothing ran.
        first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ResumeError(
            f"refusing to load resume state {path}: it holds objects other than tensors and plain containers, "
            "and unpickling those could run arbitrary code. Only resume files written by space_clip_ros "
            f"(format version {RESUME_VERSION} or later) are read; version 1 files, which stored numpy and python "
            f"objects, cannot be resumed by this version. ({first_line})"
        ) from exc
    except Exception as exc:  # torch.load raises many types for damaged files
        raise ResumeError(f"resume state {path} is unreadable: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != RESUME_FORMAT:
        raise ResumeError(f"{path} is not a space_clip_ros resume state")
    version = int(payload.get("version", 0))
    if version > RESUME_VERSION:
        raise ResumeError(f"{path} was written by a newer space_clip_ros (version {payload['version']})")
    if version < RESUME_VERSION:
        raise ResumeError(f"{path} has resume format version {version}, which this version cannot read; "
                          "continue it with the version that wrote it, or start a new run")
    fields = set(ResumeState.__dataclass_fields__)
    try:
        return ResumeState(**{k: v for k, v in payload.items() if k in fields})
    except TypeError as exc:
        raise ResumeError(f"resume state {path} is incomplete: {exc}") from exc


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
