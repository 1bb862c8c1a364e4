"""Exported and quantised ONNX graphs kept on disk between starts.

Exporting ViT-B/16 and quantising it takes 10-15 s on a 2-core CPU (export ~4 s, int8 encoder
MatMuls ~6 s, the int8 decoder's calibration ~4 s), at every start of the node, and ``auto``
built the same graph more than once while measuring (a path with and without spinning workers
runs one graph). A :class:`GraphCache` keeps each stage's graph in a folder under a name derived
from everything that made it (:func:`model_identity`, the stage's settings, the calibration
frames, the software and this package's graph-making code), so a restart loads the file instead
and stages are shared: the int8 decoder is calibrated on the cached int8-encoder graph.

Files are written under a temporary name and renamed into place, so several processes (a fleet
of bag jobs) may fill one folder; the least recently used graphs are removed beyond
``max_bytes``. A folder that cannot be written is logged and the graphs are built in a temporary
folder as before.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...model import SpaceClip, hash_weights

logger = logging.getLogger(__name__)

#: Cache size beyond which the least recently used graphs are removed (ViT-B/16: fp32 ~350 MB,
#: int8 ~110 MB per graph).
DEFAULT_MAX_BYTES = 1536 * 1024 * 1024
#: A partially written file older than this belongs to a process that died while writing.
STALE_PARTIAL_S = 3600.0
GRAPH_SUFFIX = ".onnx"
#: Folder of the graph cache beside backend auto's choices file.
GRAPH_FOLDER_NAME = "onnx_graphs"

#: The package's code that decides what an exported graph holds (a change there makes new graphs).
_GRAPH_CODE_PACKAGES = ("model", "inference/rewrites")


def graph_cache_folder(auto_cache_file: str | os.PathLike) -> Path:
    """The graph cache folder that belongs to backend auto's cache file (beside it)."""
    return Path(auto_cache_file).expanduser().parent / GRAPH_FOLDER_NAME


def model_identity(model: SpaceClip) -> str:
    """A hash of the model's configuration and all its weights and buffers (~0.2 s for ViT-B/16)."""
    digest = hash_weights(hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode()), model)
    return "sha256:" + digest.hexdigest()[:32]


def files_identity(files: Sequence[str | os.PathLike]) -> str | None:
    """A hash of files by resolved name, size and modification time (None for no files)."""
    if not files:
        return None
    digest = hashlib.sha256()
    for name in files:
        stat = Path(name).stat()
        digest.update(f"{Path(name).resolve()}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return "sha256:" + digest.hexdigest()[:24]


@functools.cache
def _graph_code_identity() -> str:
    root = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for package in _GRAPH_CODE_PACKAGES:
        for source in sorted((root / package).rglob("*.py")):
            digest.update(str(source.relative_to(root)).encode())
            digest.update(source.read_bytes())
    return "sha256:" + digest.hexdigest()[:24]


def package_version(name: str) -> str | None:
    """The installed version of a distribution, None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _software() -> dict[str, str | None]:
    return {name: package_version(name)
            for name in ("space_clip_ros", "torch", "onnx", "onnxruntime", "onnxruntime-gpu")}


def graph_key(model_hash: str, stages: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What a graph depends on: the model (:func:`model_identity`), the stages that made it (export,
    quantisations, with their settings), the software versions and the graph-making code."""
    return {"model": model_hash, "stages": [dict(stage) for stage in stages],
            "software": _software(), "code": _graph_code_identity()}


@dataclass(frozen=True)
class GraphStage:
    """One step that makes a graph: ``build(previous graph or None, output path)``, described by
    ``settings`` (part of the key of its graph and of every later stage's)."""

    label: str
    settings: Mapping[str, Any]
    build: Callable[[Path | None, Path], None]


class GraphCache:
    """A folder of ONNX graphs by :func:`graph_key` (module notes)."""

    def __init__(self, folder: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.folder = Path(folder).expanduser()
        self.max_bytes = max_bytes

    def path(self, key: Mapping[str, Any]) -> Path:
        name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        return self.folder / f"{name}{GRAPH_SUFFIX}"

    def get_or_build(self, key: Mapping[str, Any], build: Callable[[Path], None], what: str = "graph") -> Path:
        """The cached graph of ``key``, or a new one that ``build(path)`` writes (then kept)."""
        path = self.path(key)
        if path.is_file():
            with contextlib.suppress(OSError):  # a read-only cache still serves its graphs
                os.utime(path)  # most recently used
            logger.debug("%s: cached graph %s", what, path)
            return path
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        try:
            build(partial)
            os.replace(partial, path)  # whole or not at all, also beside another process writing it
        finally:
            partial.unlink(missing_ok=True)
        logger.info("%s: built and kept %s (%.0f MB)", what, path, path.stat().st_size / 1e6)
        self._evict(keep=path)
        return path

    def build_stages(self, model_hash: str, stages: Sequence[GraphStage]) -> Path:
        """The graph made by ``stages`` in order (each from the one before), starting from the last
        stage already kept: a kept int8 graph needs neither the export nor its float graph again."""
        settings = [stage.settings for stage in stages]
        keys = [graph_key(model_hash, settings[: index + 1]) for index in range(len(stages))]
        start = max((index for index, key in enumerate(keys) if self.path(key).is_file()), default=0)
        path: Path | None = None
        for index in range(start, len(stages)):
            source, stage = path, stages[index]
            path = self.get_or_build(keys[index], lambda out, stage=stage, source=source: stage.build(source, out),
                                     stage.label)
        assert path is not None, "no stages"
        return path

    def _evict(self, keep: Path) -> None:
        """Remove stale partial files, then the least recently used graphs beyond ``max_bytes``."""
        now = time.time()
        graphs = []
        for entry in self.folder.iterdir():
            try:
                stat = entry.stat()
            except FileNotFoundError:  # removed by another process meanwhile
                continue
            if entry.name.endswith(".partial"):
                if now - stat.st_mtime > STALE_PARTIAL_S:
                    entry.unlink(missing_ok=True)
            elif entry.suffix == GRAPH_SUFFIX:
                graphs.append((stat.st_mtime, stat.st_size, entry))
        total = sum(size for _, size, _ in graphs)
        for _mtime, size, entry in sorted(graphs):
            if total <= self.max_bytes:
                break
            if entry != keep:
                entry.unlink(missing_ok=True)
                total -= size
                logger.info("graph cache %s: removed %s (least recently used; cache over %.0f MB)", self.folder,
                            entry.name, self.max_bytes / 1e6)


@contextlib.contextmanager
def graph_store(folder: str | os.PathLike | None) -> Iterator[GraphCache]:
    """The graph cache in ``folder``; a throwaway one in a temporary folder for None, or when
    ``folder`` cannot be written (logged)."""
    if folder is not None:
        try:
            Path(folder).expanduser().mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=Path(folder).expanduser(), prefix=".write_probe_"):
                pass
        except OSError as exc:
            logger.warning("graph cache %s cannot be written (%s): graphs are built anew at each start", folder, exc)
        else:
            yield GraphCache(folder)
            return
    with tempfile.TemporaryDirectory(prefix="space_clip_onnx_") as temporary:
        yield GraphCache(temporary, max_bytes=2**62)
