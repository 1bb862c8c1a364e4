"""Frozen CLIP vision towers, read layer by layer (SPEC section 2).

An adapter wraps an open_clip vision tower and returns, for one forward pass, the token maps of
every block (``hidden[0]`` is the input of the first block, ``hidden[k]`` the output of block k,
patch tokens only) and the global vector (before the projection to the joint embedding space).
Two tower families are supported: open_clip's own ``VisionTransformer`` (OpenAI-style CLIP) and
timm trunks wrapped by open_clip's ``TimmModel`` (SigLIP).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from open_clip.model import _build_vision_tower  # builds the vision tower alone, no text tower
from torch import nn

from .config import CLIP_MEAN, CLIP_STD, BackboneConfig

logger = logging.getLogger(__name__)


@dataclass
class BackboneFeatures:
    """One encoder pass.

    Attributes:
        hidden: ``L + 1`` tensors of shape (B, N, width): patch tokens of the block inputs/outputs.
        global_features: (B, width) pooled vector before the joint-space projection.
        grid: (rows, cols) of the patch grid, so that ``N == rows * cols``.
    """

    hidden: list[torch.Tensor]
    global_features: torch.Tensor
    grid: tuple[int, int]


class FrozenClipBackbone(nn.Module):
    """Base class: a frozen vision tower that never trains and never receives gradients."""

    def __init__(self, visual: nn.Module, config: BackboneConfig, mean, std) -> None:
        super().__init__()
        self.visual = visual
        self.config = config
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        for param in self.visual.parameters():
            param.requires_grad_(False)
        self.visual.eval()

    # The tower stays in eval mode whatever the parent model does (dropout/patch-dropout off).
    def train(self, mode: bool = True) -> FrozenClipBackbone:  # noqa: ARG002 - signature of nn.Module
        super().train(False)
        return self

    # ---- facts callers need -------------------------------------------------------------------
    @property
    def input_size(self) -> tuple[int, int]:
        raise NotImplementedError

    @property
    def patch_size(self) -> int:
        raise NotImplementedError

    @property
    def width(self) -> int:
        raise NotImplementedError

    @property
    def num_layers(self) -> int:
        raise NotImplementedError

    @property
    def grid_size(self) -> tuple[int, int]:
        height, width = self.input_size
        return height // self.patch_size, width // self.patch_size

    # ---- computation --------------------------------------------------------------------------
    def _walk(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, int]:
        """Return (hidden states with prefix tokens, global vector, number of prefix tokens)."""
        raise NotImplementedError

    def project(self, global_features: torch.Tensor) -> torch.Tensor:
        """Map the global vector into the joint image-text embedding space (the CLIP image embedding)."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> BackboneFeatures:
        # no_grad (not inference_mode): the decoder's autograd graph may hold these tensors.
        with torch.no_grad():
            hidden, global_features, num_prefix = self._walk(images)
        patches = [h[:, num_prefix:] for h in hidden]
        grid = (images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size)
        return BackboneFeatures(hidden=patches, global_features=global_features, grid=grid)

    def projection_parameter_count(self) -> int:
        """Parameters of the joint-space projection (not read by the decoder, used for the embedding)."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {
            "name": self.config.name,
            "pretrained": self.config.pretrained,
            "family": type(self).__name__,
            "input_size": list(self.input_size),
            "patch_size": self.patch_size,
            "grid": list(self.grid_size),
            "width": self.width,
            "num_layers": self.num_layers,
            "mean": list(self.mean),
            "std": list(self.std),
        }


class OpenClipViTBackbone(FrozenClipBackbone):
    """open_clip's ``VisionTransformer`` (OpenAI CLIP and LAION towers)."""

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.visual.image_size)

    @property
    def patch_size(self) -> int:
        return int(self.visual.patch_size[0])

    @property
    def width(self) -> int:
        return int(self.visual.conv1.out_channels)

    @property
    def num_layers(self) -> int:
        return len(self.visual.transformer.resblocks)

    def _walk(self, images):
        visual = self.visual
        x = visual._embeds(images)  # patchify, class token, positions, ln_pre
        batch_first = getattr(visual.transformer, "batch_first", True)
        hidden = [x]
        if not batch_first:
            x = x.transpose(0, 1)
        for block in visual.transformer.resblocks:
            x = block(x)
            hidden.append(x if batch_first else x.transpose(0, 1))
        # open_clip's pooling: class token through ln_post (the vector before `proj`).
        pooled, _ = visual._pool(hidden[-1])
        return hidden, pooled, 1

    def projection_parameter_count(self) -> int:
        return 0 if self.visual.proj is None else self.visual.proj.numel()

    def project(self, global_features):
        proj = self.visual.proj
        return global_features if proj is None else global_features @ proj


class TimmTrunkBackbone(FrozenClipBackbone):
    """A timm ViT trunk inside open_clip's ``TimmModel`` (e.g. SigLIP, attention-pool head)."""

    @property
    def trunk(self) -> nn.Module:
        return self.visual.trunk

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.trunk.patch_embed.img_size)

    @property
    def patch_size(self) -> int:
        return int(self.trunk.patch_embed.patch_size[0])

    @property
    def width(self) -> int:
        return int(self.trunk.embed_dim)

    @property
    def num_layers(self) -> int:
        return len(self.trunk.blocks)

    def _walk(self, images):
        trunk = self.trunk
        x = trunk.patch_embed(images)
        x = trunk._pos_embed(x)
        x = trunk.patch_drop(x)
        x = trunk.norm_pre(x)
        hidden = [x]
        for block in trunk.blocks:
            x = block(x)
            hidden.append(x)
        # timm's head without its classifier: final norm, then attention pool (SigLIP "map").
        pooled = trunk.forward_head(trunk.norm(x), pre_logits=True)
        return hidden, pooled, int(getattr(trunk, "num_prefix_tokens", 0))

    def projection_parameter_count(self) -> int:
        return sum(p.numel() for p in self.visual.head.parameters())

    def project(self, global_features):
        return self.visual.head(global_features)


def _normalisation_for(name: str, tag: str | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std of a model's weights: from the tag, else from the model's first known tag, else CLIP's."""
    tags = [tag] if tag else list(open_clip.list_pretrained_tags_by_model(name))
    for candidate in tags:
        cfg = open_clip.get_pretrained_cfg(name, candidate)
        if cfg and cfg.get("mean") and cfg.get("std"):
            return tuple(cfg["mean"]), tuple(cfg["std"])
    return CLIP_MEAN, CLIP_STD


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    data = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(data, dict) and "state_dict" in data:
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a state dict (found {type(data).__name__})")
    return data


def _vision_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Accept a vision-only state dict or a full open_clip checkpoint (``visual.*`` keys)."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith("visual.") for k in state):
        return {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
    return state


def _build_tower(name: str, overrides: dict, quick_gelu: bool) -> nn.Module:
    model_cfg = open_clip.get_model_config(name)
    if model_cfg is None:
        raise ValueError(
            f"unknown open_clip model '{name}'. Known ViT models include: "
            f"{', '.join(m for m in open_clip.list_models() if m.startswith('ViT-B'))} ..."
        )
    vision_cfg = dict(model_cfg["vision_cfg"])
    vision_cfg.update(overrides)
    if "timm_model_name" in vision_cfg:
        vision_cfg["timm_model_pretrained"] = False  # never reach for a hub
    return _build_vision_tower(
        model_cfg["embed_dim"], vision_cfg, quick_gelu=quick_gelu or model_cfg.get("quick_gelu", False)
    )


def _wrap(visual: nn.Module, config: BackboneConfig, tag: str | None) -> FrozenClipBackbone:
    mean, std = _normalisation_for(config.name, tag)
    if hasattr(visual, "trunk"):
        return TimmTrunkBackbone(visual, config, mean, std)
    if hasattr(visual, "transformer") and hasattr(visual, "conv1"):
        return OpenClipViTBackbone(visual, config, mean, std)
    raise ValueError(
        f"open_clip model '{config.name}' has a {type(visual).__name__} vision tower; "
        "SPACE-CLIP needs a ViT (open_clip VisionTransformer or a timm ViT trunk)"
    )


def build_backbone(config: BackboneConfig) -> FrozenClipBackbone:
    """Build the frozen vision tower described by ``config``.

    ``config.pretrained`` may be a local file (vision-only state dict or full open_clip
    checkpoint; ``.safetensors``, ``.pt``, ``.bin``), an open_clip tag (downloaded through
    open_clip's own cache), or ``None`` for random weights.
    """
    pretrained = config.pretrained
    if pretrained is None:
        visual = _build_tower(config.name, config.vision_overrides, quick_gelu=False)
        logger.warning(
            "backbone %s has RANDOM weights (no pretrained tag or weights file given): depth will be "
            "meaningless unless the decoder was trained on this same random backbone",
            config.name,
        )
        return _wrap(visual, config, None)

    path = Path(os.path.expanduser(pretrained))
    if path.suffix in {".safetensors", ".pt", ".pth", ".bin", ".ckpt"} or path.exists():
        if not path.is_file():
            raise FileNotFoundError(
                f"backbone weights file not found: {path}. Give an existing file, an open_clip "
                f"pretrained tag (e.g. {open_clip.list_pretrained_tags_by_model(config.name)[:3]}), "
                "or no weights for a random backbone"
            )
        visual = _build_tower(config.name, config.vision_overrides, quick_gelu=False)
        state = _vision_state_dict(_read_state_dict(path))
        own = visual.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        reshaped = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
        if missing or unexpected or reshaped:
            raise ValueError(
                f"weights in {path} do not fit the vision tower of {config.name}"
                f"{' with ' + str(config.vision_overrides) if config.vision_overrides else ''}: "
                f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected keys "
                f"(e.g. {unexpected[:3]}), {len(reshaped)} with other shapes (e.g. {reshaped[:3]})"
            )
        visual.load_state_dict(state)
        logger.info("backbone %s loaded from local weights %s", config.name, path)
        return _wrap(visual, config, None)

    # An open_clip pretrained tag: let open_clip fetch and convert it, then keep the vision tower.
    if config.vision_overrides:
        raise ValueError("vision_overrides cannot be combined with a pretrained tag (the weights fix the shape)")
    known = open_clip.list_pretrained_tags_by_model(config.name)
    if pretrained not in known:
        raise ValueError(
            f"'{pretrained}' is neither a file nor a pretrained tag of {config.name} (tags: {known})"
        )
    tag_cfg = open_clip.get_pretrained_cfg(config.name, pretrained)
    try:
        clip = open_clip.create_model(
            config.name, pretrained=pretrained, force_quick_gelu=bool(tag_cfg.get("quick_gelu", False))
        )
    except Exception as exc:  # download errors arrive as RuntimeError/OSError from hub clients
        raise RuntimeError(
            f"could not load open_clip weights {config.name}/{pretrained}: {exc}. Without internet, "
            "download them elsewhere and pass the file path as the pretrained weights"
        ) from exc
    visual = clip.visual
    del clip  # frees the text tower
    logger.info("backbone %s loaded with open_clip pretrained tag '%s'", config.name, pretrained)
    return _wrap(visual, config, pretrained)


def save_vision_weights(backbone: FrozenClipBackbone, path: str | os.PathLike) -> Path:
    """Write the vision tower's weights as a vision-only safetensors file (loadable as ``pretrained``)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in backbone.visual.state_dict().items()}
    save_file(state, str(path))
    return path
