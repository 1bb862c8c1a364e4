"""Evaluation reports: one JSON record and one Markdown summary per run, written atomically."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from space_clip_ros.fileio import atomic_write_text
from space_clip_ros.training.metrics import BOUNDARY_PREFIX, METRIC_NAMES
from space_clip_ros.training.protocol import EvalProtocol

# Column titles and number formats of the SPEC's result tables (same order as METRIC_NAMES).
METRIC_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("abs_rel", "AbsRel", ".4f"),
    ("sq_rel", "SqRel", ".4f"),
    ("rmse", "RMSE", ".4f"),
    ("rmse_log", "RMSElog", ".4f"),
    ("log10", "log10", ".4f"),
    ("d1", "d1", ".4f"),
    ("d2", "d2", ".4f"),
    ("d3", "d3", ".4f"),
    ("silog", "SILog", ".2f"),
)
assert tuple(key for key, _, _ in METRIC_COLUMNS) == METRIC_NAMES


def _jsonable(value: Any) -> Any:
    """Plain JSON types; non-finite floats become ``null`` so the file is strict JSON."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def _is_scored(entry: Mapping[str, Any]) -> bool:
    value = entry.get("abs_rel")
    return value is not None and math.isfinite(float(value))


def _counts(per_image: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> tuple[int, int]:
    """(scored, skipped): from ``meta`` when given, else from the per-image entries."""
    scored = sum(1 for entry in per_image if _is_scored(entry))
    return int(meta.get("images_scored", scored)), int(meta.get("images_skipped", len(per_image) - scored))


def _format(value: Any, spec: str) -> str:
    if value is None:
        return "n/a"
    value = float(value)
    return format(value, spec) if math.isfinite(value) else "n/a"


def metrics_table(aggregate: Mapping[str, Any]) -> str:
    """Markdown table of the nine metrics in the SPEC's column order, plus a boundary row if present."""
    header = "| region | " + " | ".join(title for _, title, _ in METRIC_COLUMNS) + " |"
    rule = "|---|" + "---|" * len(METRIC_COLUMNS)
    rows = [header, rule]
    rows.append(
        "| all valid | " + " | ".join(_format(aggregate.get(k), f) for k, _, f in METRIC_COLUMNS) + " |"
    )
    if any(BOUNDARY_PREFIX + key in aggregate for key, _, _ in METRIC_COLUMNS):
        cells = [_format(aggregate.get(BOUNDARY_PREFIX + k), f) for k, _, f in METRIC_COLUMNS]
        rows.append("| boundary | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def write_report(
    out_dir: str | Path,
    per_image: Sequence[Mapping[str, Any]],
    aggregate: Mapping[str, Any],
    protocol: EvalProtocol,
    meta: Mapping[str, Any],
    stem: str | None = None,
) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` into ``out_dir``; return their paths.

    ``stem`` defaults to ``eval_<protocol.name>``. The JSON holds the protocol (fields and
    description), ``meta`` (checkpoint, dataset, ...), counts, the aggregate and the per-image
    metrics; NaN becomes ``null``. Counts come from ``meta['images_scored']`` /
    ``meta['images_skipped']`` when present, else from the per-image entries (an entry is scored
    when its ``abs_rel`` is finite). Both files are written atomically.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or f"eval_{protocol.name}"
    scored, skipped = _counts(per_image, meta)
    description = protocol.describe()

    record = {
        "protocol": {**protocol.to_dict(), "description": description},
        "meta": meta,
        "counts": {"images_scored": scored, "images_skipped": skipped},
        "aggregate": aggregate,
        "per_image": list(per_image),
    }
    json_path = out / f"{stem}.json"
    atomic_write_text(json_path, json.dumps(_jsonable(record), indent=2, allow_nan=False) + "\n", fsync=True)

    lines = [f"# Evaluation: {protocol.name}", ""]
    for key in ("checkpoint", "dataset", "split"):
        if key in meta:
            lines.append(f"- {key}: `{meta[key]}`")
    lines += [f"- images scored: {scored}", f"- images skipped (no valid pixel): {skipped}", ""]
    lines += [metrics_table(aggregate), "", "## Protocol", "", description, ""]
    md_path = out / f"{stem}.md"
    atomic_write_text(md_path, "\n".join(lines), fsync=True)
    return json_path, md_path
