"""Open a rosbag2 bag and stream its raw messages, reading damaged bags up to the damage.

A bag is a directory with ``metadata.yaml`` and storage files, or a single ``.mcap`` / ``.db3``
file (what a recorder that crashed before writing metadata.yaml leaves behind). rosbags reads
healthy bags; a storage file rosbags cannot open is read by the record-by-record readers of
:mod:`space_clip_ros.bags.salvage`. Damage met while reading does not raise: the stream stops,
and :attr:`MessageStream.damage` says where and why, so callers can keep what was read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from rosbags.interfaces import Connection
from rosbags.rosbag2 import Reader

from space_clip_ros.bags.salvage import DamagedBagError, RawMessage, salvage_reader

logger = logging.getLogger(__name__)

STORAGE_SUFFIXES = {".mcap": "mcap", ".db3": "sqlite3"}


class BagOpenError(RuntimeError):
    """Nothing of the bag can be read (missing path, no storage file, unknown format)."""


def storage_kind(path: Path) -> str | None:
    """``mcap`` or ``sqlite3`` for a storage file name (also ``x.mcap.zstd``), else None."""
    for suffix in Path(path).suffixes:
        if suffix in STORAGE_SUFFIXES:
            return STORAGE_SUFFIXES[suffix]
    return None


@dataclass
class _Unit:
    """One readable part of a bag: the whole directory via rosbags, or one file salvaged."""

    path: Path
    reader: Reader | None = None  # open rosbags reader; None means salvage
    why_salvaged: str = ""


@dataclass
class MessageStream:
    """One pass over a bag's messages; iterate it, then look at :attr:`damage`."""

    units: list[_Unit]
    topics: frozenset[str] | None = None
    count: int = 0
    damage: str | None = None
    _used: bool = field(default=False, repr=False)

    def __iter__(self) -> Iterator[RawMessage]:
        if self._used:
            raise RuntimeError("a MessageStream can be iterated once; ask the BagSource for a new one")
        self._used = True
        for unit in self.units:
            try:
                for connection, log_time, data in self._unit_messages(unit):
                    if self.topics is None or connection.topic in self.topics:
                        self.count += 1
                        yield connection, log_time, data
            except DamagedBagError as exc:
                self.damage = str(exc)
                return
            except Exception as exc:  # noqa: BLE001 - readers of damaged files raise anything
                # (rosbags' ReaderError, apsw/sqlite errors, codec errors, struct errors).
                self.damage = f"{unit.path}: {type(exc).__name__}: {exc}"
                return

    def _unit_messages(self, unit: _Unit) -> Iterator[RawMessage]:
        if unit.reader is None:
            yield from salvage_reader(unit.path).messages()
            return
        wanted = unit.reader.connections
        if self.topics is not None:
            wanted = [c for c in wanted if c.topic in self.topics]
            if not wanted:
                return  # rosbags reads everything for an empty filter
        yield from unit.reader.messages(connections=wanted)


def _declared_count(path: Path) -> int | None:
    """The message count metadata.yaml declares, if it is there and readable."""
    metadata = path / "metadata.yaml" if path.is_dir() else path.parent / "metadata.yaml"
    try:
        info = yaml.safe_load(metadata.read_text())["rosbag2_bagfile_information"]
        return int(info["message_count"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return None


def _discover_connections(path: Path) -> list[Connection]:
    """The connections of a damaged storage file, found by reading it up to the damage."""
    reader = salvage_reader(path)
    try:
        for _ in reader.messages():
            pass
    except DamagedBagError:
        pass
    return list(reader.connections.values())


class BagSource:
    """A rosbag2 bag opened for reading (use as a context manager).

    Attributes after opening:
        storage: ``mcap`` or ``sqlite3`` (of the first storage file).
        connections: connections known up front (a salvaged file reveals its own while read).
        expected_messages: the message count the bag's index declares, None when unknown.
        salvaged: reasons rosbags could not open parts of the bag (empty for a healthy bag).
        ros_distro: the distro recorded in metadata.yaml, when there is one.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.units: list[_Unit] = []
        self.storage = "mcap"
        self.connections: list[Connection] = []
        self.expected_messages: int | None = None
        self.salvaged: list[str] = []
        self.ros_distro: str | None = None
        self.compression: tuple[str, str] | None = None  # (mode, format) of rosbag2 file/message compression

    # ---- opening ---------------------------------------------------------------------------------
    def __enter__(self) -> BagSource:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        if not self.path.exists():
            raise BagOpenError(f"input bag {self.path} does not exist")
        if self.path.is_dir() and (self.path / "metadata.yaml").exists():
            storage_files = self._storage_files_of_directory()
            self.storage = storage_kind(storage_files[0]) or self.storage
            reader = self._try_rosbags(self.path)
            if isinstance(reader, Reader):
                self.units = [_Unit(self.path, reader)]
            else:
                self.units = [self._unit_for_file(f) for f in storage_files]
        else:
            if self.path.is_dir():
                storage_files = sorted(f for f in self.path.iterdir() if storage_kind(f))
                if storage_files:
                    logger.warning("%s has no metadata.yaml (recording not closed?): reading its storage "
                                   "files directly: %s", self.path, ", ".join(f.name for f in storage_files))
            else:
                storage_files = [self.path]
            if not storage_files or not all(storage_kind(f) for f in storage_files):
                raise BagOpenError(
                    f"{self.path} is not a rosbag2 bag: expected a directory with metadata.yaml, or a "
                    ".mcap / .db3 storage file"
                )
            self.units = [self._unit_for_file(f) for f in storage_files]
            self.storage = storage_kind(storage_files[0]) or self.storage
        counts = [u.reader.message_count for u in self.units if u.reader is not None]
        self.expected_messages = sum(counts) if len(counts) == len(self.units) else _declared_count(self.path)
        self.salvaged = [f"{u.path.name}: {u.why_salvaged}" for u in self.units if u.reader is None]
        for reason in self.salvaged:
            logger.warning("rosbags cannot open %s; reading it record by record", reason)
        for unit in self.units:
            if unit.reader is not None:
                self.connections.extend(unit.reader.connections)
                self.ros_distro = self.ros_distro or unit.reader.ros_distro
                if unit.reader.compression_mode and unit.reader.compression_format:
                    self.compression = (unit.reader.compression_mode, unit.reader.compression_format)
            else:
                self.connections.extend(_discover_connections(unit.path))

    def _storage_files_of_directory(self) -> list[Path]:
        files = sorted(f for f in self.path.iterdir() if storage_kind(f))
        if not files:
            raise BagOpenError(f"bag directory {self.path} holds no .mcap or .db3 storage file")
        return files

    @staticmethod
    def _try_rosbags(path: Path) -> Reader | str:
        """An open rosbags Reader, or the reason it cannot open ``path``."""
        try:
            reader = Reader(path)
            reader.open()
        except Exception as exc:  # noqa: BLE001 - rosbags raises ReaderError, apsw and OS errors alike
            return f"{type(exc).__name__}: {exc}"
        return reader

    def _unit_for_file(self, path: Path) -> _Unit:
        if any(s in (".zstd", ".lz4") for s in path.suffixes):
            raise BagOpenError(
                f"{path} is compressed as a whole file and rosbags cannot open the bag; decompress "
                "it first (zstd -d) and try again"
            )
        reader = self._try_rosbags(path)
        if isinstance(reader, Reader):
            return _Unit(path, reader)
        return _Unit(path, None, why_salvaged=reader)

    def close(self) -> None:
        for unit in self.units:
            if unit.reader is not None and unit.reader.is_open:
                unit.reader.close()
        self.units = []

    # ---- reading ---------------------------------------------------------------------------------
    def stream(self, topics: set[str] | None = None) -> MessageStream:
        """A new pass over the messages (only ``topics`` when given), in the readers' order."""
        return MessageStream(self.units, frozenset(topics) if topics is not None else None)

    def topic_types(self) -> dict[str, str]:
        """Topic -> message type of the connections known up front."""
        return {c.topic: c.msgtype for c in self.connections}
