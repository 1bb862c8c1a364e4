"""Two-process DDP training on the CPU (gloo), started the way torchrun starts it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_train_helpers import scratch_dir, street_config

from space_clip_ros.model import load_model
from space_clip_ros.training.checkpointing import RESUME_FILE, load_resume_state
from space_clip_ros.training.config import dump_yaml
from space_clip_ros.training.data_setup import ensure_synthetic_dataset, eval_dataset, resolve_data_paths
from space_clip_ros.training.evaluate import evaluate_model
from space_clip_ros.training.protocol import get_protocol
from space_clip_ros.training.run_setup import RANDOM_BACKBONE_FILE

pytestmark = pytest.mark.slow  # two torchrun processes

# space-clip-train, except that rank 0's second batch carries a NaN pixel: its loss is NaN while
# rank 1's is finite, and both ranks must skip that step together (or DDP would hang).
LAUNCHER = """
import os, sys
from space_clip_ros.training import trainer
from space_clip_ros.cli.train import main

real_step = trainer.Trainer.train_step
calls = []

def train_step(self, batch):
    calls.append(1)
    if len(calls) == 2 and os.environ["RANK"] == "0":
        batch = dict(batch, image=batch["image"].clone())
        batch["image"][0, :, 0, 0] = float("nan")
    return real_step(self, batch)

trainer.Trainer.train_step = train_step
sys.exit(main())
"""


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    config = street_config(scratch_dir() / "ddp_runs", [
        "run.name=ddp", "train.epochs=2", "train.max_steps_per_epoch=2", "data.batch_size=4",
        "log.tensorboard=true", "optim.lr=2e-3",
        "train.resume_every_steps=1",  # mid-epoch resume states too: their collectives must not hang
    ])
    ensure_synthetic_dataset(config.data)  # not inside the timed child processes
    config_file = root / "ddp.yaml"
    config_file.write_text(dump_yaml(config))
    run_dir = root / "run"
    launcher = root / "train_with_one_nan_batch.py"
    launcher.write_text(LAUNCHER)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(launcher), "--config", str(config_file), "--out", str(run_dir)]
    process = subprocess.run(command, env=env, capture_output=True, text=True, timeout=420)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-6000:]
    return config, run_dir, process


def test_two_processes_train_and_write_one_checkpoint_set(ddp_run):
    config, run_dir, process = ddp_run
    files = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file())
    checkpoints = [f for f in files if f.endswith((".safetensors", ".json", ".pt")) and "/" not in f]
    assert checkpoints == sorted(["best.json", "best.safetensors", "best_validation.json", "last.json",
                                  "last.safetensors", RESUME_FILE, RANDOM_BACKBONE_FILE])
    assert len([f for f in files if "tfevents" in f]) == 1  # rank 0 only
    assert not [f for f in files if f.split("/")[-1].startswith(".")]  # no temporary files left
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]  # written once per epoch, not once per rank
    assert history[-1]["global_step"] == 4 and history[-1]["train"]["steps"] == 2
    # The poisoned step was skipped on both ranks and counted once.
    assert history[0]["train"]["skipped"] == 1 and history[0]["train"]["steps"] == 1
    assert history[-1]["counters"]["nonfinite_loss"] == 1
    state = load_resume_state(run_dir)
    assert state.world_size == 2 and len(state.rng) == 2
    assert state.step_in_epoch == 0 and not state.epoch_sums  # the last one written is the end of epoch 2
    assert process.stdout.count("run directory") == 1  # one summary, from rank 0


def test_distributed_validation_equals_single_process(ddp_run):
    """Metrics reduced over two ranks (sums and counts) equal one process scoring every image."""
    config, run_dir, _ = ddp_run
    model, record = load_model(run_dir / "last")
    paths = resolve_data_paths(config.data)
    dataset = eval_dataset("kitti", paths.data_path, paths.gt_path, run_dir / "splits" / "val.txt")
    result = evaluate_model(model.eval(), dataset, get_protocol("custom"), batch_size=16)
    reduced = record.extra["validation"][record.extra["weights"]]
    for key in ("abs_rel", "rmse", "d1", "silog"):
        assert reduced[key] == pytest.approx(result.aggregate[key], rel=1e-6), key  # float32 kernels vs batch size
