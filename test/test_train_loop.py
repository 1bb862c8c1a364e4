"""A short training run on synthetic street scenes: it learns, and what it writes is usable."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_train_helpers import constant_depth, trained_run

from space_clip_ros.inference.runtime.predictor import DepthPredictor
from space_clip_ros.model import load_checkpoint, load_model
from space_clip_ros.training.checkpointing import RESUME_FILE, load_resume_state
from space_clip_ros.training.data_setup import eval_dataset
from space_clip_ros.training.evaluate import evaluate_model, predict_depth
from space_clip_ros.training.protocol import evaluate_prediction
from space_clip_ros.training.run_setup import RANDOM_BACKBONE_FILE

pytestmark = pytest.mark.slow  # every test here reads the shared eight-epoch run (about 40 s on two cores)


@pytest.fixture(scope="module")
def run():
    return trained_run()


def test_training_lowers_the_loss_and_beats_a_constant_depth(run):
    history = run.summary.history
    assert len(history) == run.config.train.epochs == run.summary.epochs_completed
    losses = [epoch["train"]["total"] for epoch in history]
    assert losses[-1] < 0.6 * losses[0], losses
    best = run.summary.best
    # Held-out drives: predicting the training median everywhere scores ~0.4 AbsRel here.
    assert best["abs_rel"] < 0.6 * run.baseline_abs_rel, (best, run.baseline_abs_rel)
    assert run.summary.counters == {"nonfinite_loss": 0, "nonfinite_grad": 0}


def test_best_checkpoint_beats_a_constant_depth_on_the_test_drives(run):
    """Chosen on validation, scored once on drives that neither training nor validation saw."""
    trainer = run.trainer
    model, _ = load_model(run.run_dir / "best")
    test = eval_dataset("kitti", trainer.paths.test_data_path, trainer.paths.test_gt_path, trainer.paths.test_split)
    result = evaluate_model(model.eval(), test, trainer.protocol)
    median = constant_depth(trainer)
    constant = np.mean([evaluate_prediction(np.full(test[i]["depth"].shape[-2:], median), test[i]["depth"][0].numpy(),
                                            trainer.protocol)["abs_rel"] for i in range(len(test))])
    assert result.images_scored == len(test) == run.config.data.synthetic.n_test
    assert result.abs_rel < 0.6 * constant, (result.abs_rel, constant)


def test_run_directory_contents(run):
    for name in ("last.safetensors", "last.json", "best.safetensors", "best.json", RESUME_FILE, "config.yaml",
                 "history.jsonl", "best_validation.json", "best_validation.md", "splits/train.txt",
                 "splits/val.txt"):
        assert (run.run_dir / name).is_file(), name
    assert not list(run.run_dir.glob(".*")), "temporary files left behind"
    events = EventAccumulator(str(run.run_dir / "tensorboard"), size_guidance={"images": 0})  # keep all
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in ("train/loss", "train/loss_silog", "train/loss_ssim", "train/loss_aux_0", "train/lr", "train/grad_norm",
                "train/skipped_steps", "val_raw/abs_rel", "val_ema/abs_rel", "epoch/train_total"):
        assert tag in scalars, tag
    assert events.Tags()["images"] == ["val/input_gt_prediction"]
    assert len(events.Images("val/input_gt_prediction")) == run.config.train.epochs
    lines = (run.run_dir / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(1, 9))


def test_validation_is_held_out_by_scene(run):
    def drives(path):
        return {line.split("/")[1] for line in path.read_text().splitlines()}

    train, val = drives(run.run_dir / "splits/train.txt"), drives(run.run_dir / "splits/val.txt")
    assert train and val and not train & val


def test_checkpoint_record(run):
    state, record = load_checkpoint(run.run_dir / "best")
    assert not any(key.startswith(("backbone", "visual")) for key in state)
    assert record.train_image_size == [48, 160]
    focal = run.trainer.train_focal
    assert record.train_focal == pytest.approx(focal) and 40 < focal < 120  # KITTI's 721 px scaled to 160 px
    assert record.max_depth == 80.0
    assert record.metrics["protocol"] == "custom" and "Protocol 'custom'" in record.metrics["protocol_description"]
    assert record.metrics["abs_rel"] == pytest.approx(run.summary.best["abs_rel"])
    assert record.extra["weights"] in ("raw", "ema") and record.extra["weights"] == run.summary.best["weights"]
    assert set(record.extra["validation"]) == {"raw", "ema"}
    assert record.extra["config"]["optim"]["lr"] == pytest.approx(1e-2)
    # A random backbone is drawn anew in every process: the record names the run's saved copy.
    assert record.model["backbone"]["pretrained"] == str((run.run_dir / RANDOM_BACKBONE_FILE).resolve())


def test_last_checkpoint_holds_the_chosen_weights(run):
    _, record = load_checkpoint(run.run_dir / "last")
    resume = load_resume_state(run.run_dir)
    chosen = resume.ema if record.extra["weights"] == "ema" else resume.decoder
    weights = load_file(str(run.run_dir / "last.safetensors"))
    assert weights.keys() == chosen.keys()
    assert all(torch.equal(weights[k], chosen[k]) for k in weights)
    assert resume.epoch == 8 and resume.global_step == run.summary.global_step


def test_node_predictor_matches_training_model(run):
    """The checkpoint, loaded the way the ROS node loads it, predicts what the training code predicted."""
    predictor = DepthPredictor.from_checkpoint(run.run_dir / "last", device="cpu")
    trainer = run.trainer
    weights = predictor.record.extra["weights"]
    decoder = (trainer.ema.module if weights == "ema" else trainer.model.decoder).eval()
    image = (np.random.default_rng(3).random((48, 160, 3)) * 255).astype(np.uint8)
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    expected = predict_depth(trainer.model, {"w": decoder}, tensor, (48, 160), flip=False)["w"][0, 0].numpy()
    got = predictor.predict(image)
    assert got.shape == (48, 160)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert math.isfinite(float(got.mean())) and got.max() > 0.5  # metres, not a dead head
