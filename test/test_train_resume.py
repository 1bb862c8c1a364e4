"""Exact resume (after an epoch and mid-epoch), safe resume files, refused resumes, skipped
non-finite steps, and the train CLI's argument handling."""

from __future__ import annotations

import json
import os
import shlex

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_train_helpers import scratch_dir, street_config

from space_clip_ros.cli.train import main as train_main
from space_clip_ros.training.checkpointing import (
    RESUME_FILE,
    RESUME_FORMAT,
    RESUME_VERSION,
    ResumeError,
    ResumeState,
    capture_rng_state,
    load_resume_state,
    restore_rng_state,
    save_resume_state,
)
from space_clip_ros.training.config import dump_yaml
from space_clip_ros.training.train_loader import EpochSampler
from space_clip_ros.training.trainer import Trainer

# Short epochs with every source of randomness switched on: dropout, rotation, flip, colour jitter,
# shuffling; two epochs of three steps each.
SHORT = [
    "train.epochs=2",
    "train.max_steps_per_epoch=3",
    "train.deterministic=true",
    "data.batch_size=4",
    "optim.lr=2e-3",
    "log.tensorboard=false",
]


def _assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    """The shared street config as a YAML file, as a user would pass it to the CLI."""
    path = tmp_path_factory.mktemp("cfg") / "street.yaml"
    path.write_text(dump_yaml(street_config(scratch_dir() / "resume_runs", SHORT)))
    return path


def _assert_same_state(a: ResumeState, b: ResumeState) -> None:
    """Weights, EMA, AdamW moments and per-epoch results of two runs are bit for bit the same."""
    assert (a.epoch, a.global_step, a.step_in_epoch) == (b.epoch, b.global_step, b.step_in_epoch)
    _assert_same_tensors(a.decoder, b.decoder)  # bit for bit
    _assert_same_tensors(a.ema, b.ema)
    assert a.optimizer["state"].keys() == b.optimizer["state"].keys()
    for key in a.optimizer["state"]:
        _assert_same_tensors(a.optimizer["state"][key], b.optimizer["state"][key])
    assert [h["train"] for h in a.history] == [h["train"] for h in b.history]
    assert [h["val"] for h in a.history] == [h["val"] for h in b.history]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Run A: straight through, through the API (the reference of every resume test)."""
    run_dir = tmp_path_factory.mktemp("straight") / "a"
    Trainer(street_config(run_dir.parent, [*SHORT, "run.name=a"]), run_dir).fit()
    return run_dir


@pytest.fixture(scope="module")
def stopped_and_resumed(config_file, tmp_path_factory):
    """Run B through the CLI: stopped after epoch 1, then resumed."""
    root = tmp_path_factory.mktemp("resume")
    first = train_main(["--config", str(config_file), "run.name=b", "--out", str(root / "b"),
                        "--stop-after-epochs", "1"])
    assert first == 0
    after_one = load_resume_state(root / "b")
    second = train_main(["--resume", str(root / "b")])
    assert second == 0
    return root, after_one


class SimulatedKill(BaseException):
    """Stands for SIGKILL: a BaseException, so nothing in the trainer handles it and no code after it
    writes anything; the run's files are whatever was on disk when it struck."""


def kill_during_call(monkeypatch: pytest.MonkeyPatch, call: int) -> None:
    """Make this session's ``call``-th training step do its work, then die before the loop records it."""
    real_step = Trainer.train_step
    calls = []

    def train_step(self, batch):
        calls.append(1)
        result = real_step(self, batch)
        if len(calls) == call:
            raise SimulatedKill(f"killed during step {call} of this session")
        return result

    monkeypatch.setattr(Trainer, "train_step", train_step)


@pytest.fixture(scope="module")
def killed_mid_epoch(config_file, tmp_path_factory):
    """Run C through the CLI, resume state every 2 steps (2 epochs of 3 steps):

    session 1 dies in step 3 (the resume file holds step 2, mid-epoch 1); session 2 resumes from
    that file, finishes epoch 1, writes step 4 (mid-epoch 2) and dies in step 5; session 3 resumes
    from step 4 and finishes. Each resumed session reads the state from disk (``--resume``).
    """
    run_dir = tmp_path_factory.mktemp("killed") / "c"
    sessions = [["--config", str(config_file), "run.name=c", "train.resume_every_steps=2", "--out", str(run_dir)],
                ["--resume", str(run_dir)]]
    on_disk = []
    for args in sessions:
        with pytest.MonkeyPatch.context() as patch:
            kill_during_call(patch, 3)
            with pytest.raises(SimulatedKill):
                train_main(args)
        on_disk.append(load_resume_state(run_dir))
    assert train_main(["--resume", str(run_dir)]) == 0
    return run_dir, on_disk


@pytest.mark.slow
def test_resume_after_epoch_one_equals_an_uninterrupted_run(uninterrupted, stopped_and_resumed):
    root, after_one = stopped_and_resumed
    assert after_one.epoch == 1 and after_one.global_step == 3
    a, b = load_resume_state(uninterrupted), load_resume_state(root / "b")
    assert (a.epoch, a.global_step) == (b.epoch, b.global_step) == (2, 6)
    _assert_same_state(a, b)
    last_a, last_b = (load_file(str(path / "last.safetensors")) for path in (uninterrupted, root / "b"))
    _assert_same_tensors(last_a, last_b)
    # The first epoch really changed the weights (the comparison is not between two untouched decoders).
    assert any(not torch.equal(after_one.decoder[k], b.decoder[k]) for k in b.decoder)
    history = [json.loads(line) for line in (root / "b" / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]


@pytest.mark.slow
def test_killed_mid_epoch_and_resumed_equals_an_uninterrupted_run(uninterrupted, killed_mid_epoch):
    run_dir, (first_kill, second_kill) = killed_mid_epoch
    # What each kill left: the state after step 2 (epoch 1 of 2, 2 of its 3 steps) and after step 4
    # (epoch 2, 1 step); steps 3 and 5 were done in memory and lost.
    assert (first_kill.epoch, first_kill.step_in_epoch, first_kill.global_step) == (0, 2, 2)
    assert (second_kill.epoch, second_kill.step_in_epoch, second_kill.global_step) == (1, 1, 4)
    assert first_kill.epoch_sums[0]["steps"] == 2 and not first_kill.history
    a, c = load_resume_state(uninterrupted), load_resume_state(run_dir)
    assert (c.epoch, c.global_step, c.step_in_epoch) == (2, 6, 0)
    _assert_same_state(a, c)  # weights, EMA, AdamW state and both epochs' losses and validation
    last_a, last_c = (load_file(str(path / "last.safetensors")) for path in (uninterrupted, run_dir))
    _assert_same_tensors(last_a, last_c)
    # The random streams end where the uninterrupted run's end: dropout (torch), numpy, python and
    # the DataLoader generator (the next epoch's worker seeds).
    rng_a, rng_c = a.rng[0], c.rng[0]
    for key in ("torch", "data_generator"):
        assert torch.equal(rng_a[key], rng_c[key]), key
    assert torch.equal(rng_a["numpy"]["key"], rng_c["numpy"]["key"]) and rng_a["numpy"]["pos"] == rng_c["numpy"]["pos"]
    assert torch.equal(rng_a["python"]["words"], rng_c["python"]["words"])
    # Mid-epoch states are not a copy of an epoch-end one: the weights moved between them.
    assert any(not torch.equal(first_kill.decoder[k], second_kill.decoder[k]) for k in c.decoder)
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]  # each epoch written once, however often it was killed


def test_epoch_sampler_starts_part_way_through_the_same_order():
    full = EpochSampler(range(20), num_replicas=2, rank=1, shuffle=True, seed=3)
    full.start_epoch(4)
    order = list(full)
    part = EpochSampler(range(20), num_replicas=2, rank=1, shuffle=True, seed=3)
    part.start_epoch(4, skip=6)
    assert list(part) == order[6:] and len(part) == len(order) - 6
    part.start_epoch(5)
    assert len(list(part)) == len(order) and list(part) != order  # a new epoch starts from its beginning


# ---- the resume file is weights-only ---------------------------------------------------------------
class RunsCode:
    """Pickles as a call of ``os.system``: loading it with a plain unpickler runs a shell command."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def test_a_resume_file_that_would_run_code_is_refused(tmp_path, capsys):
    marker = tmp_path / "code_ran"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    payload = {"format": RESUME_FORMAT, "version": RESUME_VERSION, "config": RunsCode(marker), "epoch": 0}
    torch.save(payload, run_dir / RESUME_FILE)
    # The file is a working exploit for a loader that unpickles anything...
    torch.load(run_dir / RESUME_FILE, weights_only=False)
    assert marker.exists()
    marker.unlink()
    # ...and the resume loader refuses it without running it.
    with pytest.raises(ResumeError, match="refusing to load resume state") as info:
        load_resume_state(run_dir)
    assert "arbitrary code" in str(info.value)
    assert not marker.exists()
    assert train_main(["--resume", str(run_dir)]) == 2
    assert "refusing to load resume state" in capsys.readouterr().err
    assert not marker.exists()


def test_resume_files_hold_only_tensors_and_plain_values(tmp_path):
    state = ResumeState(config={"run": {"seed": 1}}, epoch=1, global_step=3, decoder={"w": torch.ones(2)}, ema=None,
                        optimizer={"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"betas": (0.9, 0.99)}]},
                        rng=[capture_rng_state()], sampler_seed=1, best={"abs_rel": np.float32(0.25)})
    save_resume_state(tmp_path / RESUME_FILE, state)
    raw = torch.load(tmp_path / RESUME_FILE, weights_only=True)  # what load_resume_state does
    assert type(raw["best"]["abs_rel"]) is float  # numpy scalars are written as python numbers
    assert isinstance(raw["rng"][0]["numpy"]["key"], torch.Tensor)
    loaded = load_resume_state(tmp_path)
    assert loaded.optimizer["param_groups"][0]["betas"] == (0.9, 0.99)
    # Something that cannot be written weights-only fails when writing, not days later when resuming.
    state.history = [{"val": np.zeros(3)}]
    with pytest.raises(TypeError, match="numpy.ndarray"):
        save_resume_state(tmp_path / "other" / RESUME_FILE, state)
    assert not (tmp_path / "other" / RESUME_FILE).exists()


def test_rng_state_round_trips_through_its_plain_form():
    import random

    random.gauss(0, 1)  # python and numpy keep the second normal of a pair: the state includes it
    np.random.standard_normal()
    state = capture_rng_state()
    assert state["python"]["gauss_next"] is not None and state["numpy"]["has_gauss"] == 1

    def draw():
        return random.gauss(0, 1), random.random(), np.random.standard_normal(), np.random.rand(), torch.rand(3)

    drawn = draw()
    restore_rng_state(state)
    again = draw()
    assert drawn[:4] == again[:4] and torch.equal(drawn[4], again[4])


@pytest.mark.slow
def test_resume_with_a_different_config_is_refused(stopped_and_resumed, capsys):
    root, _ = stopped_and_resumed
    code = train_main(["--resume", str(root / "b"), "optim.lr=1e-3", "data.batch_size=8", "train.epochs=3"])
    assert code == 2
    err = capsys.readouterr().err
    assert "refusing to resume" in err and "optim.lr" in err and "data.batch_size" in err
    assert "train.epochs" not in err  # a harmless change is not named as a reason


@pytest.mark.slow
def test_fresh_run_into_an_existing_run_directory_is_refused(stopped_and_resumed, config_file, capsys):
    root, _ = stopped_and_resumed
    assert train_main(["--config", str(config_file), "--out", str(root / "b")]) == 2
    assert "--resume" in capsys.readouterr().err


def test_cli_refuses_unknown_keys_and_explains(config_file, capsys):
    assert train_main(["--config", str(config_file), "optim.lrr=1e-3"]) == 2
    err = capsys.readouterr().err
    assert "optim.lrr" in err and "valid keys in optim" in err
    assert train_main([]) == 2
    assert "--config is required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        train_main(["--help"])
    assert info.value.code == 0
    assert "--resume" in capsys.readouterr().out


@pytest.mark.slow  # renders the street data and trains an epoch
def test_nonfinite_loss_skips_the_step_and_is_counted(tmp_path):
    config = street_config(tmp_path, [*SHORT, "train.epochs=1", "train.deterministic=false"])
    trainer = Trainer(config, tmp_path / "nan")
    batch = next(iter(trainer.train_loader))
    before = {k: v.clone() for k, v in trainer.model.decoder.state_dict().items()}
    poisoned = dict(batch, image=batch["image"].clone())
    poisoned["image"][0, :, 0, 0] = float("nan")  # one corrupt pixel poisons the whole batch's loss
    result = trainer.train_step(poisoned)
    assert result.skipped == "nonfinite_loss"
    _assert_same_tensors(before, trainer.model.decoder.state_dict())
    assert all(p.grad is None for p in trainer.params)
    assert not trainer.optimizer.state  # AdamW never stepped

    result = trainer.train_step(batch)
    assert result.skipped is None and result.grad_norm > 0
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.decoder.state_dict().items())

    # Through the loop: the counter reaches the run summary and the epoch's history.
    calls = {"n": 0}
    real_loss = trainer.loss_fn

    def nan_on_second_call(pred, aux, gt):
        calls["n"] += 1
        total, parts = real_loss(pred, aux, gt)
        return (total * float("nan"), parts) if calls["n"] == 2 else (total, parts)

    trainer.loss_fn = nan_on_second_call
    summary = trainer.fit()
    assert summary.counters["nonfinite_loss"] == 1
    assert summary.history[0]["train"]["skipped"] == 1 and summary.history[0]["train"]["steps"] == 2
