"""Backbone configuration and the one factory that turns it into a headless timm model."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import timm
import torch.nn as nn

from autotimm.checks import ConfigValueError, check_fraction, close_matches
from autotimm.user_errors import UserError
from autotimm.utils import to_plain


@dataclass
class BackboneConfig:
    """Everything `timm.create_model` needs to build the feature extractor.

    `kwargs` holds extra `timm.create_model` keyword arguments (e.g. `img_size`,
    `global_pool`). `checkpoint_path` loads local weights (a timm/torch state dict, or an
    autotimm checkpoint: its backbone) instead of downloading pretrained ones.
    `grad_checkpointing` recomputes activations in the backward pass (timm's
    `set_grad_checkpointing`): less memory for large backbones, slower steps.
    """

    model_name: str
    pretrained: bool = False
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    in_chans: int = 3
    checkpoint_path: str | None = None
    grad_checkpointing: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.kwargs = dict(to_plain(self.kwargs) or {})
        reserved = sorted(set(self.kwargs) & (_RESERVED | set(self.__dataclass_fields__)))
        if reserved:
            raise ConfigValueError(
                "kwargs",
                self.kwargs,
                f"may not set {reserved}; use the BackboneConfig fields "
                f"{list(self.__dataclass_fields__)[:-1]} (num_classes is set by ImageClassifier)",
            )
        validate_model_name(self.model_name)
        check_fraction("drop_rate", self.drop_rate)
        check_fraction("drop_path_rate", self.drop_path_rate)
        if not isinstance(self.grad_checkpointing, bool):
            raise ConfigValueError(
                "grad_checkpointing", self.grad_checkpointing, "accepted: true, false"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# create_model arguments that autotimm sets itself
_RESERVED = {"num_classes", "pretrained_cfg_overlay"}


def as_backbone_config(backbone: str | BackboneConfig | dict[str, Any]) -> BackboneConfig:
    """Accept a timm name, a BackboneConfig or its dict form (from Hydra or a checkpoint)."""
    if isinstance(backbone, BackboneConfig):
        return backbone
    if isinstance(backbone, str):
        return BackboneConfig(model_name=backbone)
    if isinstance(backbone, dict):
        fields = {k: v for k, v in backbone.items() if k != "_target_"}
        unknown = sorted(set(fields) - set(BackboneConfig.__dataclass_fields__))
        if unknown or "model_name" not in fields:
            raise UserError(
                f"Bad backbone config {backbone!r}: unknown keys {unknown}; accepted keys: "
                f"{list(BackboneConfig.__dataclass_fields__)} (model_name required)"
            )
        return BackboneConfig(**fields)
    raise UserError(
        f"backbone must be a timm model name, a BackboneConfig or a dict, got {backbone!r}"
    )


def validate_model_name(name: str) -> None:
    """Raise with timm's close matches when `name` is not a timm model."""
    if isinstance(name, str) and timm.is_model(name):
        return
    hint = close_matches(name, timm.list_models()) if isinstance(name, str) else ""
    raise ConfigValueError(
        "model_name",
        name,
        f"not a timm model{hint}; accepted: the names autotimm.list_backbones('<pattern>') lists",
    )


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """Cheap check (one DNS lookup + TCP connect) whether the weights hub can be reached."""
    import socket
    from urllib.parse import urlparse

    try:
        from huggingface_hub import constants

        host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    except ImportError:  # pragma: no cover - huggingface_hub comes with timm
        host = "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _hub_offline_when_unreachable():
    """Without network, switch huggingface_hub to offline mode for one call.

    Cached weights still load; missing ones fail at once instead of after a minute
    of retries.
    """
    if _hub_reachable():
        yield False
        return
    from huggingface_hub import constants

    with mock.patch.object(constants, "HF_HUB_OFFLINE", True):
        yield True


def output_features(backbone: nn.Module) -> int:
    """The width of a headless timm backbone's output (what the head takes).

    Usually `num_features`; models with a pre-logits stage after pooling (MobileNetV3's
    conv_head: 960 pooled -> 1280 out) say so in `head_hidden_size`.
    """
    return int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)


def create_backbone(config: BackboneConfig) -> nn.Module:
    """Build the headless timm backbone (`num_classes=0`: pooled `num_features` out).

    `config` checked its own values when it was made (BackboneConfig.__post_init__).
    """
    model = _create(config)
    if config.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model


def autotimm_backbone_state(path: Path) -> dict[str, Any] | None:
    """The backbone weights of an autotimm checkpoint (a Lightning .ckpt of an
    ImageClassifier, EMA weights when the run had EMA); None for any other file."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a torch pickle (e.g. safetensors): timm's loader reads it
        return None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        return None
    prefix = "backbone."
    found = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return found or None


def _load_backbone_state(
    config: BackboneConfig, kwargs: dict[str, Any], state: dict[str, Any], path: Path
) -> nn.Module:
    model = timm.create_model(config.model_name, pretrained=False, **kwargs)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # another architecture (or in_chans) than the checkpoint's
        first = (str(exc).splitlines()[1:2] or [str(exc)[:200]])[0].strip()
        raise UserError(
            f"backbone.checkpoint_path {str(path)!r}: its backbone weights do not fit "
            f"{config.model_name!r} ({first}); use the backbone the checkpoint was trained with"
        ) from exc
    return model


def _create(config: BackboneConfig) -> nn.Module:
    kwargs: dict[str, Any] = dict(config.kwargs)
    kwargs.update(
        num_classes=0,
        drop_rate=config.drop_rate,
        drop_path_rate=config.drop_path_rate,
        in_chans=config.in_chans,
    )
    if config.checkpoint_path:
        path = Path(config.checkpoint_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"BackboneConfig.checkpoint_path {str(path)!r} does not exist (expected a "
                f"state dict file for {config.model_name!r})"
            )
        state = autotimm_backbone_state(path)
        if state is not None:  # fine-tuning from an earlier run's checkpoint
            return _load_backbone_state(config, kwargs, state, path)
        # timm's own pretrained loader reads a local file: it adapts in_chans and drops
        # the classifier weights that do not fit num_classes=0.
        kwargs["pretrained_cfg_overlay"] = dict(file=str(path))
        return timm.create_model(config.model_name, pretrained=True, **kwargs)
    if not config.pretrained:
        return timm.create_model(config.model_name, pretrained=False, **kwargs)
    with _hub_offline_when_unreachable() as offline:
        try:
            return timm.create_model(config.model_name, pretrained=True, **kwargs)
        except Exception as exc:
            if not offline and not isinstance(exc, OSError):
                raise
            error = exc
    raise RuntimeError(
        f"Pretrained weights for {config.model_name!r} could not be fetched offline "
        f"(the weights hub is unreachable and they are not cached; {type(error).__name__}). "
        "Use local weights with BackboneConfig(checkpoint_path='/path/to/weights.pth') "
        "(Hydra: backbone.checkpoint_path=...) or train from scratch with "
        "pretrained=False (Hydra: backbone.pretrained=false)."
    ) from error


def list_backbones(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """timm model names matching a glob `pattern` (e.g. 'resnet*', '*vit*')."""
    return timm.list_models(pattern, pretrained=pretrained)
