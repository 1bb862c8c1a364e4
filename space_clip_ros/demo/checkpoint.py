"""A decoder checkpoint for the demo: trained briefly on synthetic scenes, cached, reused.

Training is ``config/train/synthetic.yaml`` (a narrow random-weight ViT-B/16 and a small decoder on
rendered NYU-style rooms) through the trainer's API, with overrides for where things go and for the
scene kind. A checkpoint is reused when its cached run was made from the same configuration; a
changed configuration (say, a newer synthetic.yaml) trains a new one. Such a checkpoint knows only
the synthetic scenes, and its backbone is random unless ``pretrained`` names real CLIP weights.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from space_clip_ros.demo.package_files import SYNTHETIC_TRAIN_CONFIG, package_file

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/space_clip_ros/demo`` (``~/.cache/space_clip_ros/demo`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "space_clip_ros" / "demo"


@dataclass(frozen=True)
class DemoTraining:
    """Which demo checkpoint: scene kind, quick (a few steps, for tests), backbone weights, device."""

    scene: str = "indoor"
    quick: bool = False
    pretrained: str | None = None
    device: str = "auto"

    @property
    def key(self) -> str:
        """Folder name of this checkpoint in the cache."""
        parts = [self.scene] + (["quick"] if self.quick else [])
        if self.pretrained:
            parts.append("pretrained-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(self.pretrained).name))
        return "-".join(parts)

    def overrides(self, cache_dir: Path) -> list[str]:
        """``key=value`` overrides of config/train/synthetic.yaml for this checkpoint."""
        data_root = cache_dir / "data" / (self.scene + ("-quick" if self.quick else ""))
        overrides = [
            f"run.name={self.key}",
            f"run.out_dir={cache_dir / 'runs'}",
            f"data.synthetic.root={data_root}",
            f"train.device={self.device}",
            "log.tensorboard=false",
            "data.num_workers=0",
            "val.num_workers=0",
        ]
        # The scene decides the dataset layout and depth range, whatever synthetic.yaml renders.
        if self.scene == "street":
            # KITTI-style rendered streets (sky without depth, up to 80 m), in a KITTI-like aspect.
            overrides += [
                "data.dataset=kitti", "data.kb_crop=false", "data.synthetic.height=64", "data.synthetic.width=192",
                "loss.max_depth=80.0", "val.protocol_overrides={max_depth_eval: 80.0}",
            ]
        else:
            # NYU-style rendered rooms (up to 10 m), in the NYU camera's 4:3 aspect.
            overrides += [
                "data.dataset=nyu", "data.synthetic.height=96", "data.synthetic.width=128",
                "loss.max_depth=10.0", "val.protocol_overrides={max_depth_eval: 10.0}",
            ]
        if self.quick:
            overrides += [
                "data.synthetic.n_train=32", "data.synthetic.n_test=8", "data.synthetic.n_scenes=4",
                "train.epochs=1", "train.max_steps_per_epoch=4",
            ]
        if self.pretrained:
            # Real CLIP weights need the real tower: no narrowing overrides.
            overrides += [f"model.backbone.pretrained={self.pretrained}", "model.backbone.vision_overrides={}"]
        return overrides


def _checkpoint_of(run_dir: Path) -> Path | None:
    for name in ("best", "last"):
        if (run_dir / f"{name}.json").is_file() and (run_dir / f"{name}.safetensors").is_file():
            return run_dir / name
    return None


def _same_training(saved_config: Path, wanted_yaml: str) -> bool:
    """Whether a cached run's config.yaml describes the wanted training (the device may differ:
    a checkpoint trained on a GPU serves a CPU as well)."""
    try:
        saved = yaml.safe_load(saved_config.read_text())
    except (OSError, yaml.YAMLError):
        return False
    wanted = yaml.safe_load(wanted_yaml)
    for config in (saved, wanted):
        if isinstance(config, dict):
            config.get("train", {}).pop("device", None)
    return saved == wanted


def cached_demo_checkpoint(training: DemoTraining, cache_dir: Path | None = None) -> Path | None:
    """The cached checkpoint for ``training`` when one made from the same configuration exists, else None
    (nothing is trained)."""
    from space_clip_ros.training.config import dump_yaml, load_config

    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    config = load_config(package_file(SYNTHETIC_TRAIN_CONFIG), training.overrides(cache_dir))
    run_dir = config.run_dir()
    cached = _checkpoint_of(run_dir)
    if cached is not None and _same_training(run_dir / "config.yaml", dump_yaml(config)):
        return cached
    return None


def ensure_demo_checkpoint(training: DemoTraining, cache_dir: Path | None = None) -> Path:
    """The cached checkpoint for ``training``, trained first when there is none (progress shown)."""
    from space_clip_ros.training.config import load_config
    from space_clip_ros.training.trainer import Trainer

    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cached = cached_demo_checkpoint(training, cache_dir)
    if cached is not None:
        logger.info("reusing the demo checkpoint %s", cached)
        return cached
    config = load_config(package_file(SYNTHETIC_TRAIN_CONFIG), training.overrides(cache_dir))
    run_dir = config.run_dir()
    if run_dir.exists():
        logger.info("the cached run in %s is incomplete or from another configuration: training again", run_dir)
        shutil.rmtree(run_dir)
    logger.info("training a demo decoder on synthetic %s scenes (%s) into %s", training.scene,
                "a few steps, --quick" if training.quick else "a few minutes on a CPU", run_dir)
    Trainer(config, run_dir).fit()
    checkpoint = _checkpoint_of(run_dir)
    if checkpoint is None:
        raise RuntimeError(f"training finished but wrote no checkpoint in {run_dir}")
    return checkpoint
