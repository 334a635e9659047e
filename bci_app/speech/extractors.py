"""Audio feature extractors of the speech decoder: log-mel (built in) or a local pretrained model.

The speech decoder's audio side turns each heard 3 s segment into a ``(n_features, n_frames)``
array framed at the brain data's rate (frame ``k`` of a segment starting at ``s`` is centred on
``s + k / frame_rate``). Two extractors give such arrays:

- :class:`LogMelFeatures` (default, numpy/scipy, :mod:`bci_app.speech.audio`);
- :class:`bci_app.speech.pretrained.PretrainedAudioFeatures`: a wav2vec2-style speech model
  (wav2vec 2.0, HuBERT, WavLM, data2vec-audio) that the user keeps on disk as a Hugging Face
  checkpoint folder, read with ``transformers`` and torch, never downloaded. This module imports
  it only inside :func:`make_features` and :func:`features_from_spec`, and it does not import
  this module: it meets :class:`AudioFeatures` by shape, so importing the extractors never loads
  torch.

A bundle records its extractor in the manifest (``audio_features``; old bundles only have
``mel``: :func:`audio_features_spec` reads either); :func:`features_from_manifest` rebuilds it for
``bci-app evaluate`` and ``bci-app candidates add``, :func:`features_from_spec` for a resumed
training run. Live decoding never needs it: the bundle's candidate embeddings are
computed once, so the live path stays torch-free whichever extractor trained the bundle.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

import numpy as np

from bci_app.decoders.manifest import Manifest, thaw
from bci_app.speech.audio import AUDIO_RATE, MelConfig, as_mono, log_mel, mel_segments


class AudioFeatures(Protocol):
    """Audio segments -> features ``(n_segments, n_features, n_frames)`` at the brain's rate.

    A protocol: an extractor has these members, whether or not it names this class as a base.
    """

    #: Name stored in the manifest (``audio_features.kind``).
    kind: ClassVar[str]

    @property
    def n_features(self) -> int:
        """Feature rows per frame (mel bands, or the model's hidden size)."""
        ...

    @property
    def frame_rate(self) -> float:
        """Frames per second of the features (the brain data's rate)."""
        ...

    def segments(self, audio: np.ndarray, starts_s: np.ndarray, n_frames: int) -> np.ndarray:
        """Features of the segments of ``audio`` starting at ``starts_s`` (seconds).

        Parameters
        ----------
        audio : array (n_samples,)
            Mono audio at :data:`~bci_app.speech.audio.AUDIO_RATE`; sample 0 is at time 0.
            Audio before 0 or past the end counts as silence.
        starts_s : array (n_segments,)
            Start of each segment (s); may be negative.
        n_frames : int
            Frames per segment.

        Returns
        -------
        array (n_segments, n_features, n_frames) float32
        """
        ...

    def to_dict(self) -> dict[str, Any]:
        """The manifest entry (``kind`` plus what rebuilds this extractor)."""
        ...


class LogMelFeatures(AudioFeatures):
    """Log-mel spectrogram features (the default; no model, no torch).

    Parameters
    ----------
    config : MelConfig
        Mel parameters (bands, FFT, frame rate).
    """

    kind = "log_mel"

    def __init__(self, config: MelConfig) -> None:
        self.config = config

    @property
    def n_features(self) -> int:
        """Mel bands."""
        return self.config.n_mels

    @property
    def frame_rate(self) -> float:
        """Frames per second."""
        return self.config.frame_rate

    def segments(self, audio: np.ndarray, starts_s: np.ndarray, n_frames: int) -> np.ndarray:
        """Cut segments from one log-mel of the whole ``audio`` (computed once)."""
        audio = as_mono(audio)
        total = int(len(audio) / self.config.audio_rate * self.config.frame_rate)
        full = log_mel(audio, self.config, n_frames=total)
        return mel_segments(full, np.asarray(starts_s, dtype=float), self.frame_rate, n_frames)

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": "log_mel", **MelConfig}``."""
        return {"kind": self.kind, **self.config.to_dict()}


def make_features(
    frame_rate: float,
    n_mels: int,
    audio_model: str | os.PathLike | None = None,
    layers: list[int] | None = None,
    device: str = "cpu",
) -> AudioFeatures:
    """The extractor of a training run: log-mel, or the local model at ``audio_model``."""
    if audio_model is None:
        if layers:
            raise ValueError(
                "Invalid value for 'audio_layers': layers pick hidden states of a pretrained "
                "model; give the model with --audio-model DIR, or leave --audio-layers out."
            )
        return LogMelFeatures(MelConfig(frame_rate=frame_rate, n_mels=n_mels))
    from bci_app.speech.pretrained import PretrainedAudioFeatures

    return PretrainedAudioFeatures(audio_model, layers=layers, frame_rate=frame_rate, device=device)


def audio_features_spec(
    audio_features: Mapping[str, Any] | None, mel: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The extractor entry of a bundle or checkpoint: ``audio_features``, else log-mel ``mel``.

    Parameters
    ----------
    audio_features : mapping | None
        The recorded extractor (``{"kind": ..., ...}``), read-only or plain.
    mel : mapping | None
        Log-mel parameters, all that bundles and checkpoints made before ``audio_features``
        existed record.

    Returns
    -------
    spec : dict
        A plain JSON copy, such as :meth:`AudioFeatures.to_dict` writes.
    """
    if audio_features:
        return thaw(audio_features)
    if mel is None:
        raise ValueError(
            "Invalid bundle: it records no audio features (neither 'audio_features' nor 'mel'), "
            "so its audio side cannot be rebuilt. Retrain it with 'bci-app train speech'."
        )
    return {"kind": LogMelFeatures.kind, **thaw(mel)}


def features_from_spec(
    spec: Mapping[str, Any], audio_model: str | os.PathLike | None = None, device: str = "cpu"
) -> AudioFeatures:
    """Rebuild an extractor from its entry (:meth:`AudioFeatures.to_dict`).

    Parameters
    ----------
    spec : mapping
        ``{"kind": "log_mel", **MelConfig}`` or a pretrained model's entry.
    audio_model : path | None
        Where the pretrained model lives now, if it moved since training (its fingerprint must
        match the one recorded).
    device : str
        torch device of a pretrained model.
    """
    spec = thaw(spec)
    kind = spec.get("kind")
    if kind == LogMelFeatures.kind:
        if audio_model is not None:
            raise ValueError(
                f"Invalid value for 'audio_model': {audio_model}; this bundle's audio features are "
                "log-mel spectrograms, not a pretrained model. Leave --audio-model out."
            )
        return LogMelFeatures(MelConfig.from_dict({k: v for k, v in spec.items() if k != "kind"}))
    if kind == "pretrained":
        from bci_app.speech.pretrained import PretrainedAudioFeatures

        return PretrainedAudioFeatures.from_dict(spec, audio_model, device=device)
    raise ValueError(
        f"Invalid bundle: unknown audio feature kind {kind!r} (this bci-app knows 'log_mel' and "
        "'pretrained'). Update bci-app or retrain the bundle."
    )


def features_from_manifest(
    manifest: Manifest, audio_model: str | os.PathLike | None = None, device: str = "cpu"
) -> AudioFeatures:
    """Rebuild the extractor a speech bundle was trained with.

    Parameters
    ----------
    manifest : Manifest
        The bundle's manifest (``audio_features``, or ``mel`` alone).
    audio_model : path | None
        Where the pretrained model lives now, if it moved since training.
    device : str
        torch device of a pretrained model.
    """
    spec = audio_features_spec(manifest.audio_features, manifest.mel)
    return features_from_spec(spec, audio_model, device=device)


__all__ = [
    "AUDIO_RATE",
    "AudioFeatures",
    "LogMelFeatures",
    "audio_features_spec",
    "features_from_manifest",
    "features_from_spec",
    "make_features",
]
