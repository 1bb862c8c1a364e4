"""space-clip-demo: its parts (pictures, recording, summary, processes, checkpoint cache) and the
command itself in --quick mode.

The end-to-end test runs the real command as a user would (camera simulator + depth node as
processes, the in-process recorder) with a tiny checkpoint made here by ``make_tiny_checkpoint``
(tiny backbone, decoder not trained but scaled to give depths of a few metres), so it needs no
training time; training itself is covered by the checkpoint-cache tests and the trainer's own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest
from ros_helpers import make_tiny_checkpoint, module_domain_id, node_environment, wait_until

from space_clip_ros.data.ply import read_ply
from space_clip_ros.demo import pictures
from space_clip_ros.demo.checkpoint import DemoTraining, _same_training, ensure_demo_checkpoint
from space_clip_ros.demo.package_files import SYNTHETIC_TRAIN_CONFIG, package_file
from space_clip_ros.demo.processes import ProcessGroup
from space_clip_ros.demo.processes import node_environment as demo_environment
from space_clip_ros.demo.recording import Recording
from space_clip_ros.demo.summary import DemoSummary, latency_percentiles_ms, write_summary

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]

DEMO = Path(sys.executable).with_name("space-clip-demo")


# ---- pictures -------------------------------------------------------------------------------------
def test_side_by_side_has_camera_depth_truth_and_scale():
    rgb = np.zeros((60, 80, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # red camera picture
    depth = np.tile(np.linspace(0.5, 4.5, 80, dtype=np.float32), (60, 1))
    depth[:5] = np.nan  # no depth: black
    truth = np.full((60, 80), 2.0, dtype=np.float32)
    picture = pictures.side_by_side(rgb, depth, 0.0, 5.0, ground_truth=truth, caption="test")
    title, legend, caption = 24, 78, 20
    assert picture.shape == (60 + title + caption, 3 * 80 + legend, 3)
    camera = picture[title:title + 60, :80]
    assert np.all(camera[..., 2] == 200) and np.all(camera[..., 0] == 0)  # BGR: red stays red
    predicted = picture[title:title + 60, 80:160]
    assert np.all(predicted[:5] == 0)  # invalid depth is black
    near, far = predicted[30, 0].astype(int), predicted[30, -1].astype(int)
    assert np.abs(near - far).sum() > 100  # near and far get different colours
    scale = picture[title:title + 60, 240:]
    assert scale.std() > 10  # a colour bar with labels, not an empty strip


def test_nice_depth_range_is_round_and_covers_the_depths():
    depths = [np.array([[0.3, 2.7, np.nan]], dtype=np.float32), np.array([[3.9, 0.0]], dtype=np.float32)]
    low, high = pictures.nice_depth_range(depths, percentile=100.0)
    assert (low, high) == (0.0, 4.0)
    assert pictures.nice_depth_range([np.array([[5.2]], dtype=np.float32)], percentile=100.0) == (0.0, 6.0)
    assert pictures.nice_depth_range([np.array([[41.0]], dtype=np.float32)], percentile=100.0) == (0.0, 50.0)
    assert pictures.nice_depth_range([np.full((2, 2), np.nan, dtype=np.float32)]) == (0.0, 10.0)


# ---- recording and summary --------------------------------------------------------------------------
def test_recording_pairs_depth_with_its_image_and_times_it():
    recording = Recording()
    for index in range(5):
        stamp = (100 + index) * 1_000_000_000
        recording.add_input(stamp, np.full((2, 2, 3), index, dtype=np.uint8))
        recording.add_ground_truth(stamp, np.full((2, 2), 3.0, dtype=np.float32))
    depth = np.full((2, 2), 2.0, dtype=np.float32)
    recording.add_depth(103 * 1_000_000_000, received_at=103.25, depth=depth)
    recording.add_depth(104 * 1_000_000_000, received_at=104.5, depth=depth)
    recording.add_depth(999 * 1_000_000_000, received_at=999.1, depth=depth)  # its image was never seen
    first, second, orphan = recording.frames
    assert first.rgb[0, 0, 0] == 3 and second.rgb[0, 0, 0] == 4 and orphan.rgb is None
    assert first.ground_truth is not None and orphan.ground_truth is None
    assert first.latency_s == pytest.approx(0.25) and second.latency_s == pytest.approx(0.5)
    assert recording.inputs_while_recording == 2  # the window starts at the first depth image's image
    p50, p95 = latency_percentiles_ms(recording.latencies_s)
    assert p50 == pytest.approx(250.0) and p50 <= p95  # latencies 0.25, 0.5 and 0.1 s


def test_summary_is_written_as_json_and_markdown(tmp_path):
    summary = DemoSummary(
        output_dir=str(tmp_path), seconds_recorded=3.0, scene="indoor", camera="camera simulator",
        frames_in=12, frames_out=9, frames_without_depth=3, node_frames_received=12, node_frames_processed=9,
        node_frames_dropped=3, output_rate_hz=3.0, latency_p50_ms=120.0, latency_p95_ms=180.0,
        node_inference_p50_ms=80.0, device="cpu (fp32)", model="SPACE-CLIP ViT-B-16",
        backbone_weights="random", decoder_weights="trained", checkpoint="ckpt", checkpoint_note="synthetic only",
        depth_range_m=(0.0, 5.0), accuracy_vs_exact_depth={"abs_rel": 0.2, "d1": 0.7, "frames": 4.0},
        files={"picture": "side_by_side_0.png"},
    )
    json_path, md_path = write_summary(summary, tmp_path)
    data = json.loads(json_path.read_text())
    assert data["frames_out"] == 9 and data["latency_p95_ms"] == 180.0 and data["device"] == "cpu (fp32)"
    text = md_path.read_text()
    assert "| frames out (depth images) | 9 |" in text
    assert "120 ms / 180 ms" in text and "AbsRel 0.200" in text and "`side_by_side_0.png`" in text


# ---- processes ----------------------------------------------------------------------------------------
def _stubborn(ignore: tuple[str, ...]) -> list[str]:
    # Each signal's handling is set explicitly: a shell's background job inherits SIGINT ignored, and
    # the "polite" process must still stop on it.
    defaults = {"SIGINT": "signal.default_int_handler", "SIGTERM": "signal.SIG_DFL"}
    handlers = "".join(f"signal.signal(signal.{name}, {'signal.SIG_IGN' if name in ignore else action});"
                       for name, action in defaults.items())
    return [sys.executable, "-c", f"import signal, time; {handlers} print('ready', flush=True); time.sleep(120)"]


def _wait_ready(process) -> None:
    wait_until(lambda: "ready" in process.log(), 20, f"{process.name} to print 'ready'", process.log)


@pytest.mark.slow  # waits for processes to stop
def test_process_group_stops_everything_even_on_error(tmp_path):
    env = demo_environment()
    with pytest.raises(RuntimeError, match="boom"), ProcessGroup() as group:
        polite = group.start("polite", _stubborn(()), tmp_path / "polite.log", env)
        deaf = group.start("deaf", _stubborn(("SIGINT",)), tmp_path / "deaf.log", env)
        stone = group.start("stone", _stubborn(("SIGINT", "SIGTERM")), tmp_path / "stone.log", env)
        for process in group.processes:
            _wait_ready(process)
        for process in group.processes:  # short timeouts for the test
            process.stop = lambda p=process, stop=process.stop: stop(sigint_timeout=1.0, sigterm_timeout=1.0)
        raise RuntimeError("boom")
    assert polite.returncode == -signal.SIGINT or polite.returncode == 1  # KeyboardInterrupt in Python
    assert deaf.returncode == -signal.SIGTERM
    assert stone.returncode == -signal.SIGKILL
    for process in (polite, deaf, stone):
        assert not psutil.pid_exists(process.pid) or psutil.Process(process.pid).status() == psutil.STATUS_ZOMBIE


# ---- checkpoint cache -------------------------------------------------------------------------------------
@pytest.mark.parametrize("training", [DemoTraining(), DemoTraining("street", quick=True),
                                      DemoTraining(pretrained="/weights/ViT-B-16.safetensors")])
def test_demo_training_overrides_make_valid_configs(tmp_path, training):
    from space_clip_ros.training.config import load_config

    config = load_config(package_file(SYNTHETIC_TRAIN_CONFIG), training.overrides(tmp_path))
    assert config.run_dir() == tmp_path / "runs" / training.key
    assert Path(config.data.synthetic.root).is_relative_to(tmp_path)
    assert config.data.dataset == ("kitti" if training.scene == "street" else "nyu")
    if training.pretrained:
        assert config.model.backbone.pretrained == training.pretrained and not config.model.backbone.vision_overrides
    if training.quick:
        assert config.train.epochs == 1 and config.train.max_steps_per_epoch is not None


def test_cached_checkpoint_is_reused_unless_the_training_changed(tmp_path, monkeypatch):
    from space_clip_ros.training import trainer
    from space_clip_ros.training.config import dump_yaml, load_config

    training = DemoTraining(quick=True, device="cuda")
    trained_on_cpu = DemoTraining(quick=True, device="cpu")
    config = load_config(package_file(SYNTHETIC_TRAIN_CONFIG), trained_on_cpu.overrides(tmp_path))
    run_dir = config.run_dir()
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(dump_yaml(config))
    for name in ("best.json", "best.safetensors"):
        (run_dir / name).write_text("{}")

    def no_training(*args, **kwargs):
        raise AssertionError("the cached checkpoint should have been reused")

    monkeypatch.setattr(trainer, "Trainer", no_training)
    assert ensure_demo_checkpoint(training, tmp_path) == run_dir / "best"  # another device: same checkpoint
    other = load_config(package_file(SYNTHETIC_TRAIN_CONFIG), trained_on_cpu.overrides(tmp_path) + ["optim.lr=0.5"])
    assert not _same_training(run_dir / "config.yaml", dump_yaml(other))


# ---- the command ----------------------------------------------------------------------------------------
#: Environment variable naming one run of the demo command; its nodes inherit it.
RUN_MARKER = "SPACE_CLIP_TEST_DEMO_RUN"


def _leftover_nodes(run: str) -> list[psutil.Process]:
    """Nodes started by the demo run ``run`` still alive (the demo's nodes must all be gone). Found by
    the run's marker in their environment, not by the ROS domain: another suite on this machine may
    run demo nodes on the same domain at the same time."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            cmdline = " ".join(process.info["cmdline"] or [])
            if ("camera_simulator" in cmdline or "depth_node" in cmdline) and \
                    process.environ().get(RUN_MARKER) == run:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def run_demo_command(args: list[str], domain_id: int,
                     timeout: float = 200.0) -> tuple[subprocess.CompletedProcess, str]:
    """The demo command's result, and the marker its nodes carry (``_leftover_nodes``)."""
    run = uuid.uuid4().hex
    env = node_environment(domain_id) | {RUN_MARKER: run}
    return subprocess.run([str(DEMO), *args], env=env, capture_output=True, text=True, timeout=timeout), run


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    checkpoint, _weights = make_tiny_checkpoint(tmp_path_factory.mktemp("demo_model"))
    return checkpoint


@pytest.mark.slow  # two node processes over DDS
def test_demo_quick_runs_end_to_end_and_writes_its_files(tmp_path, tiny_checkpoint):
    domain = module_domain_id(__name__)
    out = tmp_path / "demo"
    started = time.monotonic()
    result, run = run_demo_command(["--quick", "--checkpoint", str(tiny_checkpoint), "--device", "cpu",
                               "--out", str(out), "--seconds", "3"], domain)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert f"Everything is in {out.resolve()}/" in result.stdout
    assert not _leftover_nodes(run)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_out"] >= 1 and summary["frames_in"] >= 1
    assert 0.0 < summary["latency_p50_ms"] <= summary["latency_p95_ms"] < 60_000
    assert summary["device"].startswith("cpu")
    assert summary["decoder_weights"].startswith("trained")
    assert summary["backbone_weights"].startswith("pretrained")  # the fixture's weights file
    assert summary["camera"].endswith("160x120 at 4 Hz")
    assert "frames out (depth images)" in (out / "summary.md").read_text()

    picture = cv2.imread(str(out / "side_by_side_0.png"))
    assert picture is not None and picture.shape[1] == 3 * 160 + 78  # camera | depth | exact depth | scale
    if summary["point_clouds"]:
        points, colours = read_ply(out / "point_cloud.ply")
        assert len(points) > 0 and colours is not None  # XYZRGB cloud from the node
        assert np.all(points[:, 2] > 0)  # optical frame: z forward
    assert (out / "logs" / "depth_node.log").read_text()
    assert "published" in (out / "logs" / "camera_simulator.log").read_text()
    print(f"demo --quick took {elapsed:.1f} s: {summary['frames_in']} frames in, {summary['frames_out']} out")


@pytest.mark.slow  # node processes over DDS
def test_demo_reports_a_node_that_crashes(tmp_path, tiny_checkpoint):
    broken = tmp_path / "broken"
    for suffix in (".json", ".safetensors"):
        data = tiny_checkpoint.with_name(tiny_checkpoint.name + suffix).read_bytes()
        broken.with_name(broken.name + suffix).write_bytes(data if suffix == ".json" else data[:100])
    domain = module_domain_id(__name__)
    result, run = run_demo_command(["--quick", "--checkpoint", str(broken), "--device", "cpu",
                               "--out", str(tmp_path / "demo")], domain)
    assert result.returncode == 1
    assert "FAILED: depth_node exited" in result.stderr
    assert "cannot load the model" in result.stderr  # the node's own last log lines are shown
    assert not _leftover_nodes(run)


def test_demo_refuses_bad_arguments(tmp_path):
    result = subprocess.run([str(DEMO), "--width", "320", "--out", str(tmp_path)], capture_output=True, text=True,
                            env=dict(os.environ), timeout=60)
    assert result.returncode == 2 and "--width and --height together" in result.stderr
