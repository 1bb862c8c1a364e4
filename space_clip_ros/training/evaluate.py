"""Run a model over an evaluation dataset and score it under a protocol (SPEC section 5).

One function serves the evaluation CLI and the trainer's per-epoch validation. It can score several
decoders on one pass (the raw and the EMA weights during training): the frozen backbone runs once
per image (and once for its mirror when the protocol averages flips), each decoder reads the same
features.

The model input is made exactly as at inference: the dataset's [0, 1] image is resized and
normalised on the device by :func:`space_clip_ros.model.preprocess.resize_and_normalize`; the
decoder predicts at ``protocol.prediction_size`` (the ground truth's size, or the training size for
the release protocol) and :func:`training.protocol.evaluate_prediction` scores it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..model import BackboneFeatures, SpaceClip
from ..model.preprocess import resize_and_normalize
from .distributed import DistContext
from .metrics import BOUNDARY_METRIC_NAMES, METRIC_NAMES, MetricAccumulator
from .protocol import EvalProtocol, evaluate_prediction, prediction_size
from .report import metrics_table, write_report

logger = logging.getLogger(__name__)

STATE_KEYS = METRIC_NAMES + BOUNDARY_METRIC_NAMES


@dataclass
class EvalExample:
    """One evaluated image kept for pictures (TensorBoard): CPU tensors."""

    image: torch.Tensor  # (3, H, W) in [0, 1]
    gt: torch.Tensor  # (1, H, W) metres
    pred: torch.Tensor  # (1, h, w) metres at the prediction size


@dataclass
class EvalResult:
    """Scores of one decoder under one protocol.

    ``per_image`` holds ``{"path": ..., <metrics>}`` for every image of every rank (rank order);
    ``aggregate`` the per-image mean reduced over all ranks.
    """

    protocol: EvalProtocol
    aggregate: dict[str, float]
    per_image: list[dict[str, Any]]
    images_scored: int
    images_skipped: int
    examples: list[EvalExample] = field(default_factory=list)

    @property
    def abs_rel(self) -> float:
        return float(self.aggregate.get("abs_rel", float("nan")))

    def markdown(self) -> str:
        return metrics_table(self.aggregate)


def _collate_list(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Evaluation images may differ in size (KITTI drives): keep samples apart, group them later.
    return batch


def _shape_groups(samples: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Consecutive runs of samples whose image and depth shapes agree (one forward pass each)."""
    groups: list[list[dict[str, Any]]] = []
    for sample in samples:
        key = (tuple(sample["image"].shape), tuple(sample["depth"].shape))
        if groups and (tuple(groups[-1][0]["image"].shape), tuple(groups[-1][0]["depth"].shape)) == key:
            groups[-1].append(sample)
        else:
            groups.append([sample])
    return groups


def _decode(decoder: nn.Module, features: BackboneFeatures, size: tuple[int, int]) -> torch.Tensor:
    return decoder(features.hidden, features.global_features, features.grid, size, with_aux=False).depth


def _slice(features: BackboneFeatures, part: slice) -> BackboneFeatures:
    return BackboneFeatures(
        hidden=[h[part] for h in features.hidden], global_features=features.global_features[part], grid=features.grid
    )


@torch.no_grad()
def predict_depth(
    model: SpaceClip,
    decoders: Mapping[str, nn.Module],
    images: torch.Tensor,
    size: tuple[int, int],
    flip: bool,
) -> dict[str, torch.Tensor]:
    """Depth (B, 1, h, w) of each decoder for [0, 1] images (B, 3, H, W) already on the device.

    With ``flip``, the prediction is the mean of the image's and the mirrored prediction of the
    mirror image (``training.metrics.flip_average``, with the backbone run once for both).
    """
    batch = images.shape[0]
    encoder_input = torch.cat([images, torch.flip(images, dims=(-1,))]) if flip else images
    features = model.forward_features(
        resize_and_normalize(encoder_input, model.input_size, model.mean, model.std)
    )
    out = {}
    for name, decoder in decoders.items():
        if flip:
            plain = _decode(decoder, _slice(features, slice(0, batch)), size)
            mirror = _decode(decoder, _slice(features, slice(batch, 2 * batch)), size)
            out[name] = 0.5 * (plain + torch.flip(mirror, dims=(-1,)))
        else:
            out[name] = _decode(decoder, features, size)
    return out


def evaluate_decoders(
    model: SpaceClip,
    dataset: Dataset,
    protocol: EvalProtocol,
    decoders: Mapping[str, nn.Module] | None = None,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 4,
    num_workers: int = 0,
    context: DistContext | None = None,
    progress: bool = False,
    keep_examples: int = 0,
    limit: int | None = None,
) -> dict[str, EvalResult]:
    """Score each decoder (default: the model's own) on ``dataset`` under ``protocol``.

    ``dataset`` yields ``image`` (3, H, W) in [0, 1], ``depth`` (1, H, W) metres at the ground
    truth's native resolution (0 = invalid) and ``path``. Under ``context`` with several ranks,
    each rank scores a disjoint share of the images (no padding, so no image counts twice) and the
    sums are all-reduced; every rank returns the same result. Decoders are put in eval mode for the
    pass and returned to their previous mode afterwards.
    """
    from tqdm import tqdm

    context = context or DistContext(device=torch.device(device))
    device = torch.device(device)
    decoders = dict(decoders) if decoders is not None else {"model": model.decoder}
    indices = list(range(len(dataset)))  # type: ignore[arg-type]
    if limit is not None:
        indices = indices[:limit]
    shard = Subset(dataset, indices[context.rank :: context.world_size])
    generator = torch.Generator().manual_seed(0)  # worker seeds; keeps the global RNG untouched
    loader = DataLoader(
        shard,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate_list,
        generator=generator,
    )

    was_training = {name: d.training for name, d in decoders.items()}
    for decoder in decoders.values():
        decoder.eval()
    accumulators = {name: MetricAccumulator() for name in decoders}
    per_image: dict[str, list[dict[str, Any]]] = {name: [] for name in decoders}
    examples: dict[str, list[EvalExample]] = {name: [] for name in decoders}
    seen_paths: set[str] = set()
    try:
        for samples in tqdm(loader, desc=f"eval {protocol.name}", disable=not (progress and context.is_main)):
            for group in _shape_groups(samples):
                # A dataset that substitutes a bad file by the next sample would repeat an image.
                group = [s for s in group if s.get("path") not in seen_paths]
                if not group:
                    continue
                seen_paths.update(str(s.get("path")) for s in group)
                images = torch.stack([s["image"] for s in group]).to(device)
                size = prediction_size(tuple(group[0]["depth"].shape), protocol)
                preds = predict_depth(model, decoders, images, size, protocol.flip)
                for name, pred in preds.items():
                    pred_np = pred[:, 0].float().cpu().numpy().astype(np.float64)
                    for sample, pred_map in zip(group, pred_np):
                        gt = sample["depth"][0].numpy()
                        metrics = evaluate_prediction(pred_map, gt, protocol)
                        accumulators[name].add(metrics)
                        per_image[name].append({"path": str(sample.get("path", "")), **metrics})
                        if len(examples[name]) < keep_examples:
                            examples[name].append(
                                EvalExample(sample["image"], sample["depth"], torch.from_numpy(pred_map[None]).float())
                            )
    finally:
        for name, decoder in decoders.items():
            decoder.train(was_training[name])

    results = {}
    for name, accumulator in accumulators.items():
        reduced = _reduce(accumulator, context)
        gathered = context.gather_objects(per_image[name])
        results[name] = EvalResult(
            protocol=protocol,
            aggregate=reduced.mean(),
            per_image=[entry for rank_entries in gathered for entry in rank_entries],
            images_scored=reduced.images,
            images_skipped=reduced.skipped,
            examples=examples[name],
        )
    return results


def evaluate_model(model: SpaceClip, dataset: Dataset, protocol: EvalProtocol, **kwargs: Any) -> EvalResult:
    """:func:`evaluate_decoders` for the model's own decoder."""
    return evaluate_decoders(model, dataset, protocol, None, **kwargs)["model"]


def _reduce(accumulator: MetricAccumulator, context: DistContext) -> MetricAccumulator:
    if not context.distributed:
        return accumulator
    vector = torch.from_numpy(accumulator.state_vector(STATE_KEYS)).to(context.reduce_device)
    context.all_reduce_sum(vector)
    return MetricAccumulator.from_state_vector(vector.cpu().numpy(), STATE_KEYS)


def write_eval_report(
    result: EvalResult, out_dir: str | Path, meta: Mapping[str, Any], stem: str | None = None
) -> tuple[Path, Path]:
    """Per-image and aggregate JSON + Markdown (protocol spelled out) via ``training.report``."""
    meta = {**meta, "images_scored": result.images_scored, "images_skipped": result.images_skipped}
    return write_report(out_dir, result.per_image, result.aggregate, result.protocol, meta, stem=stem)
