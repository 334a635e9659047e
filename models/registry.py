"""The decoder architectures by name: config class, model class, :func:`build_model`.

:data:`MODELS` is written out here, one entry per architecture; importing a model module
registers nothing. Every entry is built as ``build(n_chans, positions, n_subjects, config)``,
takes tensors only in ``forward`` and lists its ONNX graphs in ``export_graphs()`` (see
:mod:`models.export`); the test suite exports every entry. Code outside the package (a plugin,
an experiment) may add one at run time with :func:`register_model`.
:func:`model_from_checkpoint` rebuilds the model a training checkpoint describes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor, nn

from acquisition.channels import ChannelSpec
from models.speech.model import SpeechClip, SpeechClipConfig
from models.typing.config import Brain2QwertyV1Config, Brain2QwertyV2Config
from models.typing.model import Brain2QwertyV1, Brain2QwertyV2


@dataclass(frozen=True)
class ModelSpec:
    """How to build one architecture: its config class (with presets) and its constructor."""

    config_class: type
    build: Callable[..., nn.Module]
    description: str = ""


MODELS: dict[str, ModelSpec] = {
    "brain2qwerty_v1": ModelSpec(
        Brain2QwertyV1Config,
        Brain2QwertyV1,
        "Typing, keystroke-locked windows: conv encoder + sentence transformer (29 classes).",
    ),
    "brain2qwerty_v2": ModelSpec(
        Brain2QwertyV2Config,
        Brain2QwertyV2,
        "Typing, continuous data: conv front end + Conformer + CTC (29 classes + blank).",
    ),
    "speech_clip": ModelSpec(
        SpeechClipConfig,
        SpeechClip,
        "Speech, 3 s listening windows: brain encoder + audio encoder, CLIP retrieval.",
    ),
}


def register_model(name: str, spec: ModelSpec, replace: bool = False) -> None:
    """Add an architecture under ``name`` (error if taken, unless ``replace``)."""
    if name in MODELS and not replace:
        raise ValueError(
            f"Invalid value for 'name': model {name!r} is already registered. Pick another name "
            "or pass replace=True."
        )
    MODELS[name] = spec


def _spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(
            f"Invalid value for 'name': unknown model {name!r}. Registered: {sorted(MODELS)}."
        )
    return MODELS[name]


def get_config(name: str, config: str | Mapping[str, Any] | Any = "small") -> Any:
    """Return model ``name``'s configuration from a preset name, a dict or a config object."""
    config_class = _spec(name).config_class
    if isinstance(config, str):
        return config_class.named(config)
    if isinstance(config, Mapping):
        return config_class.from_dict(config)
    if not isinstance(config, config_class):
        raise ValueError(
            f"Invalid value for 'config': model {name!r} takes a {config_class.__name__}, a preset "
            f"name or a dict, got {type(config).__name__}."
        )
    return config


def build_model(
    name: str,
    config: str | Mapping[str, Any] | Any,
    n_chans: int,
    positions: np.ndarray | Tensor,
    n_subjects: int,
) -> nn.Module:
    """Build registered model ``name``.

    Parameters
    ----------
    name : str
        A key of :data:`MODELS` (``"brain2qwerty_v1"``, ``"brain2qwerty_v2"``,
        ``"speech_clip"``).
    config : str | dict | config
        Preset name (``"small"``, ``"paper"``), a ``to_dict()`` dict, or a config object.
    n_chans : int
        Number of input channels.
    positions : array, shape (n_chans, 2) or (n_chans, 3)
        2D positions in [0, 1] or 3D head-frame positions (projected with
        :func:`models.layers.positions_to_2d`).
    n_subjects : int
        Number of subjects the model has heads for.
    """
    return _spec(name).build(n_chans, positions, n_subjects, get_config(name, config))


def model_from_checkpoint(payload: dict[str, Any], weights: str = "best_model") -> nn.Module:
    """Rebuild the model a checkpoint describes, with its ``best_model`` (or ``model``) weights."""
    meta = payload["meta"]
    try:
        channels = ChannelSpec.from_dict(meta["channels"])
        model = build_model(
            meta["arch"],
            meta["model_config"],
            meta["n_chans"],
            channels.positions,
            meta["n_subjects"],
        )
        model.load_state_dict(payload[weights])
    except (KeyError, TypeError, RuntimeError) as err:
        raise ValueError(
            f"Corrupt checkpoint: its description and weights do not make a model ({err}). "
            "Re-train, or give the checkpoint.pt that 'bci-app train' wrote."
        ) from None
    return model.eval()
