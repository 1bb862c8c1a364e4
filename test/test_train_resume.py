"""Exact resume, refused resumes, skipped non-finite steps, and the train CLI's argument handling."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from test_train_helpers import scratch_dir, street_config

from space_clip_ros.cli.train import main as train_main
from space_clip_ros.training.checkpointing import load_resume_state
from space_clip_ros.training.config import dump_yaml
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


@pytest.fixture(scope="module")
def stopped_and_resumed(config_file, tmp_path_factory):
    """Run A straight through (API); run B through the CLI: stopped after epoch 1, then resumed."""
    root = tmp_path_factory.mktemp("resume")
    config_a = street_config(root, [*SHORT, "run.name=a"])
    Trainer(config_a, root / "a").fit()
    first = train_main(["--config", str(config_file), "run.name=b", "--out", str(root / "b"),
                        "--stop-after-epochs", "1"])
    assert first == 0
    after_one = load_resume_state(root / "b")
    second = train_main(["--resume", str(root / "b")])
    assert second == 0
    return root, after_one


def test_resume_after_epoch_one_equals_an_uninterrupted_run(stopped_and_resumed):
    root, after_one = stopped_and_resumed
    assert after_one.epoch == 1 and after_one.global_step == 3
    a, b = load_resume_state(root / "a"), load_resume_state(root / "b")
    assert (a.epoch, a.global_step) == (b.epoch, b.global_step) == (2, 6)
    _assert_same_tensors(a.decoder, b.decoder)  # bit for bit
    _assert_same_tensors(a.ema, b.ema)
    last_a, last_b = (load_file(str(root / name / "last.safetensors")) for name in ("a", "b"))
    _assert_same_tensors(last_a, last_b)
    assert a.optimizer["state"].keys() == b.optimizer["state"].keys()
    for key in a.optimizer["state"]:
        _assert_same_tensors(a.optimizer["state"][key], b.optimizer["state"][key])
    assert [h["train"] for h in a.history] == [h["train"] for h in b.history]
    assert [h["val"] for h in a.history] == [h["val"] for h in b.history]
    # The first epoch really changed the weights (the comparison is not between two untouched decoders).
    assert any(not torch.equal(after_one.decoder[k], b.decoder[k]) for k in b.decoder)
    history = [json.loads(line) for line in (root / "b" / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]


def test_resume_with_a_different_config_is_refused(stopped_and_resumed, capsys):
    root, _ = stopped_and_resumed
    code = train_main(["--resume", str(root / "b"), "optim.lr=1e-3", "data.batch_size=8", "train.epochs=3"])
    assert code == 2
    err = capsys.readouterr().err
    assert "refusing to resume" in err and "optim.lr" in err and "data.batch_size" in err
    assert "train.epochs" not in err  # a harmless change is not named as a reason


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
