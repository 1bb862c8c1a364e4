"""Evaluation: the shared evaluate function, and space-clip-eval end to end on a trained checkpoint."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from test_train_helpers import trained_run

from space_clip_ros.cli.evaluate import main as eval_main
from space_clip_ros.model import SpaceClipOutput
from space_clip_ros.training.config import dump_yaml
from space_clip_ros.training.evaluate import evaluate_decoders
from space_clip_ros.training.protocol import get_protocol


class ConstantDecoder(torch.nn.Module):
    """Predicts ``value`` everywhere, plus a left-to-right ramp so that flipping matters."""

    def __init__(self, value: float, ramp: float = 0.0) -> None:
        super().__init__()
        self.value, self.ramp = value, ramp
        self.sizes = []

    def forward(self, hidden, global_features, grid, size, with_aux=False):
        self.sizes.append(tuple(size))
        ramp = torch.linspace(0.0, self.ramp, size[1]).expand(global_features.shape[0], 1, *size)
        return SpaceClipOutput(depth=torch.full_like(ramp, self.value) + ramp, global_features=global_features)


class TinySet(torch.utils.data.Dataset):
    def __init__(self):
        generator = torch.Generator().manual_seed(0)
        self.items = []
        for i, shape in enumerate([(30, 40), (30, 40), (20, 24)]):  # two sizes: grouped batches
            depth = 1.0 + 4.0 * torch.rand(1, *shape, generator=generator)
            depth[:, 0, :] = 0.0  # invalid row
            self.items.append({"image": torch.rand(3, *shape, generator=generator), "depth": depth, "path": f"{i}"})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def test_evaluate_scores_each_decoder_per_image(tiny_model_config):
    from space_clip_ros.model import SpaceClip

    model = SpaceClip(tiny_model_config)
    dataset = TinySet()
    protocol = get_protocol("custom", max_depth_eval=10.0, flip=True)
    flat, ramp = ConstantDecoder(3.0), ConstantDecoder(2.0, ramp=2.0)
    results = evaluate_decoders(model, dataset, protocol, {"flat": flat, "ramp": ramp}, batch_size=3)
    expected = []
    for item in dataset.items:
        gt = item["depth"][0].numpy().astype(np.float64)
        valid = gt > 1e-3
        expected.append(np.mean(np.abs(gt[valid] - 3.0) / gt[valid]))
    assert results["flat"].abs_rel == pytest.approx(np.mean(expected), rel=1e-6)  # per-image mean
    assert results["flat"].images_scored == 3 and len(results["flat"].per_image) == 3
    # Flip averaging turns the ramp 2..4 into a flat 3: same score as the flat decoder.
    assert results["ramp"].abs_rel == pytest.approx(results["flat"].abs_rel, rel=1e-5)
    assert flat.sizes == [(30, 40), (30, 40), (20, 24), (20, 24)]  # native GT size, image and mirror passes
    no_flip = evaluate_decoders(model, dataset, get_protocol("custom", max_depth_eval=10.0), {"ramp": ramp})
    assert no_flip["ramp"].abs_rel > results["ramp"].abs_rel

    release = get_protocol("custom", max_depth_eval=10.0, resolution="release", train_size=(12, 16))
    flat.sizes.clear()
    evaluate_decoders(model, dataset, release, {"flat": flat})
    assert set(flat.sizes) == {(12, 16)}  # the release protocol predicts at the training size


@pytest.fixture(scope="module")
def run():
    return trained_run()


@pytest.fixture(scope="module")
def config_file(run, tmp_path_factory):
    path = tmp_path_factory.mktemp("evalcfg") / "street.yaml"
    path.write_text(dump_yaml(run.config))
    return path


@pytest.mark.slow  # trains the shared eight-epoch run (minutes on two cores)
def test_eval_cli_writes_the_report_and_prints_the_table(run, config_file, tmp_path, capsys):
    code = eval_main(["--checkpoint", str(run.run_dir / "best"), "--config", str(config_file), "--protocol", "custom",
                      "--max-depth-eval", "80", "--out", str(tmp_path), "--num-workers", "0"])
    assert code == 0
    out = capsys.readouterr().out
    assert "| AbsRel |" in out and "Protocol 'custom'" in out and "flip averaging" in out
    report = json.loads((tmp_path / "eval_custom.json").read_text())
    n_test = run.config.data.synthetic.n_test
    assert report["counts"]["images_scored"] == n_test and len(report["per_image"]) == n_test
    assert report["protocol"]["resolution"] == "native" and report["protocol"]["max_depth_eval"] == 80.0
    assert report["meta"]["checkpoint"].endswith("best.safetensors")
    assert math.isfinite(report["aggregate"]["abs_rel"]) and 0 < report["aggregate"]["d1"] <= 1
    per_image_mean = np.mean([entry["abs_rel"] for entry in report["per_image"]])
    assert report["aggregate"]["abs_rel"] == pytest.approx(per_image_mean)
    markdown = (tmp_path / "eval_custom.md").read_text()
    assert "## Protocol" in markdown and "| all valid |" in markdown


@pytest.mark.slow  # the shared trained run
def test_eval_cli_release_resolution_uses_the_checkpoints_training_size(run, config_file, tmp_path):
    code = eval_main(["--checkpoint", str(run.run_dir / "best"), "--config", str(config_file), "--protocol",
                      "custom", "--resolution", "release", "--median-scaling", "--out", str(tmp_path),
                      "--num-workers", "0", "--limit", "2"])
    assert code == 0
    report = json.loads((tmp_path / "eval_custom.json").read_text())
    assert report["protocol"]["train_size"] == [48, 160] and report["protocol"]["median_scaling"] is True
    assert report["counts"]["images_scored"] == 2


@pytest.mark.slow  # its config file is the shared trained run's
def test_eval_cli_errors(tmp_path, config_file, capsys):
    assert eval_main(["--checkpoint", str(tmp_path / "nothing"), "--config", str(config_file),
                      "--protocol", "custom"]) == 2
    err = capsys.readouterr().err
    assert "nothing" in err and "space-clip-train" in err
    with pytest.raises(SystemExit):
        eval_main(["--checkpoint", "x", "--protocol", "no_such_protocol"])
