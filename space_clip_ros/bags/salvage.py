"""Record-by-record readers for damaged rosbag2 storage files that rosbags cannot open.

A recording that stopped abruptly (power loss, full disk, a copy cut short) leaves an MCAP file
without its summary and footer, or an SQLite3 file with missing pages. rosbags refuses both
(it needs the MCAP footer, and it counts the messages table up front). These readers walk the
data in file order instead and yield every message that is complete, then raise
:class:`DamagedBagError` saying where and why they stopped.

SQLite3: the file is opened through a VFS that reports only the pages really present, so the
tables and the rows whose pages survived stay readable (see :class:`_WholePagesFile`).

MCAP layout (https://mcap.dev/spec): 8 magic bytes, then records of ``opcode:u8 length:u64
content``. Messages live in the data section, alone or inside Chunk records whose payload is a
run of records, optionally zstd or lz4 compressed. A truncated uncompressed or zstd/lz4 chunk is
decoded as far as its bytes go, so the messages before the cut are kept.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import apsw  # rosbags' SQLite binding
from rosbags.interfaces import (
    Connection,
    ConnectionExtRosbag2,
    MessageDefinition,
    MessageDefinitionFormat,
)
from rosbags.rosbag2.metadata import parse_qos

MCAP_MAGIC = b"\x89MCAP0\r\n"

# MCAP record opcodes used here.
_OP_FOOTER = 0x02
_OP_SCHEMA = 0x03
_OP_CHANNEL = 0x04
_OP_MESSAGE = 0x05
_OP_CHUNK = 0x06
_OP_DATA_END = 0x0F

_RECORD_HEAD = struct.Struct("<BQ")  # opcode, content length
_MESSAGE_HEAD = struct.Struct("<HIQQ")  # channel id, sequence, log time, publish time
_CHUNK_HEAD = struct.Struct("<QQQI")  # start time, end time, uncompressed size, crc

_SQLITE_PAGE_COUNT_OFFSET = 28  # "in-header database size" field of an SQLite3 file
_VFS_SERIAL = itertools.count()

_SCHEMA_FORMATS = {
    "ros2msg": MessageDefinitionFormat.MSG,
    "ros2idl": MessageDefinitionFormat.IDL,
    "omgidl": MessageDefinitionFormat.IDL,
}

RawMessage = tuple[Connection, int, bytes]  # connection, log time (ns), serialised message


class DamagedBagError(RuntimeError):
    """Reading stopped at damage; everything yielded before it was complete."""


@dataclass
class _Schema:
    name: str
    encoding: str
    data: str


class _TruncatedError(Exception):
    """A record's bytes end before its declared length (internal to the MCAP reader)."""


class _Cursor:
    """Little-endian field reader over one record's content."""

    def __init__(self, data: bytes | memoryview) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def take(self, size: int) -> memoryview:
        if self.pos + size > len(self.data):
            raise _TruncatedError
        view = self.data[self.pos : self.pos + size]
        self.pos += size
        return view

    def unpack(self, fmt: struct.Struct) -> tuple:
        return fmt.unpack(self.take(fmt.size))

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "little")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "little")

    def u64(self) -> int:
        return int.from_bytes(self.take(8), "little")

    def string(self) -> str:
        return bytes(self.take(self.u32())).decode("utf-8")

    def string_map(self) -> dict[str, str]:
        end = self.pos + self.u32()
        entries = {}
        while self.pos < end:
            key = self.string()
            entries[key] = self.string()
        return entries

    def rest(self) -> bytes:
        view = self.data[self.pos :]
        self.pos = len(self.data)
        return bytes(view)


def _partial_decompress(compression: str, data: bytes) -> bytes:
    """As many decompressed bytes as a (possibly cut) compressed stream gives."""
    if compression == "":
        return data
    if compression == "zstd":
        try:
            from compression import zstd  # Python >= 3.14
        except ImportError:
            from backports import zstd
        return zstd.ZstdDecompressor().decompress(data)
    if compression == "lz4":
        import lz4.frame

        return lz4.frame.LZ4FrameDecompressor().decompress(data)
    raise DamagedBagError(f"unsupported MCAP chunk compression {compression!r}")


class McapSalvageReader:
    """Messages of an MCAP file in file order, read without its summary section or footer."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._schemas: dict[int, _Schema] = {}
        self.connections: dict[int, Connection] = {}

    def messages(self) -> Iterator[RawMessage]:
        """Yield (connection, log time, data); raise :class:`DamagedBagError` at damage."""
        with self.path.open("rb") as stream:
            magic = stream.read(len(MCAP_MAGIC))
            if magic != MCAP_MAGIC:
                raise DamagedBagError(f"{self.path} does not start with the MCAP magic bytes")
            yield from self._records(stream)

    def _records(self, stream: BinaryIO) -> Iterator[RawMessage]:
        while True:
            offset = stream.tell()
            head = stream.read(_RECORD_HEAD.size)
            if not head:
                raise DamagedBagError(f"{self.path} ends at byte {offset} without an MCAP footer")
            if len(head) < _RECORD_HEAD.size:
                raise DamagedBagError(f"{self.path} is truncated inside a record header at byte {offset}")
            opcode, length = _RECORD_HEAD.unpack(head)
            if opcode in (_OP_FOOTER, _OP_DATA_END):
                return  # the end of the data section: everything was read
            content = stream.read(length)
            complete = len(content) == length
            if opcode == _OP_CHUNK:
                yield from self._chunk(content, complete, offset)
            elif complete:
                yield from self._record(opcode, content)
            if not complete:
                raise DamagedBagError(
                    f"{self.path} is truncated at byte {offset + _RECORD_HEAD.size + len(content)}: "
                    f"a record of {length} bytes starting at byte {offset} is cut short"
                )

    def _record(self, opcode: int, content: bytes | memoryview) -> Iterator[RawMessage]:
        cursor = _Cursor(content)
        if opcode == _OP_SCHEMA:
            schema_id = cursor.u16()
            name, encoding = cursor.string(), cursor.string()
            self._schemas[schema_id] = _Schema(name, encoding, bytes(cursor.take(cursor.u32())).decode("utf-8"))
        elif opcode == _OP_CHANNEL:
            self._add_channel(cursor)
        elif opcode == _OP_MESSAGE:
            channel_id, _sequence, log_time, _publish_time = cursor.unpack(_MESSAGE_HEAD)
            connection = self.connections.get(channel_id)
            if connection is None:
                raise DamagedBagError(f"{self.path}: a message refers to unknown channel {channel_id}")
            yield connection, log_time, cursor.rest()

    def _add_channel(self, cursor: _Cursor) -> None:
        channel_id, schema_id = cursor.u16(), cursor.u16()
        topic, encoding = cursor.string(), cursor.string()
        metadata = cursor.string_map()
        schema = self._schemas.get(schema_id)
        msgdef = MessageDefinition(MessageDefinitionFormat.NONE, "")
        if schema is not None and schema.encoding in _SCHEMA_FORMATS:
            msgdef = MessageDefinition(_SCHEMA_FORMATS[schema.encoding], schema.data)
        self.connections[channel_id] = Connection(
            id=channel_id,
            topic=topic,
            msgtype=schema.name if schema is not None else "",
            msgdef=msgdef,
            # rosbag2's MCAP plugin keeps the type hash in the channel metadata (Iron and later).
            digest=metadata.get("topic_type_hash", metadata.get("type_description_hash", "")),
            msgcount=0,
            ext=ConnectionExtRosbag2(encoding, parse_qos(metadata.get("offered_qos_profiles", ""))),
            owner=self,
        )

    def _chunk(self, content: bytes, complete: bool, offset: int) -> Iterator[RawMessage]:
        cursor = _Cursor(content)
        try:
            _start, _end, uncompressed_size, crc = cursor.unpack(_CHUNK_HEAD)
            compression = cursor.string()
            declared = cursor.u64()
        except _TruncatedError:
            return  # cut inside the chunk's own header: nothing of it is usable
        payload = bytes(cursor.data[cursor.pos : cursor.pos + declared])
        try:
            records = _partial_decompress(compression, payload)
        except DamagedBagError:
            raise
        except Exception as exc:  # noqa: BLE001 - each codec raises its own error types
            raise DamagedBagError(f"{self.path}: chunk at byte {offset} cannot be decompressed: {exc}") from exc
        if complete and (len(records) != uncompressed_size or (crc and zlib.crc32(records) != crc)):
            raise DamagedBagError(f"{self.path}: chunk at byte {offset} fails its size or CRC check")
        yield from self._inner_records(records)

    def _inner_records(self, records: bytes) -> Iterator[RawMessage]:
        """The complete records of a chunk payload (a cut payload ends with a partial one)."""
        view = memoryview(records)
        pos = 0
        while pos + _RECORD_HEAD.size <= len(view):
            opcode, length = _RECORD_HEAD.unpack(view[pos : pos + _RECORD_HEAD.size])
            start = pos + _RECORD_HEAD.size
            if start + length > len(view):
                return
            yield from self._record(opcode, view[start : start + length])
            pos = start + length


class _WholePagesFile(apsw.VFSFile):
    """A database file whose header claims only the pages that are really there.

    SQLite trusts the page count in the header of a database; when the file was cut short, that
    count points past the end and every query fails as "malformed". Reporting the pages present
    lets SQLite read all tables and rows whose pages survived.
    """

    def __init__(self, vfs: _WholePagesVFS, name: object, flags: list[int]) -> None:
        self._page_count = vfs.page_count
        super().__init__("", name, flags)  # "" = the default VFS does the real I/O

    def xRead(self, amount: int, offset: int) -> bytes:  # noqa: N802 - apsw's method name
        data = super().xRead(amount, offset)
        if offset <= _SQLITE_PAGE_COUNT_OFFSET and offset + len(data) >= _SQLITE_PAGE_COUNT_OFFSET + 4:
            at = _SQLITE_PAGE_COUNT_OFFSET - offset
            data = data[:at] + self._page_count.to_bytes(4, "big") + data[at + 4 :]
        return data


class _WholePagesVFS(apsw.VFS):
    def __init__(self, name: str, page_count: int) -> None:
        self.page_count = page_count
        super().__init__(name, "")

    def xOpen(self, name: object, flags: list[int]) -> apsw.VFSFile:  # noqa: N802 - apsw's method name
        return _WholePagesFile(self, name, flags)


def _sqlite_page_count(path: Path) -> int:
    """How many whole pages the file holds (page size from its header)."""
    with path.open("rb") as stream:
        header = stream.read(100)
    if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
        raise DamagedBagError(f"{path} is not an SQLite3 database (its header is missing or cut)")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size  # the format stores 64 KiB as 1
    return path.stat().st_size // page_size


class SqliteSalvageReader:
    """Messages of a rosbag2 SQLite3 file in insertion order, up to the first unreadable page."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.connections: dict[int, Connection] = {}

    def _load_topics(self, db: apsw.Connection) -> None:
        columns = {row[1] for row in db.execute("PRAGMA table_info(topics)")}
        if not columns:
            raise DamagedBagError(f"{self.path} has no readable 'topics' table")
        qos_column = "offered_qos_profiles" if "offered_qos_profiles" in columns else "''"
        hash_column = "type_description_hash" if "type_description_hash" in columns else "''"
        definitions: dict[str, MessageDefinition] = {}
        if db.execute("SELECT name FROM sqlite_master WHERE name = 'message_definitions'").fetchall():
            for type_name, encoding, text in db.execute(
                "SELECT topic_type, encoding, encoded_message_definition FROM message_definitions"
            ):
                if encoding in _SCHEMA_FORMATS and text:
                    definitions[type_name] = MessageDefinition(_SCHEMA_FORMATS[encoding], text)
        query = (
            f"SELECT id, name, type, serialization_format, {qos_column}, {hash_column} "  # noqa: S608 - fixed names
            "FROM topics ORDER BY id"
        )
        for topic_id, name, type_name, serialization, qos, digest in db.execute(query):
            self.connections[topic_id] = Connection(
                id=topic_id,
                topic=name,
                msgtype=type_name,
                msgdef=definitions.get(type_name, MessageDefinition(MessageDefinitionFormat.NONE, "")),
                digest=digest or "",
                msgcount=0,
                ext=ConnectionExtRosbag2(serialization, parse_qos(qos or "")),
                owner=self,
            )

    def messages(self) -> Iterator[RawMessage]:
        """Yield (connection, log time, data); raise :class:`DamagedBagError` at damage."""
        vfs_name = f"space_clip_salvage_{next(_VFS_SERIAL)}"
        vfs = _WholePagesVFS(vfs_name, _sqlite_page_count(self.path))
        try:
            try:
                db = apsw.Connection(f"file:{self.path}?immutable=1",
                                     flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI, vfs=vfs_name)
            except apsw.Error as exc:
                raise DamagedBagError(f"{self.path} cannot be opened as SQLite3: {exc}") from exc
            try:
                yield from self._rows(db)
            finally:
                db.close()
        finally:
            vfs.unregister()

    def _rows(self, db: apsw.Connection) -> Iterator[RawMessage]:
        try:
            self._load_topics(db)
        except apsw.Error as exc:
            raise DamagedBagError(f"{self.path}: the topics table is unreadable: {exc}") from exc
        last_id = None
        try:
            for row_id, topic_id, timestamp, data in db.execute(
                "SELECT id, topic_id, timestamp, data FROM messages ORDER BY id"
            ):
                connection = self.connections.get(topic_id)
                if connection is None:
                    raise DamagedBagError(f"{self.path}: message {row_id} refers to unknown topic {topic_id}")
                last_id = row_id
                yield connection, int(timestamp), bytes(data)
        except apsw.Error as exc:
            after = f"after message id {last_id}" if last_id is not None else "before the first message"
            raise DamagedBagError(f"{self.path}: unreadable {after}: {exc}") from exc


def salvage_reader(path: Path) -> McapSalvageReader | SqliteSalvageReader:
    """The salvage reader for a storage file, chosen by its first bytes (then its suffix)."""
    with Path(path).open("rb") as stream:
        start = stream.read(16)
    if start.startswith(MCAP_MAGIC) or Path(path).suffix == ".mcap":
        return McapSalvageReader(path)
    return SqliteSalvageReader(path)
