"""The demo's summary: one dataclass, written as summary.json (for tools) and summary.md (for people)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from space_clip_ros.demo.recording import Recording
from space_clip_ros.ros import diagnostics as diag


@dataclass
class DemoSummary:
    """What a demo run did and measured. Latencies run from the image's capture stamp to the depth
    image's arrival at the recorder (camera -> DDS -> depth node -> DDS -> recorder)."""

    output_dir: str
    seconds_recorded: float
    scene: str
    camera: str  # e.g. "synthetic indoor scene, 640x480 at 10 Hz"
    frames_in: int  # camera images the recorder received while recording (from the first depth image's on)
    frames_out: int  # depth images the recorder received
    frames_without_depth: int  # frames_in - frames_out: superseded while the node was busy, or in flight
    node_frames_received: int | None  # the node's own counters, from its last diagnostics
    node_frames_processed: int | None
    node_frames_dropped: int | None
    output_rate_hz: float
    latency_p50_ms: float
    latency_p95_ms: float
    node_inference_p50_ms: float | None
    device: str
    model: str
    backbone_weights: str
    decoder_weights: str
    checkpoint: str
    checkpoint_note: str
    depth_range_m: tuple[float, float]
    accuracy_vs_exact_depth: dict[str, float] = field(default_factory=dict)  # abs_rel, d1... when known
    point_clouds: int = 0
    files: dict[str, str] = field(default_factory=dict)  # what -> path relative to output_dir

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False, default=_jsonable) + "\n"

    def to_markdown(self) -> str:
        lines = [
            "# SPACE-CLIP demo run",
            "",
            f"Camera: {self.camera}. Recorded {self.seconds_recorded:.1f} s (from the capture of the first "
            "frame that got depth to the camera's stop).",
            "",
            "| | |",
            "|---|---|",
            f"| frames in (camera images while recording) | {self.frames_in} |",
            f"| frames out (depth images) | {self.frames_out} |",
            f"| frames without depth | {self.frames_without_depth}"
            f"{self._node_counts()} |",
            f"| depth rate | {self.output_rate_hz:.2f} Hz |",
            f"| latency capture -> depth, p50 / p95 | {self.latency_p50_ms:.0f} ms / {self.latency_p95_ms:.0f} ms |",
            f"| inference p50 (node) | {_ms(self.node_inference_p50_ms)} |",
            f"| point clouds | {self.point_clouds} |",
            f"| device | {self.device} |",
            f"| model | {self.model} |",
            f"| backbone weights | {self.backbone_weights} |",
            f"| decoder weights | {self.decoder_weights} |",
            f"| colour scale | {self.depth_range_m[0]:g} to {self.depth_range_m[1]:g} m |",
        ]
        if self.accuracy_vs_exact_depth:
            acc = self.accuracy_vs_exact_depth
            lines.append(f"| vs the scene's exact depth | AbsRel {acc.get('abs_rel', math.nan):.3f}, "
                         f"d1 {acc.get('d1', math.nan):.3f} ({int(acc.get('frames', 0))} frames) |")
        lines += ["", f"**About the model:** {self.checkpoint_note}", "", "## Files", ""]
        lines += [f"- `{path}`: {what}" for what, path in self.files.items()]
        return "\n".join(lines) + "\n"

    def _node_counts(self) -> str:
        if self.node_frames_received is None:
            return ""
        return (f" (node: {self.node_frames_received} received, {self.node_frames_processed} processed, "
                f"{self.node_frames_dropped} superseded by a newer frame)")


def _ms(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.0f} ms"


def _jsonable(value: object) -> object:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _diag_number(values: dict[str, str], key: str) -> float | None:
    try:
        return float(values[key])
    except (KeyError, ValueError):
        return None


def _diag_int(values: dict[str, str], key: str) -> int | None:
    number = _diag_number(values, key)
    return None if number is None else int(number)


def latency_percentiles_ms(latencies_s: list[float]) -> tuple[float, float]:
    if not latencies_s:
        return math.nan, math.nan
    p50, p95 = np.percentile(np.asarray(latencies_s) * 1000.0, [50, 95])
    return float(p50), float(p95)


def accuracy_vs_exact_depth(recording: Recording, min_depth: float, max_depth: float) -> dict[str, float]:
    """Mean AbsRel / RMSE / d1 of the recorded frames that have the scene's exact depth."""
    from space_clip_ros.training.metrics import MetricAccumulator, compute_depth_metrics

    accumulator = MetricAccumulator()
    for frame in recording.frames:
        if frame.ground_truth is None or frame.ground_truth.shape != frame.depth.shape:
            continue
        truth = np.nan_to_num(frame.ground_truth, nan=0.0)
        # Pixels without a prediction are left out rather than scored as a miss.
        mask = np.isfinite(frame.depth)
        accumulator.add(compute_depth_metrics(np.nan_to_num(frame.depth, nan=min_depth), truth, min_depth,
                                              max_depth, mask=mask))
    if accumulator.images == 0:
        return {}
    mean = accumulator.mean()
    return {"abs_rel": mean["abs_rel"], "rmse": mean["rmse"], "d1": mean["d1"], "frames": float(accumulator.images)}


def node_facts(recording: Recording) -> dict[str, object]:
    """Counters and facts the depth node reported in its last diagnostics."""
    values = recording.diagnostics
    return {
        "node_frames_received": _diag_int(values, diag.KEY_RECEIVED),
        "node_frames_processed": _diag_int(values, diag.KEY_PROCESSED),
        "node_frames_dropped": _diag_int(values, diag.KEY_DROPPED),
        "node_inference_p50_ms": _diag_number(values, diag.KEY_INFERENCE_P50),
        "device": values.get(diag.KEY_DEVICE, "unknown (no diagnostics received)"),
        "model": values.get(diag.KEY_MODEL, "unknown"),
        "backbone_weights": values.get(diag.KEY_BACKBONE_WEIGHTS, "unknown"),
        "decoder_weights": values.get(diag.KEY_DECODER_WEIGHTS, "unknown"),
    }


def write_summary(summary: DemoSummary, output_dir: Path) -> tuple[Path, Path]:
    json_path, md_path = output_dir / "summary.json", output_dir / "summary.md"
    json_path.write_text(summary.to_json())
    md_path.write_text(summary.to_markdown())
    return json_path, md_path
