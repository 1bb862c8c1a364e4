"""Named evaluation protocols and the per-image scoring that follows one (SPEC section 5).

A protocol fixes everything that changes a number: valid depth range, crop, flip averaging, median
scaling, and the resolution at which the score is taken. The model-running evaluator asks
``prediction_size`` at what size to predict, produces the (possibly flip-averaged) prediction, and
hands it with the native ground truth to ``evaluate_prediction``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from space_clip_ros.training.metrics import (
    boundary_depth_metrics,
    compute_depth_metrics,
    eigen_crop_mask,
    garg_crop_mask,
    median_scale,
)

DATASETS = ("kitti", "nyu", "custom")
CROPS = ("garg", "eigen", "none")
RESOLUTIONS = ("native", "release")


@dataclass(frozen=True)
class EvalProtocol:
    """How predictions are scored.

    Attributes:
        name: preset name, recorded in every report.
        dataset: ``kitti``, ``nyu`` or ``custom`` (selects the Eigen crop variant).
        min_depth_eval, max_depth_eval: pixels with ``min < gt < max`` are scored; predictions are
            clipped to ``[min, max]``.
        crop: ``garg``, ``eigen`` or ``none``, applied at the scoring resolution.
        flip: average the prediction with the mirrored prediction of the mirrored image (done by
            the model-running evaluator, recorded here).
        median_scaling: multiply each prediction by ``median(gt) / median(pred)`` over scored pixels.
        resolution: ``native`` scores at the ground truth's resolution with the prediction resized
            bilinearly to it (BTS, AdaBins, ZoeDepth; default). ``release`` resizes the ground
            truth (nearest) and the prediction to ``train_size`` and scores there, as the release did.
        train_size: ``(h, w)`` used by ``release``.
        boundary: also report ``boundary_*`` metrics near depth discontinuities.
        boundary_threshold, boundary_size: log-depth step and square size of the boundary region.
    """

    name: str
    dataset: str
    min_depth_eval: float
    max_depth_eval: float
    crop: str = "none"
    flip: bool = False
    median_scaling: bool = False
    resolution: str = "native"
    train_size: tuple[int, int] | None = None
    boundary: bool = False
    boundary_threshold: float = 0.05
    boundary_size: int = 7

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {self.crop!r}")
        if self.resolution not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {self.resolution!r}")
        if not 0 <= self.min_depth_eval < self.max_depth_eval:
            raise ValueError(
                f"need 0 <= min_depth_eval < max_depth_eval, got {self.min_depth_eval}, {self.max_depth_eval}"
            )
        if self.resolution == "release" and (self.train_size is None or len(self.train_size) != 2):
            raise ValueError("resolution='release' needs train_size=(h, w)")
        if self.crop == "eigen" and self.dataset == "custom":
            raise ValueError("the Eigen crop is defined for dataset 'kitti' or 'nyu' only")
        if self.train_size is not None:
            # Keep it a tuple of ints even when it came from JSON / YAML as a list.
            object.__setattr__(self, "train_size", (int(self.train_size[0]), int(self.train_size[1])))

    def describe(self) -> str:
        """One paragraph spelling the protocol out, for reports."""
        if self.resolution == "native":
            where = (
                "at the ground truth's native resolution, with the prediction resized bilinearly to it "
                "(standard protocol of BTS, AdaBins and ZoeDepth)"
            )
        else:
            h, w = self.train_size  # type: ignore[misc]
            where = (
                f"at the training resolution {h}x{w}: the ground truth is resized to it with "
                "nearest-neighbour sampling and the prediction bilinearly (the release's protocol; "
                "not comparable with native-resolution numbers)"
            )
        eigen = "the NYU Eigen crop [45:471, 41:601]" if self.dataset == "nyu" else "the KITTI Eigen crop"
        crop = {"none": "no crop", "garg": "the Garg crop", "eigen": eigen}[self.crop]
        text = (
            f"Protocol '{self.name}' (dataset {self.dataset}): scored {where}; {crop}; "
            f"valid pixels {self.min_depth_eval:g} < gt < {self.max_depth_eval:g} m, predictions clipped "
            f"to [{self.min_depth_eval:g}, {self.max_depth_eval:g}] m; "
            f"{'flip averaging' if self.flip else 'no flip averaging'}; "
            f"{'per-image median scaling' if self.median_scaling else 'no median scaling'}; "
            "metrics averaged per image, images without valid pixels skipped and counted."
        )
        if self.boundary:
            text += (
                f" Boundary metrics: pixels whose valid log-depth differs from a 4-neighbour by more than "
                f"{self.boundary_threshold:g}, dilated by a {self.boundary_size}x{self.boundary_size} "
                "square, inside the valid mask eroded by the same square."
            )
        return text

    def to_dict(self) -> dict[str, object]:
        """Plain-dict form (for JSON reports)."""
        data = dataclasses.asdict(self)
        data["train_size"] = list(self.train_size) if self.train_size is not None else None
        return data


PRESETS: dict[str, EvalProtocol] = {
    # KITTI Eigen split, 80 m cap; flip averaging as AdaBins / ZoeDepth report KITTI.
    "kitti_eigen": EvalProtocol(
        name="kitti_eigen", dataset="kitti", min_depth_eval=1e-3, max_depth_eval=80.0, crop="eigen", flip=True
    ),
    "kitti_garg": EvalProtocol(
        name="kitti_garg", dataset="kitti", min_depth_eval=1e-3, max_depth_eval=80.0, crop="garg", flip=True
    ),
    # The authors' controlled NYU protocol: native 480x640, Eigen crop, flip, no median scaling.
    "nyu_eigen": EvalProtocol(
        name="nyu_eigen",
        dataset="nyu",
        min_depth_eval=1e-3,
        max_depth_eval=10.0,
        crop="eigen",
        flip=True,
        boundary=True,
    ),
    # The release's numbers: scored at the training size. Median scaling stays off; the release's
    # evaluator may have applied it unconditionally (SPEC section 1), pass median_scaling=True to
    # reproduce that behaviour.
    "nyu_release": EvalProtocol(
        name="nyu_release",
        dataset="nyu",
        min_depth_eval=1e-3,
        max_depth_eval=10.0,
        crop="none",
        resolution="release",
        train_size=(480, 640),
    ),
    "kitti_release": EvalProtocol(
        name="kitti_release",
        dataset="kitti",
        min_depth_eval=1e-3,
        max_depth_eval=80.0,
        crop="eigen",
        resolution="release",
        train_size=(352, 704),
    ),
    # A starting point for other data; override the range (and anything else) as needed.
    "custom": EvalProtocol(name="custom", dataset="custom", min_depth_eval=1e-3, max_depth_eval=80.0),
}


def protocol_names() -> tuple[str, ...]:
    """Names accepted by ``get_protocol``."""
    return tuple(PRESETS)


def get_protocol(name: str, **overrides: object) -> EvalProtocol:
    """The preset called ``name`` with ``overrides`` applied to its fields (validated again)."""
    if name not in PRESETS:
        raise ValueError(f"unknown evaluation protocol {name!r}; choose one of: {', '.join(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(EvalProtocol)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown protocol field(s) {unknown}; valid fields: {sorted(fields)}")
    return dataclasses.replace(PRESETS[name], **overrides)


def prediction_size(gt_shape: tuple[int, ...], protocol: EvalProtocol) -> tuple[int, int]:
    """``(h, w)`` at which the evaluator should produce the prediction for a GT of ``gt_shape``.

    ``native``: the ground truth's own ``(h, w)`` (last two axes); ``release``: ``train_size``.
    """
    if protocol.resolution == "release":
        return protocol.train_size  # type: ignore[return-value]
    return int(gt_shape[-2]), int(gt_shape[-1])


def resize_bilinear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D map, float64, identical to torch ``interpolate(align_corners=False)``.

    Half-pixel centres, source coordinates below 0 clamped to 0, no antialiasing.
    """
    image = np.asarray(image, dtype=np.float64)
    out_h, out_w = size
    if image.shape == (out_h, out_w):
        return image.copy()
    rows0, rows1, row_w = _linear_taps(image.shape[0], out_h)
    cols0, cols1, col_w = _linear_taps(image.shape[1], out_w)
    top = image[rows0][:, cols0] * (1 - col_w) + image[rows0][:, cols1] * col_w
    bottom = image[rows1][:, cols0] * (1 - col_w) + image[rows1][:, cols1] * col_w
    return top * (1 - row_w[:, None]) + bottom * row_w[:, None]


def _linear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scale = in_size / out_size
    src = np.maximum((np.arange(out_size) + 0.5) * scale - 0.5, 0.0)
    index0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    index1 = np.minimum(index0 + 1, in_size - 1)
    return index0, index1, src - index0


def resize_nearest(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D map: source index ``floor(dst * in / out)``.

    The convention of torch ``interpolate(mode='nearest')`` and ``cv2.INTER_NEAREST``; depth values
    are never blended, so sparse ground truth stays sparse.
    """
    image = np.asarray(image)
    rows = _nearest_taps(image.shape[0], size[0])
    cols = _nearest_taps(image.shape[1], size[1])
    return image[rows][:, cols]


def _nearest_taps(in_size: int, out_size: int) -> np.ndarray:
    src = np.floor(np.arange(out_size) * (in_size / out_size)).astype(np.int64)
    return np.minimum(src, in_size - 1)


def _as_2d(name: str, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D depth map (leading singleton axes allowed), got {array.shape}"
        )
    return array


def crop_mask(shape: tuple[int, int], protocol: EvalProtocol) -> np.ndarray:
    """The protocol's crop as a boolean mask of ``shape`` (all True for ``crop='none'``)."""
    h, w = shape
    if protocol.crop == "garg":
        return garg_crop_mask(h, w)
    if protocol.crop == "eigen":
        return eigen_crop_mask(h, w, dataset=protocol.dataset)
    return np.ones((h, w), dtype=bool)


def evaluate_prediction(
    pred_native: np.ndarray, gt_native: np.ndarray, protocol: EvalProtocol
) -> dict[str, float]:
    """Score one image under ``protocol``; returns the nine metrics (+ ``boundary_*`` if enabled).

    ``pred_native`` is the model's depth map (metres) at any size, normally
    ``prediction_size(gt_native.shape, protocol)``, already flip-averaged if the protocol says so.
    ``gt_native`` is the ground truth at its native resolution. Steps: bring both to the scoring
    resolution (``native``: prediction bilinear to the GT size; ``release``: GT nearest and
    prediction bilinear to ``train_size``), crop and valid range ``min < gt < max``, optional
    median scaling over those pixels, clip the prediction, score. All metrics are NaN when no
    pixel is valid.
    """
    pred = _as_2d("pred_native", pred_native)
    gt = _as_2d("gt_native", gt_native)
    if protocol.resolution == "release":
        size = protocol.train_size
        gt = resize_nearest(gt, size)  # type: ignore[arg-type]
    else:
        size = gt.shape
    if pred.shape != size:
        pred = resize_bilinear(pred, size)  # type: ignore[arg-type]

    lo, hi = protocol.min_depth_eval, protocol.max_depth_eval
    scored = crop_mask(gt.shape, protocol) & (gt > lo) & (gt < hi)
    if protocol.median_scaling:
        pred = median_scale(pred, gt, scored)
    metrics = compute_depth_metrics(pred, gt, lo, hi, mask=scored)
    if protocol.boundary:
        metrics.update(
            boundary_depth_metrics(
                pred, gt, scored, lo, hi, threshold=protocol.boundary_threshold, size=protocol.boundary_size
            )
        )
    return metrics
