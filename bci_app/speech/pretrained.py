"""A local pretrained speech model (wav2vec2 family) as the speech decoder's audio features.

Défossez et al. (2023) compare brain windows with wav2vec 2.0 activations of the heard audio
(the mean of the last transformer layers), not with a spectrogram. A lab that keeps such a model
on disk (a Hugging Face checkpoint folder: ``config.json``, weights, ``preprocessor_config.json``,
e.g. made once with ``save_pretrained`` where the hub is reachable) trains with it::

    bci-app train speech REC.xdf --out BUNDLE --audio-model /models/wav2vec2-base

The folder is read with ``transformers`` (``local_files_only=True``: nothing is downloaded) and
torch; any model whose config has wav2vec2's convolutional front end (``conv_stride``,
``conv_kernel``: wav2vec2, HuBERT, WavLM, data2vec-audio) works. Each 3 s segment goes through the
model on its own (as the candidates added later will), padded by half the front end's receptive
field so that model frame ``j`` is centred on ``start + j * hop``; the hidden states (50 Hz for
wav2vec2) are then linearly interpolated to the brain's 120 Hz frames.

The manifest records the folder, the layers and a SHA-256 fingerprint of the folder's config and
weights, so a bundle evaluated or extended later refuses a different model.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bci_app._optional import import_optional
from bci_app.speech.audio import AUDIO_RATE, as_mono, resample_audio

logger = logging.getLogger(__name__)

#: Transformer layers averaged when none are named (the paper averages the last ones).
DEFAULT_LAST_LAYERS = 4
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack")
_BATCH = 16


def fingerprint(folder: str | os.PathLike) -> str:
    """SHA-256 over the folder's ``config.json`` and weight files (names and contents)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    weights = (p for p in folder.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))
    files = [folder / "config.json", *sorted(weights)]
    for path in files:
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _front_end(config: Any, folder: Path) -> tuple[int, int]:
    """Hop and receptive field (input samples) of the model's convolutional front end."""
    strides, kernels = getattr(config, "conv_stride", None), getattr(config, "conv_kernel", None)
    if not strides or not kernels or len(strides) != len(kernels):
        raise ValueError(
            f"Invalid value for 'audio_model': the model in {folder} (type "
            f"{getattr(config, 'model_type', '?')!r}) has no wav2vec2-style convolutional front "
            "end (conv_stride/conv_kernel). Use a wav2vec2, HuBERT, WavLM or data2vec-audio "
            "checkpoint, or train on log-mel features (leave --audio-model out)."
        )
    hop, field = 1, 1
    for stride, kernel in zip(strides, kernels):
        field += (int(kernel) - 1) * hop
        hop *= int(stride)
    return hop, field


class PretrainedAudioFeatures:
    """Hidden states of a local wav2vec2-family model, at the brain's frame rate.

    An :class:`~bci_app.speech.extractors.AudioFeatures` (by shape: this module does not import
    the extractors, which import this one lazily).

    Parameters
    ----------
    path : path
        Hugging Face checkpoint folder on disk (never downloaded).
    layers : list of int | None
        Indices into the model's hidden states (0: the front end's projection, ``i``: after
        transformer layer ``i``, negative from the end), averaged. Default: the last
        :data:`DEFAULT_LAST_LAYERS` transformer layers.
    frame_rate : float
        Output frames per second (the brain data's rate, 120 Hz).
    device : str
        torch device to run the model on.
    expect_fingerprint : str | None
        Refuse a folder whose :func:`fingerprint` differs (a bundle's model moved or changed).
    """

    kind = "pretrained"

    def __init__(
        self,
        path: str | os.PathLike,
        layers: list[int] | None = None,
        frame_rate: float = 120.0,
        device: str = "cpu",
        expect_fingerprint: str | None = None,
    ) -> None:
        self.path = Path(path).expanduser().resolve()
        if not (self.path / "config.json").is_file():
            raise ValueError(
                f"Invalid value for 'audio_model': {self.path} is not a model folder with a "
                "config.json. Give the folder of a Hugging Face checkpoint saved on disk "
                "(save_pretrained), e.g. a wav2vec2 model."
            )
        self.fingerprint = fingerprint(self.path)
        if expect_fingerprint is not None and expect_fingerprint != self.fingerprint:
            raise ValueError(
                f"Invalid value for 'audio_model': the model in {self.path} is not the one this "
                f"bundle was trained with (fingerprint {self.fingerprint[:12]}, expected "
                f"{expect_fingerprint[:12]}). Give the original checkpoint with --audio-model DIR."
            )
        transformers = import_optional("transformers")
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        try:
            self.config = transformers.AutoConfig.from_pretrained(self.path, local_files_only=True)
        except (OSError, ValueError) as err:
            raise ValueError(f"Invalid value for 'audio_model': {err}") from None
        self.hop, self.field = _front_end(self.config, self.path)
        try:
            self.model = transformers.AutoModel.from_pretrained(self.path, local_files_only=True)
        except Exception as err:  # safetensors, torch.load and OSError all mean the same here
            raise ValueError(
                f"Invalid value for 'audio_model': the weights in {self.path} cannot be loaded "
                f"({type(err).__name__}: {err}). The checkpoint is incomplete or corrupt; copy it "
                "again."
            ) from None
        self.model.eval().to(device)
        self.device = torch.device(device)
        self.extractor = self._feature_extractor(transformers)
        self.sampling_rate = int(self.extractor.sampling_rate)
        self.layers = self._check_layers(layers)
        self._frame_rate = float(frame_rate)

    def _feature_extractor(self, transformers) -> Any:
        """The model's input preprocessing (rate, per-clip normalisation), from its folder.

        Without ``preprocessor_config.json``: wav2vec2's convention, 16 kHz normalised per clip.
        """
        if (self.path / "preprocessor_config.json").is_file():
            return transformers.AutoFeatureExtractor.from_pretrained(
                self.path, local_files_only=True
            )
        logger.warning(
            "%s has no preprocessor_config.json: assuming 16 kHz input normalised per clip "
            "(the wav2vec2 convention).",
            self.path,
        )
        return transformers.Wav2Vec2FeatureExtractor(sampling_rate=AUDIO_RATE, do_normalize=True)

    def _check_layers(self, layers: list[int] | None) -> list[int]:
        n_layers = int(self.config.num_hidden_layers)
        if not layers:
            last = min(DEFAULT_LAST_LAYERS, n_layers)
            return list(range(n_layers - last + 1, n_layers + 1))
        bad = [i for i in layers if not -(n_layers + 1) <= int(i) <= n_layers]
        if bad:
            raise ValueError(
                f"Invalid value for 'audio_layers': {bad} out of range; the model in {self.path} "
                f"has hidden states 0..{n_layers} (0: before the first transformer layer)."
            )
        return sorted({int(i) % (n_layers + 1) for i in layers})

    @property
    def n_features(self) -> int:
        """Hidden size of the model."""
        return int(self.config.hidden_size)

    @property
    def frame_rate(self) -> float:
        """Output frames per second."""
        return self._frame_rate

    @torch.no_grad()
    def segments(self, audio: np.ndarray, starts_s: np.ndarray, n_frames: int) -> np.ndarray:
        """Run each segment through the model; interpolate its frames to :attr:`frame_rate`."""
        audio = resample_audio(as_mono(audio), AUDIO_RATE, self.sampling_rate)
        rate = self.sampling_rate
        n_model = int(np.ceil((n_frames - 1) / self.frame_rate * rate / self.hop)) + 1
        length = (n_model - 1) * self.hop + self.field
        # model frame j of a clip starting half a receptive field early is centred on start + j*hop
        starts = np.round(np.asarray(starts_s, dtype=float) * rate).astype(np.int64)
        first = starts - self.field // 2
        position = np.arange(n_frames) / self.frame_rate * rate / self.hop
        low = np.minimum(np.floor(position).astype(np.int64), n_model - 1)
        high = np.minimum(low + 1, n_model - 1)
        weight = torch.from_numpy((position - low).astype(np.float32))[None, :, None]
        out = np.empty((len(first), self.n_features, n_frames), np.float32)
        for lo in range(0, len(first), _BATCH):
            index = first[lo : lo + _BATCH, None] + np.arange(length)[None]
            inside = (index >= 0) & (index < len(audio))
            clips = np.where(inside, audio[np.clip(index, 0, max(len(audio) - 1, 0))], 0.0)
            states = self._hidden(clips.astype(np.float32))[:, :n_model]
            mixed = states[:, low] * (1 - weight) + states[:, high] * weight
            out[lo : lo + _BATCH] = mixed.transpose(1, 2).cpu().numpy()
        return out

    def _hidden(self, clips: np.ndarray) -> torch.Tensor:
        """Mean of the chosen hidden states, ``(batch, n_model_frames, hidden)``."""
        x = self.extractor(list(clips), sampling_rate=self.sampling_rate, return_tensors="pt")
        states = self.model(x["input_values"].to(self.device), output_hidden_states=True)
        states = states.hidden_states
        return torch.stack([states[i] for i in self.layers]).mean(dim=0).float()

    def to_dict(self) -> dict[str, Any]:
        """Folder, model type, layers, sizes and fingerprint."""
        return {
            "kind": self.kind,
            "path": str(self.path),
            "model_type": getattr(self.config, "model_type", ""),
            "layers": self.layers,
            "n_features": self.n_features,
            "frame_rate": self.frame_rate,
            "sampling_rate": self.sampling_rate,
            "hop": self.hop,
            "receptive_field": self.field,
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_dict(
        cls, spec: Mapping[str, Any], path: str | os.PathLike | None = None, device: str = "cpu"
    ) -> PretrainedAudioFeatures:
        """Rebuild from a manifest entry; ``path`` overrides the recorded folder."""
        folder = Path(path) if path is not None else Path(spec["path"])
        if not folder.exists():
            raise ValueError(
                f"Cannot compute this bundle's audio features: they come from the local "
                f"{spec.get('model_type') or 'speech'} model at {folder}, which is not there. "
                "Give its new place with --audio-model DIR."
            )
        return cls(
            folder,
            layers=list(spec["layers"]),
            frame_rate=float(spec["frame_rate"]),
            device=device,
            expect_fingerprint=spec.get("fingerprint"),
        )
