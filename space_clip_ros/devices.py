"""Which torch device a setting names: the one rule for the node, the CLIs and training.

``auto`` takes CUDA when there is a GPU, else the CPU; ``cpu``, ``cuda`` and ``cuda:N`` are taken
as given, and asking for CUDA where there is none is an error that says so. A leaf module (like
``fileio``): every floor may import it, and it imports torch only when a device is resolved, so a
parameter check costs no torch import.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

#: Device names besides ``cuda:N``.
DEVICES = ("auto", "cuda", "cpu")
_CUDA_INDEX = re.compile(r"^cuda:\d+$")


def device_problem(value: str) -> str | None:
    """None when ``value`` names a device (auto, cpu, cuda or cuda:N), else why not."""
    if value in DEVICES or _CUDA_INDEX.match(value):
        return None
    return f"must be one of {', '.join(DEVICES)} or cuda:N, got '{value}'"


def resolve_device(requested: str, local_rank: int | None = None, *, setting: str = "device") -> torch.device:
    """The device ``requested`` names (see the module notes).

    Args:
        requested: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        local_rank: under torchrun, plain ``cuda`` (and ``auto`` on a GPU machine) means this
            process's GPU, ``cuda:<local_rank>``; None: plain ``cuda``, the current GPU.
        setting: the setting's name in error messages (``device``, ``train.device``).

    Raises ValueError for a name that is no device, RuntimeError for CUDA without a GPU.
    """
    import torch

    problem = device_problem(requested)
    if problem is not None:
        raise ValueError(f"{setting} {problem}")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"{setting} '{requested}' requested but CUDA is not available here; use auto or cpu")
    if requested == "cuda" and local_rank is not None:
        return torch.device("cuda", local_rank)
    return torch.device(requested)
