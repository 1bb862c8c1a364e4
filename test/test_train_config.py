"""Training configuration, schedule, EMA and resume-config checks (fast, no training)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from space_clip_ros.training.checkpointing import ResumeError, check_resume_config
from space_clip_ros.training.config import ConfigError, TrainConfig, config_from_dict, load_config
from space_clip_ros.training.ema import DecoderEMA
from space_clip_ros.training.schedule import WarmupCosine

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config" / "train"


@pytest.mark.parametrize("name", ["kitti", "nyu", "nyu_siglip", "synthetic"])
def test_release_configs_load(name):
    config = load_config(CONFIG_DIR / f"{name}.yaml")
    assert isinstance(config, TrainConfig)
    assert config.optim.weight_decay == 0.01 and config.optim.grad_clip_norm == 1.0
    assert config.optim.warmup_fraction == 0.05 and config.optim.min_lr == 1e-6
    assert config.optim.ema_decay == 0.996
    assert config.loss.aux_weights == (0.10, 0.05, 0.0)


def test_release_recipe_numbers():
    kitti = load_config(CONFIG_DIR / "kitti.yaml")
    nyu = load_config(CONFIG_DIR / "nyu.yaml")
    siglip = load_config(CONFIG_DIR / "nyu_siglip.yaml")
    assert (kitti.data.batch_size, nyu.data.batch_size) == (64, 32)
    assert kitti.train.epochs == nyu.train.epochs == 20
    assert kitti.optim.lr == nyu.optim.lr == 1e-4
    assert kitti.data.augment.crop_size == (352, 704) and nyu.data.augment.crop_size is None
    assert kitti.loss.max_depth == 80.0 and nyu.loss.max_depth == 10.0
    assert kitti.train.amp == nyu.train.amp == "off"
    assert siglip.model.backbone.name == "ViT-B-16-SigLIP" and siglip.model.backbone.pretrained == "webli"
    assert nyu.model.backbone.pretrained == "openai"


def test_overrides_are_typed_and_nested():
    config = load_config(
        CONFIG_DIR / "nyu.yaml",
        ["optim.lr=2e-4", "data.batch_size=8", "data.augment.crop_size=[64, 96]", "data.feature_cache=null",
         "model.backbone.vision_overrides.width=64", "train.amp=bf16"],
    )
    assert config.optim.lr == pytest.approx(2e-4) and isinstance(config.optim.lr, float)
    assert config.data.batch_size == 8
    assert config.data.augment.crop_size == (64, 96)
    assert config.model.backbone.vision_overrides == {"width": 64}
    assert config.train.amp == "bf16"


def test_unknown_keys_and_bad_values_are_refused():
    with pytest.raises(ConfigError, match=r"optim\.lrr.*valid keys in optim: .*lr"):
        load_config(None, ["optim.lrr=1e-3"])
    with pytest.raises(ConfigError, match=r"model\.decoder\.chanels"):
        config_from_dict({"model": {"decoder": {"chanels": [1, 2]}}})
    with pytest.raises(ConfigError, match="data.batch_size: expected an integer"):
        load_config(None, ["data.batch_size=many"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["optim.lr"])
    with pytest.raises(ConfigError, match="train.amp must be one of"):
        load_config(None, ["train.amp=fp8"])
    with pytest.raises(ConfigError, match="val.protocol must be one of"):
        load_config(None, ["val.protocol=imagenet"])
    with pytest.raises(ConfigError, match="train.resume_every_steps must be >= 0"):
        load_config(None, ["train.resume_every_steps=-1"])


def test_schedule_warmup_cosine_floor():
    schedule = WarmupCosine.from_fraction(1e-4, 1e-6, total_steps=200, warmup_fraction=0.05)
    assert schedule.warmup_steps == 10
    lrs = [schedule.lr_at(step) for step in range(200)]
    assert lrs[0] == pytest.approx(1e-5) and lrs[9] == pytest.approx(1e-4)
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))  # linear ramp up
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # then monotone decay
    assert lrs[-1] == pytest.approx(1e-6) and min(lrs) >= 1e-6
    midpoint = 10 + (200 - 10 - 1) / 2
    assert schedule.lr_at(int(midpoint)) == pytest.approx(1e-6 + (1e-4 - 1e-6) * 0.5, rel=0.02)
    optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=1.0)
    assert schedule.apply(optimizer, 5) == optimizer.param_groups[0]["lr"] == pytest.approx(6e-5)


def test_ema_averages_parameters_and_batchnorm_buffers():
    module = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    ema = DecoderEMA(module, decay=0.9)
    start = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        module[0].weight.add_(1.0)
        module[1].running_mean.add_(2.0)
        module[1].num_batches_tracked.add_(5)
    ema.update(module)
    state = ema.state_dict()
    torch.testing.assert_close(state["0.weight"], start["0.weight"] + 0.1 * 1.0)
    torch.testing.assert_close(state["1.running_mean"], start["1.running_mean"] + 0.1 * 2.0)
    assert int(state["1.num_batches_tracked"]) == 5  # integer buffers are copied, not averaged
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_resume_config_check_names_differing_keys():
    saved = load_config(None, ["optim.lr=1e-4"]).to_dict()
    with pytest.raises(ResumeError) as info:
        check_resume_config(saved, load_config(None, ["optim.lr=2e-4", "data.batch_size=8"]).to_dict())
    message = str(info.value)
    assert "optim.lr" in message and "data.batch_size" in message and "epochs" not in message
    harmless = check_resume_config(saved, load_config(None, ["train.epochs=30", "log.every_steps=5",
                                                             "train.resume_every_steps=500"]).to_dict())
    assert any("train.epochs" in line for line in harmless) and any("log.every_steps" in line for line in harmless)
    assert any("train.resume_every_steps" in line for line in harmless)  # only when the state is written
    assert math.isclose(load_config(None).optim.lr, 1e-4)
