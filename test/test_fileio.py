"""Atomic writes: the new file appears whole or not at all, and no temporary file is left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from space_clip_ros.fileio import atomic_write, atomic_write_text


def test_text_is_written_and_replaced(tmp_path):
    path = tmp_path / "sub" / "record.json"  # the folder is created
    assert atomic_write_text(path, "one\n") == path
    atomic_write_text(path, "two\n", fsync=True)
    assert path.read_text() == "two\n"
    assert [p.name for p in path.parent.iterdir()] == ["record.json"]


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"previous")
    seen: list[str] = []

    def half_write(tmp: str) -> None:
        seen.append(Path(tmp).name)
        Path(tmp).write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_write)
    assert path.read_bytes() == b"previous"
    assert seen[0].startswith(".weights.bin.")  # beside the target, hidden from globs
    assert [p.name for p in tmp_path.iterdir()] == ["weights.bin"]
