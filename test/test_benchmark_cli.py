"""space-clip-benchmark smoke run on the tiny backbone: the table prints and the JSON has every section.

No assertion on speed here (timings on a shared machine are the benchmark's business).
"""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from space_clip_ros.cli.benchmark import main, parse_batch_sizes, parse_size, parse_sizes

STATS_KEYS = {"median_ms", "p95_ms", "mean_ms", "min_ms", "max_ms", "repeats"}


def test_size_and_batch_parsing():
    assert parse_sizes("640x480,1280x720") == ((480, 640), (720, 1280))
    assert parse_batch_sizes("1,4,16") == (1, 4, 16)
    for bad in ("640*480", "x480", "0x10"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_sizes(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_batch_sizes("1,0")


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """The benchmark sets torch's thread count (--threads); give the next tests their setting back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow  # every benchmark section
def test_tiny_smoke_run_writes_json(tmp_path, capsys):
    path = tmp_path / "bench" / "result.json"
    code = main([
        "--tiny", "--device", "cpu", "--backend", "torch", "--batch-sizes", "1,2", "--repeats", "2",
        "--warmup", "1", "--sizes", "64x48", "--threads", "1", "--compare", "--json", str(path),
    ])
    printed = capsys.readouterr().out
    assert code == 0
    assert "model only" in printed and "node per-frame path" in printed and "compare at batch 1" in printed
    assert "faster than the baseline" in printed

    report = json.loads(path.read_text())
    assert {"machine", "software", "settings", "model_latency", "frame_latency", "memory", "compare"} <= set(report)
    assert report["machine"]["physical_cores"] >= 1 and report["machine"]["cpu_model"]
    assert "torch" in report["software"] and "onnxruntime" in report["software"]
    assert report["settings"]["batch_sizes"] == [1, 2] and report["settings"]["sizes"] == ["64x48"]

    assert [row["batch"] for row in report["model_latency"]] == [1, 2]
    for row in report["model_latency"]:
        for part in ("encoder", "decoder", "total"):
            assert set(row[part]) == STATS_KEYS
        assert row["images_per_s"] > 0

    frame = report["frame_latency"][0]
    assert frame["size"] == "64x48" and frame["cloud_points"] == 64 * 48
    assert set(frame["stages"]) == {"image_to_array", "inference", "depth_msg", "pointcloud", "serialize"}
    assert set(frame["total"]) == STATS_KEYS

    assert set(report["around_model"]) == {"preprocess", "final_resize"}
    assert "rss_mb" in report["memory"]["batch_1"] and "peak_rss_mb" in report["memory"]["frame_path"]
    assert all("rss_mb" in row["memory"] for row in report["model_latency"])
    compare = report["compare"]
    assert compare["speedup_median"] > 0
    for name in ("baseline", "fast"):
        for part in ("encoder", "decoder", "total"):
            assert set(compare[f"{name}_{part}"]) == STATS_KEYS
    assert set(compare["depth_agreement"]) >= {"median_relative_error", "max_abs_error_m"}


def test_bad_arguments_give_a_clear_error(capsys):
    assert main(["--tiny", "--device", "cpu", "--repeats", "0"]) == 2
    assert "--repeats must be >= 1" in capsys.readouterr().err


@pytest.mark.slow  # measures backend auto's candidates (two ONNX exports)
def test_backend_auto_and_output_size_are_reported(tmp_path, capsys):
    path = tmp_path / "result.json"
    cache = tmp_path / "auto.json"
    code = main([
        "--tiny", "--device", "cpu", "--output-size", "80x40", "--batch-sizes", "1", "--repeats", "1",
        "--warmup", "0", "--sizes", "64x48", "--threads", "1", "--compare", "--auto-cache", str(cache),
        "--json", str(path),
    ])
    printed = capsys.readouterr().out
    assert code == 0 and "backend auto chose: " in printed and "model only (depth 80x40)" in printed
    report = json.loads(path.read_text())
    assert report["model_output_size"] == [40, 80] and report["settings"]["output_size"] == [40, 80]
    choice = report["auto_choice"]
    assert choice["path"] in choice["candidates"] and choice["measured_now"] and choice["cache_file"] == str(cache)
    assert choice["output_size"] == [40, 80] and cache.exists()
    assert report["compare"]["cpu_flags"] == report["machine"]["cpu_flags"]
    assert report["compare"]["within_tolerance"] in (True, False)
    assert report["compare"]["tolerance"] == {"median_relative_error": 0.03, "max_abs_error_m": 0.5}


def test_output_size_parsing():
    assert parse_size("704x352") == (352, 704)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size("704x352,640x480")
