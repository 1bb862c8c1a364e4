"""A per-pixel confidence from the decoder's own auxiliary heads, at almost no cost.

The decoder carries auxiliary depth heads on its first semantic stages (SPEC section 3), trained
with their own SILog losses (weights 0.10 and 0.05 for heads 0 and 1; head 2 has weight 0 and so
is never trained). They see the same features as the final head, at 1/8 and 1/4 of its
resolution, and predict the same depth. Where the final depth and the auxiliary maps agree the
prediction is settled; where they part (at discontinuities, on thin or unusual structures,
wherever the model guesses) it is not. The confidence of a pixel is

    disagreement = sum_i w_i | ln d - ln a_i | / sum_i w_i
    confidence   = exp(-CONFIDENCE_SHARPNESS * disagreement)           in (0, 1]

with d the final depth, a_i head i's map (both clamped below at ``DEPTH_FLOOR`` so an empty ReLU
output cannot make a log of 0) and w_i head i's auxiliary loss weight in training. A log ratio,
because depth errors are relative: 10 % apart reads the same at 1 m and at 30 m. With
``CONFIDENCE_SHARPNESS`` = 10, maps 10 % apart give about 0.37, 3 % apart about 0.74, 1 % apart
0.90; the order of the pixels (what sparsification and a threshold use) does not depend on the
sharpness at all.

Which heads, and their weights w_i: those with a non-zero auxiliary loss weight in the
checkpoint's training configuration (``record.extra["config"]["loss"]["aux_weights"]``; the
release's weights when the record does not say: heads 0 and 1, 0.10 and 0.05). An untrained head
would only add noise, and the head trained harder is the better reference: weighted so, the
demo decoders' sparsification (docs/ros_node.md) is as good as or better than with the plain
mean or either head alone.

The cost is the trained heads themselves (a 3x3 and a 1x1 convolution at stage resolution each,
about 2 % of the decoder's work for the reference decoder), their resize to the output size and
the arithmetic above: measured in docs/ros_node.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .checkpoint import CheckpointRecord

#: k in confidence = exp(-k * disagreement).
CONFIDENCE_SHARPNESS = 10.0
#: Depths (metres) are clamped below at this before their log is taken.
DEPTH_FLOOR = 1e-3
#: The release's auxiliary loss weights (SPEC section 4), assumed when a record does not say.
RELEASE_AUX_WEIGHTS: tuple[float, ...] = (0.10, 0.05, 0.00)


def _recorded_aux_weights(record: CheckpointRecord | None) -> Sequence[Any] | None:
    if record is None:
        return None
    config = record.extra.get("config") if isinstance(record.extra, dict) else None
    loss = config.get("loss") if isinstance(config, dict) else None
    weights = loss.get("aux_weights") if isinstance(loss, dict) else None
    return weights if isinstance(weights, (list, tuple)) else None


def confidence_heads(record: CheckpointRecord | None, num_heads: int) -> tuple[tuple[int, float], ...]:
    """(index, weight) of each auxiliary head that was trained (non-zero loss weight), among
    ``num_heads``: what the engines take to compute the confidence map.

    Without a record (an untrained decoder) or a record that does not list the weights, the
    release's weights decide. Empty when the decoder has no trained auxiliary head: then there is
    no confidence (``DepthPredictor.confidence_problem``).
    """
    weights = _recorded_aux_weights(record)
    if weights is None:
        weights = RELEASE_AUX_WEIGHTS
    return tuple((i, abs(float(weights[i]))) for i in range(min(num_heads, len(weights))) if float(weights[i]) != 0.0)


def aux_agreement_confidence(
    depth: torch.Tensor, aux: Sequence[torch.Tensor], weights: Sequence[float] | None = None
) -> torch.Tensor:
    """The confidence map of the module notes: (B, 1, H, W) or (B, H, W) depth and auxiliary maps of
    the same shape in (``weights``: one per map, default equal), float32 of that shape in (0, 1] out."""
    if not aux:
        raise ValueError("a confidence map needs at least one auxiliary map")
    weights = [1.0] * len(aux) if weights is None else [float(w) for w in weights]
    if len(weights) != len(aux) or not sum(weights) > 0.0:
        raise ValueError(f"need one positive weight per auxiliary map, got {weights} for {len(aux)} maps")
    log_depth = depth.float().clamp_min(DEPTH_FLOOR).log()
    disagreement = torch.zeros_like(log_depth)
    for aux_map, weight in zip(aux, weights):
        disagreement += weight * (log_depth - aux_map.float().clamp_min(DEPTH_FLOOR).log()).abs()
    return disagreement.mul_(-CONFIDENCE_SHARPNESS / sum(weights)).exp_()
