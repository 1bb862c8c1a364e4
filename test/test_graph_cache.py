"""The graph cache: exported and quantised ONNX graphs kept between starts (runtime.graph_cache).

Real parts: the tiny open_clip model exported and quantised by the real code, real files on disk,
real ONNX Runtime sessions; the only substitution is counting the calls of the export function
(it still runs).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from space_clip_ros.data.formats import write_rgb
from space_clip_ros.inference.benchmarking.synthetic import synthetic_camera_image
from space_clip_ros.inference.runtime import auto_select, graph_cache, onnxruntime_engine
from space_clip_ros.inference.runtime.auto_select import InferencePath, predictor_for, select_predictor
from space_clip_ros.inference.runtime.graph_cache import (
    GRAPH_FOLDER_NAME,
    GraphCache,
    GraphStage,
    graph_cache_folder,
    graph_store,
    model_identity,
)
from space_clip_ros.inference.runtime.onnxruntime_engine import OnnxRuntimeEngine
from space_clip_ros.inference.runtime.options import OnnxRuntimeOptions
from space_clip_ros.model import SpaceClip

pytestmark = pytest.mark.usefixtures("single_torch_thread")
SIZE = (48, 64)  # depth (H, W)
ORT_INT8 = InferencePath("onnxruntime", "fp32", int8=True)


REALISTIC_FRAME = (96, 128, 0)  # conftest's frame: height, width, seed
REALISTIC_SEEDS = (0, 0)  # conftest's realistic_model: torch seed, make_decoder_realistic seed


@pytest.fixture(scope="module")
def model(realistic_model) -> SpaceClip:
    return realistic_model


@pytest.fixture
def export_calls(monkeypatch) -> list[Path]:
    """Paths the real export function wrote (it still runs)."""
    calls: list[Path] = []
    real = onnxruntime_engine.export_onnx

    def counting(model, destination, options):
        calls.append(Path(destination))
        return real(model, destination, options)

    monkeypatch.setattr(onnxruntime_engine, "export_onnx", counting)
    return calls


def write_graph(size: int):
    def build(path: Path) -> None:
        path.write_bytes(b"\0" * size)

    return build


def test_a_graph_is_built_once_and_served_from_the_folder_after(tmp_path):
    cache = GraphCache(tmp_path / "graphs")
    builds = []

    def build(path: Path) -> None:
        builds.append(path)
        path.write_bytes(b"graph")

    first = cache.get_or_build({"stage": "export"}, build)
    second = GraphCache(tmp_path / "graphs").get_or_build({"stage": "export"}, build)  # a later start
    other = cache.get_or_build({"stage": "int8"}, build)
    assert first == second != other and len(builds) == 2
    assert first.read_bytes() == b"graph" and first.parent == tmp_path / "graphs"
    assert not list((tmp_path / "graphs").glob("*.partial"))  # written under a temporary name, renamed


def test_a_failed_build_leaves_no_file_behind(tmp_path):
    cache = GraphCache(tmp_path)

    def broken(path: Path) -> None:
        path.write_bytes(b"half a gra")
        raise RuntimeError("export failed")

    with pytest.raises(RuntimeError, match="export failed"):
        cache.get_or_build({"stage": "export"}, broken)
    assert list(tmp_path.iterdir()) == []
    assert cache.get_or_build({"stage": "export"}, write_graph(3)).stat().st_size == 3  # built again


def test_stages_start_from_the_last_kept_graph(tmp_path):
    made: list[str] = []

    def stage(label: str) -> GraphStage:
        def build(source: Path | None, out: Path) -> None:
            made.append(label)
            out.write_bytes((source.read_bytes() if source else b"") + label.encode())

        return GraphStage(label, {label: True}, build)

    cache = GraphCache(tmp_path)
    stages = [stage("export"), stage("+int8"), stage("+decoder")]
    assert cache.build_stages("model-a", stages).read_bytes() == b"export+int8+decoder"
    assert made == ["export", "+int8", "+decoder"]
    for path in tmp_path.iterdir():  # only the last graph left (e.g. the others evicted)
        if path.read_bytes() != b"export+int8+decoder":
            path.unlink()
    assert cache.build_stages("model-a", stages).read_bytes() == b"export+int8+decoder"
    assert made == ["export", "+int8", "+decoder"]  # nothing made again
    assert cache.build_stages("model-a", stages[:2]).read_bytes() == b"export+int8"  # the missing one is rebuilt
    assert made[3:] == ["export", "+int8"]
    assert cache.build_stages("model-b", stages[:1]).read_bytes() == b"export" and made[-1] == "export"


def test_least_recently_used_graphs_go_beyond_the_size_limit_and_stale_partials_too(tmp_path):
    cache = GraphCache(tmp_path, max_bytes=250)
    old = cache.get_or_build({"n": 1}, write_graph(100))
    used = cache.get_or_build({"n": 2}, write_graph(100))
    os.utime(old, (time.time() - 60, time.time() - 60))
    os.utime(used, (time.time() - 30, time.time() - 30))
    cache.get_or_build({"n": 2}, write_graph(100))  # used again: now the most recent
    stale = tmp_path / "0123.onnx.999.partial"
    stale.write_bytes(b"x")
    os.utime(stale, (time.time() - 2 * graph_cache.STALE_PARTIAL_S,) * 2)
    fresh_partial = tmp_path / "4567.onnx.998.partial"  # another process writing right now
    fresh_partial.write_bytes(b"x")
    newest = cache.get_or_build({"n": 3}, write_graph(100))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([used.name, newest.name, fresh_partial.name])
    # a single graph larger than the limit is still kept (it is the one in use)
    huge = GraphCache(tmp_path, max_bytes=10).get_or_build({"n": 4}, write_graph(50))
    assert huge.is_file()


def test_an_unwritable_folder_falls_back_to_a_temporary_one(tmp_path, caplog):
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger=graph_cache.__name__), graph_store(blocked / "graphs") as store:
        path = store.get_or_build({"stage": "export"}, write_graph(4))
        assert path.is_file() and blocked not in path.parents
    assert "cannot be written" in caplog.text and not path.exists()  # the temporary folder is gone


def test_the_model_identity_follows_every_weight(model):
    first = model_identity(model)
    assert first == model_identity(model) and first.startswith("sha256:")
    changed = SpaceClip(model.config).eval()
    changed.load_state_dict(model.state_dict())
    assert model_identity(changed) == first
    with torch.no_grad():
        next(changed.backbone.parameters()).view(-1)[0] += 1.0  # one encoder weight
    assert model_identity(changed) != first


@pytest.mark.slow  # exports and quantises the tiny model's graph twice
def test_a_second_engine_loads_the_kept_graphs_and_runs_the_same(tmp_path, model, export_calls, caplog):
    folder = tmp_path / "graphs"
    options = OnnxRuntimeOptions(quantize_int8=True, intra_op_threads=1, graph_cache=str(folder))
    pixels = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, *model.input_size), dtype=np.float32))
    first = OnnxRuntimeEngine(model, torch.device("cpu"), options)
    assert len(export_calls) == 1 and len(list(folder.glob("*.onnx"))) == 2  # the export and its int8 graph
    with caplog.at_level(logging.DEBUG, logger=graph_cache.__name__):
        second = OnnxRuntimeEngine(model, torch.device("cpu"), options)
    assert len(export_calls) == 1 and "cached graph" in caplog.text  # nothing exported again
    assert torch.equal(first.run(pixels, SIZE, False).depth, second.run(pixels, SIZE, False).depth)
    # the float path reuses the kept export; other weights make their own graphs
    OnnxRuntimeEngine(model, torch.device("cpu"), OnnxRuntimeOptions(intra_op_threads=1, graph_cache=str(folder)))
    assert len(export_calls) == 1
    retrained = SpaceClip(model.config).eval()
    retrained.load_state_dict(model.state_dict())
    with torch.no_grad():
        retrained.decoder.head.net[1].bias += 0.5
    OnnxRuntimeEngine(retrained, torch.device("cpu"), options)
    assert len(export_calls) == 2 and len(list(folder.glob("*.onnx"))) == 4


@pytest.mark.slow  # a real selection between two ONNX Runtime paths on the tiny model
def test_auto_builds_one_graph_for_a_path_with_and_without_spinning(tmp_path, model, export_calls, monkeypatch):
    monkeypatch.setattr(auto_select, "has_int8_dot_product", lambda: True)
    cache = auto_select.AutoCache(tmp_path / "auto.json")
    candidates = [ORT_INT8, InferencePath("onnxruntime", "fp32", int8=True, spinning=True)]
    predictor = select_predictor(model, None, "cpu", output_size=SIZE, threads=1, cache=cache, candidates=candidates)
    assert set(predictor.auto_choice.candidates) == {path.name for path in candidates}
    assert all(outcome.endswith(" ms") for outcome in predictor.auto_choice.candidates.values())
    assert len(export_calls) == 1  # both candidates run the one kept graph
    folder = tmp_path / GRAPH_FOLDER_NAME
    assert predictor.options.onnxruntime.graph_cache == str(folder) and len(list(folder.glob("*.onnx"))) == 2
    # camera frames: the int8 decoder is calibrated on the kept int8-encoder graph, nothing exported again
    for seed in range(4):
        write_rgb(tmp_path / "camera" / f"frame_{seed}.png", synthetic_camera_image(96, 128, seed=30 + seed))
    select_predictor(model, None, "cpu", output_size=SIZE, threads=1, cache=cache,
                     candidates=[InferencePath("onnxruntime", "fp32", int8=True, int8_decoder=True)],
                     calibration_images=str(tmp_path / "camera"))
    assert len(export_calls) == 1 and len(list(folder.glob("*.onnx"))) == 3


@pytest.mark.slow  # exports the tiny model twice
def test_a_forced_onnxruntime_path_keeps_graphs_beside_the_auto_cache_file_and_none_without_a_cache(
        tmp_path, model, export_calls):
    predictor = predictor_for(model, device="cpu", backend="onnxruntime", cache_path=tmp_path / "auto.json",
                              threads=1)
    folder = graph_cache_folder(tmp_path / "auto.json")
    assert folder == tmp_path / GRAPH_FOLDER_NAME and predictor.options.onnxruntime.graph_cache == str(folder)
    assert list(folder.glob("*.onnx")) and len(export_calls) == 1
    predictor_for(model, device="cpu", backend="onnxruntime", cache_path=tmp_path / "auto.json", threads=1)
    assert len(export_calls) == 1  # the kept graph
    uncached = predictor_for(model, device="cpu", backend="onnxruntime", cache_path=None, threads=1)
    assert uncached.options.onnxruntime.graph_cache is None and len(export_calls) == 2
