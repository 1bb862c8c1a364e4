"""Static int8 for the decoder's convolutions in an exported graph, for CPUs with int8 dot products.

The decoder is ~29 GFLOP of 3x3 convolutions per frame (ViT-B/16, 224x224), and ONNX Runtime
already runs them in fp32 at the CPU's fp32 peak (Zen 5: 430-460 GFLOP/s on 2 cores), so only
fewer bits make it faster. Static quantisation (QDQ: u8 activations with one scale per tensor,
fixed by a calibration pass; s8 weights with one scale per output channel) lets ONNX Runtime run
them in its NHWC int8 kernels, ~1.2-1.4 TOP/s on VNNI.

Not every convolution is quantised (:func:`float_decoder_part`): these stay float, because their
rounding reaches the depth almost unfiltered (measured on the benchmark's synthetic ViT-B/16
decoder, median relative depth error against fp32; docs/benchmarks.md):

* the last, full-resolution semantic stage: 1.4-3 % alone when quantised (its fuse and residual
  convolutions are the sensitive ones);
* the depth head and the auxiliary heads, which map features to metres: 2.7-5.9 %;
* the 1x1 projections of the encoder's tokens (FiLM-modulated, wide ranges): 1.4-2.1 %.

The rest, ~80 % of the arithmetic, adds 0.1-0.2 % there.

**Calibration needs frames from the camera** (:func:`calibration_files`). The activation ranges fix
what the int8 decoder can represent, and synthetic frames do not cover a real camera's: calibrated
on synthetic frames, the demo's trained decoders were fine on synthetic frames (< 0.1 %) but on
real photos (shared/data/real_rgbd) the street decoder's depth was off by up to 12.5 m and the
indoor one's by 3.4 % median (clipped activations). Calibrated on the same camera's frames the
error stays small on that camera's other frames. So this path is never built from synthetic
frames: ``auto`` offers it only when it is given camera frames (the node's ``calibration_images``,
the tools' ``--calibration-images``), calibrates on half of them and checks the depth on the other
half. With ``calibration_images: auto`` the node keeps frames of its own camera while it runs
(:class:`CalibrationFrameRecorder`); the node then chooses its path again with them, in the
background, and the next start uses them at once.

Only for CPUs with VNNI or AMX (:func:`~..runtime.cpu_features.has_int8_dot_product`): without
them ONNX Runtime's u8 x s8 products sum in saturating 16-bit lanes (see :mod:`.quantize`).
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from ...data.formats import read_rgb, write_rgb
from ...model import DecoderConfig, SpaceClip
from ...model.preprocess import pixels_from_frames
from .quantize import quiet_root_logger

logger = logging.getLogger(__name__)

#: Image files a calibration folder may hold.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm")
#: At most this many calibration frames are read (evenly spaced through what was given): the
#: ranges settle after a few frames, and each costs one fp32 pass of the model.
MAX_CALIBRATION_FRAMES = 16
#: Fewest camera frames ``auto`` can use: half calibrate the int8 decoder, half check the depth.
MIN_CALIBRATION_FRAMES = 2


def decoder_child(node_name: str) -> str | None:
    """The decoder's child module an exported node belongs to (``semantic_stages.3``, ``head``, ...),
    or None for a node outside the decoder. Node names of the TorchScript export follow the module
    path, e.g. ``/model/decoder/semantic_stages.3/fuse/fuse.0/Conv``."""
    parts = node_name.split("/")
    if "decoder" not in parts[:-1]:
        return None
    return parts[parts.index("decoder") + 1]


def last_stage_child(config: DecoderConfig) -> str:
    """The decoder's child module of its last (full-resolution) semantic stage, as ``decoder_child``
    names it (``semantic_stages.3`` for the reference decoder)."""
    return f"semantic_stages.{len(config.channels) - 1}"


def float_decoder_part(node_name: str, config: DecoderConfig) -> bool:
    """Whether an exported node belongs to a decoder part kept float (module notes)."""
    child = decoder_child(node_name)
    if child is None:
        return False
    return child == last_stage_child(config) or child.split(".")[0] in (
        "head",
        "aux_heads",
        "semantic_proj",
        "structural_proj",
    )


def decoder_int8_convolutions(model_path: str | os.PathLike, config: DecoderConfig) -> list[str]:
    """Names of the decoder's Conv nodes to quantise in the exported graph at ``model_path``."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [
        node.name
        for node in graph.node
        if node.op_type == "Conv" and decoder_child(node.name) is not None
        and not float_decoder_part(node.name, config)
    ]


def _images_in(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)


def calibration_files(source: str | os.PathLike, limit: int = MAX_CALIBRATION_FRAMES) -> list[Path]:
    """The camera frames named by ``source``: a folder of images or a glob pattern; at most ``limit``
    of them, evenly spaced in name order. Raises ValueError when there is none."""
    text = str(source)
    folder = Path(text).expanduser()
    if folder.is_dir():
        files = _images_in(folder)
    else:
        files = sorted(Path(name) for name in glob.glob(os.path.expanduser(text)))
        files = [path for path in files if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()]
    if not files:
        raise ValueError(f"calibration images {text!r}: no {'/'.join(s[1:] for s in IMAGE_SUFFIXES)} files "
                         "(give a folder of frames from the camera, or a glob such as 'frames/*.png')")
    if len(files) > limit:
        files = [files[round(index * (len(files) - 1) / (limit - 1))] for index in range(limit)]
    return files


def read_calibration_frames(files: Sequence[str | os.PathLike]) -> list[np.ndarray]:
    """The frames as (H, W, 3) uint8 RGB (grey images are repeated into three channels)."""
    return [read_rgb(path) for path in files]


def graph_inputs(model: SpaceClip, images: Sequence[np.ndarray], takes_images: bool,
                 image_size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """What a graph's single input receives for each of ``images``: normalised pixels (1, 3, h, w)
    float32 (the predictor's preprocessing), or, for a graph with preprocessing inside, uint8 frames
    (1, H, W, 3) resized to ``image_size``."""
    inputs = []
    for image in images:
        if takes_images:
            if image_size is None:
                raise ValueError("a graph that takes camera frames needs their size")
            height, width = image_size
            resized = cv2.resize(np.ascontiguousarray(image), (int(width), int(height)), interpolation=cv2.INTER_AREA)
            inputs.append(resized[None])
        else:
            inputs.append(pixels_from_frames(image, model.input_size, model.mean, model.std).numpy())
    return inputs


def quantize_onnx_decoder_int8(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    config: DecoderConfig,
    calibration: Sequence[dict[str, np.ndarray]],
) -> int:
    """Quantise the decoder's convolutions of the graph at ``source`` (module notes) into
    ``destination``; ``calibration``: input dictionaries of the graph to fix activation ranges on.
    Returns how many convolutions were quantised."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if not calibration:
        raise ValueError("static int8 quantisation needs at least one calibration input")
    nodes = decoder_int8_convolutions(source, config)
    if not nodes:
        raise ValueError(f"{source} has no decoder convolutions to quantise (not a space-clip-export graph?)")

    class Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds: Iterator[dict[str, np.ndarray]] = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    with quiet_root_logger():  # the calibrator writes its augmented model to a temporary folder of its own
        quantize_static(
            str(source),
            str(destination),
            Feeds(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            nodes_to_quantize=nodes,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"WeightSymmetric": True},
        )
    logger.info("quantised %d decoder convolutions of %s to int8 (static, calibrated on %d camera frames) -> %s",
                len(nodes), source, len(calibration), destination)
    return len(nodes)


# ---- keeping a camera's frames for a later calibration (calibration_images: auto) ---------------------

#: Frames a node keeps from its camera for ``calibration_images: auto``, and the least time between two.
KEPT_FRAMES = 12
KEPT_FRAMES_INTERVAL_S = 1.0


def kept_frames_folder(cache_file: str | os.PathLike, node_name: str) -> Path:
    """Where a node keeps its camera's frames: ``camera_frames/<node>`` beside the auto cache file."""
    name = node_name.strip("/").replace("/", "__") or "node"
    return Path(cache_file).expanduser().parent / "camera_frames" / name


def has_calibration_frames(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds the frames ``auto`` needs (:data:`MIN_CALIBRATION_FRAMES`)."""
    path = Path(folder)
    return path.is_dir() and len(_images_in(path)) >= MIN_CALIBRATION_FRAMES


class CalibrationFrameRecorder:
    """Keeps ``count`` frames of a running camera, at least ``interval_s`` apart, as PNG files in
    ``folder``: written into ``<folder>.partial`` and renamed when complete, so a folder that exists
    always holds a whole set (a start never calibrates on half a recording).

    ``offer`` is cheap once the set is complete (and after a failure to write, which is logged once).
    """

    def __init__(self, folder: str | os.PathLike, count: int = KEPT_FRAMES, interval_s: float = KEPT_FRAMES_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if count < MIN_CALIBRATION_FRAMES:
            raise ValueError(f"a calibration set needs at least {MIN_CALIBRATION_FRAMES} frames, got {count}")
        self.folder = Path(folder)
        self.count, self.interval_s, self._clock = count, interval_s, clock
        self._staging = self.folder.with_name(self.folder.name + ".partial")
        self._kept = 0
        self._last: float | None = None
        self.failed: str | None = None

    @property
    def done(self) -> bool:
        return self._kept >= self.count or self.failed is not None

    def offer(self, rgb: np.ndarray) -> bool:
        """Keep ``rgb`` ((H, W, 3) uint8) if it is time for another frame; True when it completed the set."""
        if self.done:
            return False
        now = self._clock()
        if self._last is not None and now - self._last < self.interval_s:
            return False
        try:
            if self._kept == 0:
                shutil.rmtree(self._staging, ignore_errors=True)  # a set an earlier run left unfinished
            write_rgb(self._staging / f"frame_{self._kept:03d}.png", rgb)
            self._kept += 1
            self._last = now
            if self._kept < self.count:
                return False
            shutil.rmtree(self.folder, ignore_errors=True)
            self._staging.rename(self.folder)
        except OSError as exc:
            self.failed = f"{type(exc).__name__}: {exc}"
            logger.warning("cannot keep camera frames in %s (%s): calibration_images auto stops recording",
                           self._staging, self.failed)
            return False
        logger.info("kept %d camera frames in %s, for calibrating the int8 decoder", self.count, self.folder)
        return True
