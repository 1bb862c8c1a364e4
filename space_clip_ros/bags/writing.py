"""The output bag: original connections copied as they were, new topics added beside them.

A copied connection keeps its topic, type, serialisation format, offered QoS profiles, message
definition and type hash, and its messages are written as the same bytes at the same log time.
rosbags needs a definition and a hash for every connection; bags that did not record them
(SQLite3 bags of Humble and older) get the ones of rosbags' type store for their distro.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from rosbags.interfaces import (
    Connection,
    ConnectionExtRosbag2,
    MessageDefinitionFormat,
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

logger = logging.getLogger(__name__)

STORAGE_PLUGINS = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}

# Stand-ins for a type that neither the bag nor rosbags defines: the messages are still copied
# byte for byte; only tools that need the definition to decode them cannot.
_UNKNOWN_DEFINITION = "# message definition not recorded in the source bag\n"
_UNKNOWN_HASH = "RIHS01_" + "0" * 64

# QoS of the topics we add: what the depth node offers (reliable, keep last 5, volatile).
# "Infinite" durations as rosbag2 writes them in version 9 metadata (rmw's RMW_DURATION_INFINITE).
_INFINITE = QosTime(sec=9223372036, nsec=854775807)
ADDED_TOPIC_QOS = Qos(
    history=QosHistory.KEEP_LAST,
    depth=5,
    reliability=QosReliability.RELIABLE,
    durability=QosDurability.VOLATILE,
    deadline=_INFINITE,
    lifespan=_INFINITE,
    liveliness=QosLiveliness.AUTOMATIC,
    liveliness_lease_duration=_INFINITE,
    avoid_ros_namespace_conventions=False,
)


class BagWriteError(RuntimeError):
    """The output bag cannot be created."""


def _connection_key(connection: Connection) -> tuple:
    ext = connection.ext
    assert isinstance(ext, ConnectionExtRosbag2)
    return (connection.topic, connection.msgtype, ext.serialization_format, tuple(ext.offered_qos_profiles))


def typestore_for(distro: str | None) -> Typestore:
    """rosbags' type store of a ROS 2 distro name (``humble``...); Kilted when unknown."""
    try:
        return get_typestore(Stores(f"ros2_{distro}"))
    except ValueError:
        return get_typestore(Stores.ROS2_KILTED)


class BagSink:
    """A new rosbag2 bag being written (use as a context manager; aborted on an exception).

    Args:
        path: the bag directory to create.
        storage: ``mcap`` or ``sqlite3``.
        typestore: definitions and hashes for types the source bag does not define.
        overwrite: replace an existing bag directory at ``path``.
        compression: rosbag2 ``(mode, format)``, e.g. ``("message", "zstd")`` as the input had it.
    """

    def __init__(
        self,
        path: str | Path,
        storage: str,
        typestore: Typestore,
        overwrite: bool = False,
        compression: tuple[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        if storage not in STORAGE_PLUGINS:
            raise BagWriteError(f"storage must be one of {tuple(STORAGE_PLUGINS)}, got {storage!r}")
        if self.path.exists():
            if not overwrite:
                raise BagWriteError(f"output {self.path} exists; choose another path or pass --overwrite")
            if not (self.path / "metadata.yaml").exists() and any(self.path.iterdir()):
                raise BagWriteError(f"refusing to overwrite {self.path}: it is not empty and not a bag")
            shutil.rmtree(self.path)
        self.storage = storage
        self._typestore = typestore
        self._writer = Writer(self.path, version=Writer.VERSION_LATEST, storage_plugin=STORAGE_PLUGINS[storage])
        if compression is not None:
            mode, fmt = compression
            self._writer.set_compression(CompressionMode[mode.upper()], CompressionFormat[fmt.upper()])
        self._copies: dict[tuple, Connection] = {}
        self.messages_written = 0

    def __enter__(self) -> BagSink:
        self._writer.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self._writer.close()
        else:
            # Keep what was written readable: close properly unless the writer itself failed.
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - already failing; the original error is what matters
                self._writer.abort()

    def _definition(self, msgtype: str, msgdef: str, digest: str) -> tuple[str, str]:
        if msgdef and digest:
            return msgdef, digest
        try:
            known_def, _ = self._typestore.generate_msgdef(msgtype, ros_version=2)
            known_hash = self._typestore.hash_rihs01(msgtype)
        except Exception:  # noqa: BLE001 - rosbags raises several error types for an unknown type
            logger.warning("type %s is not defined in the bag nor known to rosbags; writing placeholders "
                           "for its definition and hash (messages are copied unchanged)", msgtype)
            return msgdef or _UNKNOWN_DEFINITION, digest or _UNKNOWN_HASH
        return msgdef or known_def, digest or known_hash

    def copy_connection(self, source: Connection) -> Connection:
        """The output connection for a source connection (created on first use)."""
        key = _connection_key(source)
        copy = self._copies.get(key)
        if copy is None:
            ext = source.ext
            assert isinstance(ext, ConnectionExtRosbag2)
            has_definition = source.msgdef.format != MessageDefinitionFormat.NONE and source.msgdef.data
            msgdef, digest = self._definition(
                source.msgtype, source.msgdef.data if has_definition else "", source.digest
            )
            copy = self._writer.add_connection(
                source.topic,
                source.msgtype,
                msgdef=msgdef,
                rihs01=digest,
                serialization_format=ext.serialization_format,
                offered_qos_profiles=ext.offered_qos_profiles,
            )
            self._copies[key] = copy
        return copy

    def add_topic(self, topic: str, msgtype: str, like: Connection | None = None) -> Connection:
        """A new topic; its definition is taken from ``like`` (same type, from the bag) if given."""
        msgdef, digest = "", ""
        if like is not None and like.msgdef.format != MessageDefinitionFormat.NONE:
            msgdef, digest = like.msgdef.data, like.digest
        msgdef, digest = self._definition(msgtype, msgdef, digest)
        return self._writer.add_connection(
            topic, msgtype, msgdef=msgdef, rihs01=digest, offered_qos_profiles=[ADDED_TOPIC_QOS]
        )

    def write(self, connection: Connection, log_time_ns: int, data: bytes) -> None:
        self._writer.write(connection, log_time_ns, data)
        self.messages_written += 1
