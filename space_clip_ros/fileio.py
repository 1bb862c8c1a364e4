"""Atomic file writes: a crash mid-write must leave the previous file intact.

Checkpoints, resume state, feature-cache entries and evaluation reports are read back by other
processes (the node, a resumed run, other cache writers). Each is written to a temporary file in
the target's folder, named ``.<name>.*`` so that globs for real files skip it, and then renamed
over the target with :func:`os.replace`, which is atomic within one file system: a reader sees the
old file or the new one, never half of one. The temporary file is removed if writing fails.

This module sits below every other one (standard library only), so any layer may use it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], *, fsync: bool = False) -> Path:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, then rename it to ``path``.

    Args:
        path: the file to create or replace; its folder is created if missing.
        write: writes the whole content to the file name it is given (e.g. ``torch.save``,
            ``safetensors.torch.save_file``).
        fsync: flush the content to disk before the rename, so that a power loss cannot leave an
            empty file either (costs a disk flush per call; worth it for small, rarely written files).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        if fsync:
            _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        # Also on KeyboardInterrupt: never leave a temporary file behind.
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; see :func:`atomic_write`."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), fsync=fsync)


def _fsync_file(name: str) -> None:
    fd = os.open(name, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
