"""Backend ``auto``: the fastest path this device runs within the depth tolerance, measured once.

On first use for a (machine, model, sizes, software) combination, :func:`select_predictor`

1. lists the candidate paths valid on the device (:func:`candidate_paths`): on a CPU the torch
   backend with an int8 encoder and an fp32 or (with bf16 arithmetic in hardware) bf16 decoder,
   ONNX Runtime with an int8 encoder (and, given camera frames on a CPU with VNNI / AMX int8 dot
   products, an int8 decoder too, its last stage in fp32 or, with bf16 arithmetic, in bf16), with its
   worker threads sleeping or spinning within a run, or in fp32; on CUDA torch in fp16 / bf16, with and without
   CUDA graphs, torch.compile, and TensorRT when it is importable;
2. builds each (a candidate that fails to build or run is skipped, its reason logged), runs it on
   a few synthetic camera frames and compares its depth with the fp32 model's on the same frames
   (:data:`~.tolerance.DEPTH_TOLERANCE`; a path outside it is rejected);
3. times the valid ones in alternating rounds (``measure``, injectable), keeps the fastest and
   logs one line naming it and its latency;
4. stores the choice in a JSON cache file (:class:`AutoCache`, written atomically) under a key of
   the machine (CPU model and flags, or GPU name), the model (backbone and decoder configuration,
   a hash of the trained decoder's weights), the encoder input and depth output sizes, the
   precision asked for and the torch / onnxruntime / tensorrt versions; the next start with the
   same key builds the cached path without measuring.

If every candidate fails or is rejected, the exact model (torch eager fp32) runs. The cache file
is ``$SPACE_CLIP_AUTO_CACHE`` when set, else ``$XDG_CACHE_HOME/space_clip_ros/auto_paths.json``
(``~/.cache/...``); the node's ``auto_cache`` parameter and the tools' ``--auto-cache`` name another.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import hashlib
import importlib.util
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...devices import resolve_device
from ...fileio import atomic_write_text
from ...model import BackboneConfig, CheckpointRecord, DecoderConfig, SpaceClip, hash_weights, load_model
from ..benchmarking.synthetic import synthetic_camera_image
from ..benchmarking.timing import device_synchronizer, time_interleaved, torch_threads
from ..rewrites.decoder_int8 import MIN_CALIBRATION_FRAMES, calibration_files, read_calibration_frames
from .cpu_features import bf16_supported, cpu_model_and_flags, has_int8_dot_product
from .graph_cache import files_identity, graph_cache_folder, package_version
from .memory import return_freed_memory_to_os
from .options import InferenceOptions, inference_options, physical_cores, resolve_auto, unoptimized_options
from .predictor import DepthPredictor
from .tolerance import DEPTH_TOLERANCE, DepthTolerance, depth_agreement

logger = logging.getLogger(__name__)

#: Environment variable naming the cache file (the node's ``auto_cache`` parameter overrides it).
CACHE_ENV = "SPACE_CLIP_AUTO_CACHE"
#: Bumped when the meaning of a cached choice changes: older entries are then measured again.
CACHE_VERSION = 2  # 2: each timed call follows one of the same path (time_interleaved's lead_in)
#: Depth size measured when the caller does not know its own (a common RGB-D camera's, H x W).
DEFAULT_OUTPUT_SIZE = (480, 640)
#: Synthetic frames each candidate's depth is compared on, and timed rounds per candidate.
CHECK_FRAMES = 2
TIMED_ROUNDS = 3


@dataclass(frozen=True)
class InferencePath:
    """One way to run the model, as ``auto`` measures, caches and names it.

    Attributes:
        backend: torch, onnxruntime or tensorrt.
        precision: fp32, or fp16 / bf16 (CUDA: the model's; CPU bf16: the torch path's bf16
            decoder and attention inside an fp32 model, ONNX Runtime's decoder's last stage and head
            in bf16 in torch, ``OnnxRuntimeOptions.bf16_last_stage``).
        int8: int8 encoder (CPU: torch's dynamic int8 Linear layers, ONNX Runtime's int8 MatMuls).
        int8_decoder: ONNX Runtime on a CPU: static int8 for most of the decoder's convolutions too
            (``rewrites.decoder_int8``).
        spinning: ONNX Runtime: worker threads spin within a run (``OnnxRuntimeOptions.allow_spinning``):
            faster on idle cores, slower on busy ones, so measured both ways.
        cuda_graphs: torch on CUDA: replay captured CUDA graphs.
        compile_mode: torch: ``torch.compile`` mode, or none.
        optimize: False: the exact model, torch eager fp32, nothing re-written (the fallback).
    """

    backend: str
    precision: str = "fp32"
    int8: bool = False
    int8_decoder: bool = False
    spinning: bool = False
    cuda_graphs: bool = False
    compile_mode: str = "none"
    optimize: bool = True

    @property
    def name(self) -> str:
        """Short name, e.g. ``torch int8 bf16``, ``onnxruntime fp32``, ``torch fp16 cuda-graphs``."""
        if not self.optimize:
            return f"{self.backend} fp32 exact"
        parts = [self.backend] + (["int8"] if self.int8 else []) + (["int8-decoder"] if self.int8_decoder else [])
        if self.precision != "fp32" or not self.int8:
            parts.append(self.precision)
        if self.cuda_graphs:
            parts.append("cuda-graphs")
        if self.compile_mode != "none":
            parts.append(f"compile-{self.compile_mode}")
        if self.spinning:
            parts.append("spinning")
        return " ".join(parts)

    def options(self, device: torch.device, threads: int | None = None,
                calibration_images: Sequence[str | os.PathLike] = (),
                graph_cache: str | os.PathLike | None = None) -> InferenceOptions:
        """The predictor options of this path on ``device`` (the one rule of ``inference_options``);
        ``calibration_images``: the camera frames an ``int8_decoder`` path is calibrated on;
        ``graph_cache``: the folder keeping ONNX Runtime's graphs (``OnnxRuntimeOptions.graph_cache``)."""
        if not self.optimize:
            return unoptimized_options(self.backend)
        options = inference_options(self.backend, device, True, precision=self.precision,
                                    compile_mode=self.compile_mode, cuda_graphs=self.cuda_graphs, threads=threads)
        return dataclasses.replace(
            options,
            torch=dataclasses.replace(options.torch, quantize_encoder_int8=self.int8 and device.type == "cpu"),
            onnxruntime=dataclasses.replace(
                options.onnxruntime, quantize_int8=self.int8,
                quantize_decoder_int8=self.int8_decoder and device.type == "cpu",
                calibration_images=tuple(str(path) for path in calibration_images) if self.int8_decoder else (),
                allow_spinning=self.spinning,
                graph_cache=None if graph_cache is None else str(graph_cache),
            ),
            tensorrt=dataclasses.replace(options.tensorrt, fp16=self.precision == "fp16"),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InferencePath:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


EXACT_PATH = InferencePath("torch", optimize=False)


def candidate_paths(device: torch.device, precision: str = "auto", calibrated: bool = False) -> list[InferencePath]:
    """The paths ``auto`` measures on ``device``; ``precision`` other than ``auto`` keeps only its own.

    bf16 is offered on a CPU only with bf16 arithmetic in hardware (:func:`bf16_supported`), on CUDA
    only where the GPU has it; TensorRT only where the ``tensorrt`` package is importable; the int8
    decoder only on a CPU with int8 dot products and with camera frames to calibrate it on
    (``calibrated``; ``rewrites.decoder_int8``).
    """
    if device.type == "cpu":
        paths = [InferencePath("torch", "fp32", int8=True)]
        if bf16_supported():
            paths.append(InferencePath("torch", "bf16", int8=True))
        int8_paths = [InferencePath("onnxruntime", "fp32", int8=True)]
        if calibrated and has_int8_dot_product():  # u8 x s8 convolutions sum exactly and fast only there
            int8_paths.append(InferencePath("onnxruntime", "fp32", int8=True, int8_decoder=True))
            if bf16_supported():  # the one float part left, the last stage, in bf16 (bf16_last_stage)
                int8_paths.append(InferencePath("onnxruntime", "bf16", int8=True, int8_decoder=True))
        for path in int8_paths:  # spinning wins on idle cores and loses on busy ones: measure both
            paths += [path, dataclasses.replace(path, spinning=True)]
        paths.append(InferencePath("onnxruntime", "fp32"))
    else:
        precisions = ["fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
        paths = []
        for name in precisions:
            paths += [InferencePath("torch", name), InferencePath("torch", name, cuda_graphs=True)]
        paths.append(InferencePath("torch", "fp16", cuda_graphs=True, compile_mode="default"))
        if importlib.util.find_spec("tensorrt") is not None:
            paths.append(InferencePath("tensorrt", "fp16"))
    if precision == "auto":
        return paths
    chosen = [path for path in paths if path.precision == precision]
    if not chosen:
        logger.warning("precision %s: no fast path of this device runs it; measuring the others", precision)
        return paths
    return chosen


# ---- the cache --------------------------------------------------------------------------------------


def default_cache_path() -> Path:
    """``$SPACE_CLIP_AUTO_CACHE``, else ``$XDG_CACHE_HOME/space_clip_ros/auto_paths.json``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "space_clip_ros" / "auto_paths.json"


class AutoCache:
    """The choices made on this machine: a JSON file ``{"version", "entries": {key hash: entry}}``.

    An unreadable or foreign file is treated as empty (and replaced at the next write); a write that
    fails (read-only file system) is logged, and the choice is simply measured again next time.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def _entries(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.warning("auto path cache %s unreadable (%s): measuring again", self.path, exc)
            return {}
        entries = data.get("entries") if isinstance(data, dict) and data.get("version") == CACHE_VERSION else None
        if not isinstance(entries, dict):
            return {}
        return entries

    def get(self, key_hash: str) -> dict[str, Any] | None:
        return self._entries().get(key_hash)

    def put(self, key_hash: str, entry: dict[str, Any]) -> None:
        entries = self._entries()  # read again just before writing: other processes may have added theirs
        entries[key_hash] = entry
        text = json.dumps({"version": CACHE_VERSION, "entries": entries}, indent=2, sort_keys=True) + "\n"
        try:
            atomic_write_text(self.path, text)
        except OSError as exc:
            logger.warning("cannot write the auto path cache %s (%s): the choice will be measured again", self.path,
                           exc)


def machine_identity(device: torch.device) -> dict[str, Any]:
    """What decides speed on ``device``: CPU model, flags and cores, or the GPU's name and CUDA."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {"gpu": props.name, "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda}
    model, flags = cpu_model_and_flags()
    return {"cpu": model, "cpu_flags": list(flags), "physical_cores": physical_cores()}


def weights_identity(model: SpaceClip, record: CheckpointRecord | None) -> str:
    """A hash of the trained decoder's weights (and the backbone's weights file, by size and time);
    ``untrained`` for a decoder with random weights (a new draw per start: speed does not depend on
    it, and there is no trained depth to keep)."""
    if record is None:
        return "untrained"
    digest = hash_weights(hashlib.sha256(), model.decoder)
    pretrained = model.config.backbone.pretrained
    if pretrained and Path(pretrained).is_file():
        stat = Path(pretrained).stat()
        digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return "sha256:" + digest.hexdigest()[:24]


def cache_key(
    model: SpaceClip,
    record: CheckpointRecord | None,
    device: torch.device,
    precision: str,
    output_size: tuple[int, int],
    threads: int | None = None,
    paths: Sequence[InferencePath] = (),
    camera_frames: Sequence[str | os.PathLike] = (),
) -> dict[str, Any]:
    """Everything a cached choice depends on (see the module notes), with the candidates measured and
    the camera frames (by name, size and time) that calibrated and checked them."""
    return {
        "version": CACHE_VERSION,
        "machine": machine_identity(device),
        "model": {"config": model.config.to_dict(), "weights": weights_identity(model, record)},
        "input_size": list(model.input_size),
        "output_size": list(output_size),
        "precision": precision,
        "threads": threads,
        "candidates": [path.name for path in paths],
        "camera_frames": files_identity(camera_frames),
        "software": {name: package_version(name) for name in ("torch", "onnxruntime", "onnxruntime-gpu", "tensorrt")},
    }


def split_camera_frames(source: str | os.PathLike | None) -> tuple[list[Path], list[Path]]:
    """(frames to calibrate on, frames to check on) of a folder or glob of camera frames: every other
    frame each; ([], []) for none, or for a single frame (with a warning: nothing would be left to check)."""
    if not source:
        return [], []
    files = calibration_files(source)
    if len(files) < MIN_CALIBRATION_FRAMES:
        logger.warning("backend auto: calibration images %s: one frame only; the int8 decoder needs %d or more "
                       "(half to calibrate, half to check the depth on), so it is not measured", source,
                       MIN_CALIBRATION_FRAMES)
        return [], []
    return files[0::2], files[1::2]


def key_hash(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


# ---- measuring ----------------------------------------------------------------------------------------

#: ``measure(runs) -> {name: latency in ms}``: times each zero-argument callable of ``runs``.
Measure = Callable[[Mapping[str, Callable[[], object]]], Mapping[str, float]]
#: ``build(path) -> DepthPredictor``: the predictor of one candidate path (raises when it cannot be built).
Build = Callable[[InferencePath], DepthPredictor]


def interleaved_measure(rounds: int = TIMED_ROUNDS, warmup: int = 1,
                        synchronize: Callable[[], None] = lambda: None) -> Measure:
    """The default ``measure``: median of ``rounds`` alternating rounds (A, B, C, A, B, C, ...), each
    timed call after an untimed one of the same path (``time_interleaved``'s ``lead_in``: a path pays
    for its own leftover worker threads, not for those of the path measured before it)."""

    def measure(runs: Mapping[str, Callable[[], object]]) -> dict[str, float]:
        stats = time_interleaved(dict(runs), warmup, rounds, synchronize, lead_in=1)
        return {name: value.median_ms for name, value in stats.items()}

    return measure


@dataclass
class AutoChoice:
    """What ``auto`` chose and why: the path, its latency, and every candidate's outcome."""

    path: InferencePath
    latency_ms: float | None
    measured_now: bool
    output_size: tuple[int, int]
    candidates: dict[str, str] = field(default_factory=dict)  # name -> "123.4 ms" / "rejected: ..." / "failed: ..."
    cache_file: str | None = None
    measured_at: str = ""

    @property
    def name(self) -> str:
        return self.path.name

    def describe(self) -> str:
        latency = "latency unknown" if self.latency_ms is None else f"{self.latency_ms:.1f} ms per frame"
        size = f"{self.output_size[1]}x{self.output_size[0]} depth"
        when = "measured now" if self.measured_now else f"measured {self.measured_at or 'earlier'}, cached"
        where = f" in {self.cache_file}" if self.cache_file else ""
        others = "; ".join(f"{name}: {outcome}" for name, outcome in self.candidates.items() if name != self.name)
        return f"{self.name}, {latency} ({size}; {when}{where})" + (f"; others: {others}" if others else "")

    def to_entry(self, key: Mapping[str, Any]) -> dict[str, Any]:
        return {"path": self.path.to_dict(), "name": self.name, "latency_ms": self.latency_ms,
                "candidates": self.candidates, "measured_at": self.measured_at, "key": dict(key)}


def _thread_bound(predictor: DepthPredictor, threads: int) -> Callable[..., object]:
    def run(images: np.ndarray, output_size: tuple[int, int]):
        with torch_threads(threads):
            return predictor.infer(images, output_size).depth

    return run


def select_predictor(
    model: SpaceClip,
    record: CheckpointRecord | None = None,
    device: str | torch.device = "auto",
    precision: str = "auto",
    *,
    output_size: tuple[int, int] | None = None,
    threads: int | None = None,
    cache: AutoCache | None = None,
    candidates: Sequence[InferencePath] | None = None,
    build: Build | None = None,
    measure: Measure | None = None,
    tolerance: DepthTolerance = DEPTH_TOLERANCE,
    frames: int = CHECK_FRAMES,
    calibration_images: str | os.PathLike | None = None,
) -> DepthPredictor:
    """A predictor on the fastest valid path for ``model`` on ``device`` (see the module notes).

    The returned predictor's ``auto_choice`` is the :class:`AutoChoice`. ``cache`` None: measure
    and remember nothing. ``candidates``, ``build`` and ``measure`` replace the device's candidate
    list, the predictor construction and the timing (tests inject them). ``calibration_images``: a
    folder or glob of frames from the camera; with two or more, the int8-decoder path is a candidate
    (calibrated on every other frame), and every candidate is also checked on the remaining frames.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    size = tuple(output_size or DEFAULT_OUTPUT_SIZE)
    calibrate, check = split_camera_frames(calibration_images)
    paths = list(candidates) if candidates is not None else candidate_paths(device, precision, bool(calibrate))
    if build is None:
        graphs = None if cache is None else graph_cache_folder(cache.path)

        def build(path: InferencePath) -> DepthPredictor:
            return DepthPredictor(model, device=str(device), precision=path.precision, record=record,
                                  options=path.options(device, threads, calibrate, graphs))
    key = cache_key(model, record, device, precision, size, threads, paths, calibrate + check)
    digest = key_hash(key)
    entry = cache.get(digest) if cache is not None else None
    if entry is not None:
        path = InferencePath.from_dict(entry.get("path", {}))
        if path in paths or path == EXACT_PATH:
            try:
                predictor = build(path)
            except Exception as exc:  # noqa: BLE001 - any failure: measure again instead
                logger.warning("backend auto: the cached path %s cannot be built here (%s); measuring again",
                               path.name, exc)
            else:
                predictor.auto_choice = AutoChoice(path, entry.get("latency_ms"), False, size,
                                                   dict(entry.get("candidates", {})), str(cache.path),
                                                   entry.get("measured_at", ""))
                logger.info("backend auto: %s", predictor.auto_choice.describe())
                return predictor
    predictor, choice = _measure_and_choose(model, record, device, size, paths, build, measure, tolerance, frames,
                                            read_calibration_frames(check))
    if cache is not None:
        choice.cache_file = str(cache.path)
        cache.put(digest, choice.to_entry(key))
    predictor.auto_choice = choice
    logger.info("backend auto: %s", choice.describe())
    return predictor


def _measure_and_choose(
    model: SpaceClip,
    record: CheckpointRecord | None,
    device: torch.device,
    size: tuple[int, int],
    paths: Sequence[InferencePath],
    build: Build,
    measure: Measure | None,
    tolerance: DepthTolerance,
    frames: int,
    camera_frames: Sequence[np.ndarray] = (),
) -> tuple[DepthPredictor, AutoChoice]:
    logger.info("backend auto: measuring %d candidate path(s) on %s at %dx%d depth (once; the choice is cached): %s",
                len(paths), device, size[1], size[0], ", ".join(path.name for path in paths))
    images = [synthetic_camera_image(*size, seed=seed)[None] for seed in range(max(1, frames))]
    # the depth is checked on the camera's own frames too, where given (timing stays on the first frame)
    checked = images + [frame[None] for frame in camera_frames]
    start_threads = torch.get_num_threads()
    reference = DepthPredictor(model, device=str(device), precision="fp32", record=record,
                               options=unoptimized_options("torch"))
    with torch.inference_mode():
        expected = torch.cat([reference.infer(image, size).depth.float().cpu() for image in checked])
    del reference
    outcomes: dict[str, str] = {}
    runners: dict[str, tuple[InferencePath, DepthPredictor, Callable[..., object]]] = {}
    for path in paths:
        torch.set_num_threads(start_threads)  # each candidate sets its own threads as it is built
        try:
            predictor = build(path)
            run = _thread_bound(predictor, torch.get_num_threads())
            with torch.inference_mode():
                depth = torch.cat([run(image, size).float().cpu() for image in checked])
        except Exception as exc:  # noqa: BLE001 - a candidate that cannot build or run is skipped, said why
            outcomes[path.name] = f"failed: {type(exc).__name__}: {exc}"
            logger.info("backend auto: %s skipped: %s", path.name, outcomes[path.name][len("failed: "):])
            continue
        problem = tolerance.problem(depth_agreement(depth, expected))
        if problem is not None:
            outcomes[path.name] = f"rejected: {problem}"
            logger.info("backend auto: %s rejected: %s", path.name, problem)
            continue
        runners[path.name] = (path, predictor, run)
    measured_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    if not runners:
        torch.set_num_threads(start_threads)
        logger.warning("backend auto: no fast path is valid here; running the exact model (torch eager fp32)")
        predictor = build(EXACT_PATH)
        return predictor, AutoChoice(EXACT_PATH, None, True, size, outcomes, measured_at=measured_at)
    if measure is None:
        measure = interleaved_measure(synchronize=device_synchronizer(device))
    timed = {name: (lambda run=run: run(images[0], size)) for name, (_path, _predictor, run) in runners.items()}
    with torch.inference_mode():
        latencies = dict(measure(timed))
    for name in runners:
        outcomes[name] = f"{latencies[name]:.1f} ms"
    best = min(runners, key=lambda name: latencies[name])
    path, predictor, _run = runners[best]
    threads = _threads_of(predictor)
    runners.clear()
    gc.collect()
    return_freed_memory_to_os()
    if threads is not None:
        torch.set_num_threads(threads)  # the winner's setting is the process's from now on
    ordered = dict(sorted(outcomes.items(), key=lambda item: (item[0] != best, item[0])))
    return predictor, AutoChoice(path, latencies[best], True, size, ordered, measured_at=measured_at)


def _threads_of(predictor: DepthPredictor) -> int | None:
    """The torch thread count the predictor's options set when it was built (None: left alone)."""
    options = predictor.options
    if predictor.device.type != "cpu":
        return None
    if options.backend == "onnxruntime":
        return options.onnxruntime.torch_threads
    if options.backend == "torch" and options.torch.num_threads is not None:
        return options.torch.num_threads or physical_cores()
    return None


# ---- the one entry point of the node, the tools and create_predictor ----------------------------------


def predictor_for(
    model: SpaceClip,
    record: CheckpointRecord | None = None,
    *,
    device: str = "auto",
    precision: str = "auto",
    backend: str = "auto",
    optimize: bool = True,
    exported_model: str = "",
    cuda_graphs: bool = False,
    compile_mode: str = "none",
    threads: int | None = None,
    output_size: tuple[int, int] | None = None,
    cache_path: str | os.PathLike | None = "",
    torch_only: bool = False,
    calibration_images: str | os.PathLike | None = None,
    **select_arguments: Any,
) -> DepthPredictor:
    """The predictor a user's settings ask for, in one rule (node parameters, tool flags, Python):

    * ``backend="auto"`` with ``optimize`` (the default): :func:`select_predictor`, cached in
      ``cache_path`` ("" : :func:`default_cache_path`; None: no cache);
    * ``optimize=False``: the exact model (``auto`` means torch eager fp32 then);
    * otherwise the named backend's fast path (``inference_options``), as before ``auto`` existed.

    ``precision="auto"``: every precision for ``auto``, else fp16 on CUDA and fp32 on a CPU.
    ``torch_only``: ``auto`` measures the torch backend's paths only (outputs that need the decoder's
    auxiliary heads, such as the confidence map). ``calibration_images`` (a folder or glob of camera
    frames): ``auto`` also measures the int8-decoder path (and checks every path on those frames);
    a forced ``onnxruntime`` backend with ``optimize`` uses the int8 decoder, calibrated on all of them,
    where the CPU has int8 dot products.
    """
    resolved = resolve_device(device)
    if backend == "auto" and optimize and not exported_model and compile_mode == "none" and not cuda_graphs:
        cache = None if cache_path is None else AutoCache(cache_path or default_cache_path())
        if torch_only and "candidates" not in select_arguments:
            paths = candidate_paths(resolved, precision)
            select_arguments["candidates"] = [path for path in paths if path.backend == "torch"]
        return select_predictor(model, record, resolved, precision, output_size=output_size, threads=threads,
                                cache=cache, calibration_images=calibration_images, **select_arguments)
    if backend == "auto" and exported_model:
        raise ValueError("exported_model needs backend onnxruntime or tensorrt, not auto")
    if backend == "auto" and not optimize:
        backend = "torch"
    if backend == "auto" and (cuda_graphs or compile_mode != "none"):
        backend = "torch"  # CUDA graphs and torch.compile are torch's
    precision, backend = resolve_auto(resolved, precision, backend)
    options = inference_options(backend, resolved, optimize, precision=precision, exported_model=exported_model,
                                compile_mode=compile_mode, cuda_graphs=cuda_graphs, threads=threads)
    if calibration_images:
        options = _with_int8_decoder(options, resolved, optimize and not exported_model, calibration_images)
    if options.backend == "onnxruntime" and cache_path is not None:
        options = dataclasses.replace(options, onnxruntime=dataclasses.replace(
            options.onnxruntime, graph_cache=str(graph_cache_folder(cache_path or default_cache_path()))))
    return DepthPredictor(model, device=str(resolved), precision=precision, record=record, options=options)


def _with_int8_decoder(options: InferenceOptions, device: torch.device, applies: bool,
                       calibration_images: str | os.PathLike) -> InferenceOptions:
    """A forced onnxruntime fast path with the int8 decoder calibrated on ``calibration_images``, where
    the CPU has int8 dot products; any other forced path runs as it is (and says so)."""
    if not (applies and options.backend == "onnxruntime" and device.type == "cpu"):
        logger.warning("calibration images %s: used by backend auto, and by backend onnxruntime with optimize on "
                       "a CPU (without an exported_model); this %s path does not use them",
                       calibration_images, options.backend)
        return options
    if not has_int8_dot_product():
        logger.warning("calibration images %s: this CPU has no VNNI / AMX int8 dot products, so the decoder stays "
                       "float (rewrites.decoder_int8)", calibration_images)
        return options
    files = tuple(str(path) for path in calibration_files(calibration_images))
    return dataclasses.replace(options, onnxruntime=dataclasses.replace(
        options.onnxruntime, quantize_decoder_int8=True, calibration_images=files))


def predictor_from_checkpoint(
    checkpoint: str | os.PathLike | None,
    backbone: BackboneConfig | None = None,
    decoder: DecoderConfig | None = None,
    **settings: Any,
) -> DepthPredictor:
    """Load a checkpoint (``model.load_model``) and make :func:`predictor_for`'s predictor of it; an
    exported graph's predictor lets go of the torch weights (``DepthPredictor.release_model``)."""
    model, record = load_model(checkpoint, backbone=backbone, decoder=decoder)
    predictor = predictor_for(model, record, **settings)
    del model
    predictor.release_model()
    return predictor
