"""How far a fast path's depth may lie from the fp32 model's: the one definition of the tolerance.

docs/benchmarks.md ("Tolerances") cites these numbers; the ``auto`` selection refuses a path
outside them, ``space-clip-benchmark --compare`` prints the agreement and the tests check it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: Pixels whose reference depth is at most this (metres) are left out of the relative error
#: (a relative error of a depth near zero says nothing).
MIN_COMPARED_DEPTH_M = 0.1


@dataclass(frozen=True)
class DepthTolerance:
    """Largest median relative error and largest absolute error (metres) of a reduced-precision path."""

    median_relative: float = 0.03
    max_abs_m: float = 0.5

    def problem(self, agreement: dict) -> str | None:
        """Why an agreement of :func:`depth_agreement` is outside this tolerance, or None."""
        median, worst = agreement["median_relative_error"], agreement["max_abs_error_m"]
        if not median <= self.median_relative:  # NaN fails too
            return f"median relative depth error {median:.2%} > {self.median_relative:.0%}"
        if not worst <= self.max_abs_m:
            return f"max abs depth error {worst:.3f} m > {self.max_abs_m} m"
        return None


#: Reduced-precision paths (int8 weights, bf16/fp16): what ``auto`` accepts.
DEPTH_TOLERANCE = DepthTolerance()
#: Exact re-writes (SDPA attention, folded batch norm, channels-last, ONNX Runtime fp32).
EXACT_TOLERANCE = DepthTolerance(median_relative=1e-5, max_abs_m=1e-3)


def depth_agreement(fast: torch.Tensor, reference: torch.Tensor, min_depth: float = MIN_COMPARED_DEPTH_M) -> dict:
    """Median and 99th-percentile relative error (pixels with reference depth > ``min_depth``) and
    max absolute error (metres, every pixel) of ``fast`` against ``reference``."""
    fast, reference = fast.float().cpu(), reference.float().cpu()
    valid = reference > min_depth
    relative = ((fast - reference).abs()[valid] / reference[valid]).double()
    compared = int(valid.sum())
    return {
        "median_relative_error": float(relative.median()) if compared else 0.0,
        "p99_relative_error": float(torch.quantile(relative, 0.99)) if compared else 0.0,
        "max_abs_error_m": float((fast - reference).abs().max()) if fast.numel() else 0.0,
        "reference_median_depth_m": float(reference[valid].median()) if compared else 0.0,
        "pixels_compared": compared,
    }
