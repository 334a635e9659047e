"""Speech decoder (Défossez et al. 2023): brain encoder, audio encoder and CLIP loss.

Brain side: spatial attention over sensor positions (2D Fourier embedding for EEG/MEG; a 3D
Fourier embedding for intracranial contacts, ``spatial_dims=3``) -> 1x1 conv -> subject layer ->
10 residual dilated convs (dilations 1, 2, 4, 8, 16 repeated) with a GLU conv after every second
one -> a head to ``embed_dim`` per time step -> mean over time. Audio side: log-mel features of
the heard segment (:mod:`bci_app.speech.audio`), standardised with statistics of the training
audio (buffers), then a small trainable conv encoder (or, with ``audio_layers=0``, a per-frame
linear projection) -> mean over time. Training pulls each brain window's embedding towards the
audio of its own segment and away from the other segments of the batch (CLIP loss, brain -> audio,
as in the paper); decoding ranks candidate segments by cosine similarity.

Exported graphs (:meth:`SpeechClip.export_graphs`): ``brain``: ``x (batch, n_chans, n_times),
subject (batch,) -> embedding (batch, embed_dim)``; ``audio``: ``mel (batch, n_mels, n_frames)
-> embedding (batch, embed_dim)``, so new candidates are embedded without torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from acquisition.channels import modality_of
from models.checks import check_continuous, check_subject
from models.config import ConfigMixin
from models.export import ExportGraph
from models.layers import ResidualDilatedConv, SpatialAttention, SubjectLayer, as_positions_2d
from models.speech.layers import SpatialAttention3D, positions_to_unit_cube

_DILATIONS = (1, 2, 4, 8, 16)
_INT_FIELDS = (
    "spatial_channels",
    "fourier_harmonics",
    "fourier_harmonics_3d",
    "max_colocated",
    "hidden",
    "n_conv_layers",
    "embed_dim",
    "n_mels",
    "audio_hidden",
)


@dataclass(frozen=True)
class SpeechClipConfig(ConfigMixin):
    """Sizes, window and audio features of the speech decoder; presets ``paper`` and ``small``.

    ``paper`` (Défossez et al. 2023): 270 spatial channels, 32 harmonics, spatial dropout 0.2,
    320 hidden channels, 10 dilated conv layers with GLU, 120 Hz, 3 s windows (-0.5..+2.5 s),
    brain shifted 150 ms, 120 mel bands (the paper's mel baseline). Ours: 8 harmonics per axis
    for 3D positions, a 1024-d embedding, a 2-block audio encoder. ``small`` trains on 2 CPU cores
    in minutes (~0.2 M parameters).
    """

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        "small": dict(
            spatial_channels=32,
            fourier_harmonics=8,
            fourier_harmonics_3d=4,
            hidden=64,
            embed_dim=64,
            n_mels=40,
            audio_hidden=64,
            conv_dropout=0.1,
        ),
    }

    sfreq: float = 120.0
    tmin: float = -0.5
    tmax: float = 2.5
    brain_shift: float = 0.15
    baseline_s: float = 0.5
    clamp: float = 20.0
    spatial_dims: int = 2
    spatial_channels: int = 270
    fourier_harmonics: int = 32
    fourier_harmonics_3d: int = 8
    spatial_dropout_radius: float = 0.2
    max_colocated: int = 3
    hidden: int = 320
    n_conv_layers: int = 10
    conv_dropout: float = 0.2
    layer_scale_init: float = 0.1
    embed_dim: int = 1024
    n_mels: int = 120
    audio_layers: int = 2
    audio_hidden: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"Invalid value for '{name}': must be an integer >= 1, got {value!r}."
                )
        if self.spatial_dims not in (2, 3):
            raise ValueError(
                f"Invalid value for 'spatial_dims': {self.spatial_dims!r}; use 2 (EEG/MEG maps) "
                "or 3 (intracranial contacts)."
            )
        if not (self.tmax > self.tmin and self.sfreq > 0 and self.n_times >= 8):
            raise ValueError(
                f"Invalid window: tmin={self.tmin}, tmax={self.tmax} s at {self.sfreq} Hz; "
                "need tmax > tmin and at least 8 samples."
            )
        if not 0 < self.baseline_s < self.tmax - self.tmin:
            raise ValueError(
                f"Invalid value for 'baseline_s': {self.baseline_s}; it must lie inside the "
                f"{self.tmax - self.tmin:g} s window."
            )
        for name in ("spatial_dropout_radius", "conv_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"Invalid value for '{name}': must be in [0, 1).")

    @property
    def n_times(self) -> int:
        """Samples (and audio frames) per window: ``round((tmax - tmin) * sfreq)``."""
        return round((self.tmax - self.tmin) * self.sfreq)


class GLUConv(nn.Module):
    """Kernel-3 conv to twice the channels, then a gated linear unit back to ``channels``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, 2 * channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """Apply to ``(batch, channels, time)``."""
        return F.glu(self.conv(x), dim=1)


class BrainEncoder(nn.Module):
    """Brain window ``(batch, n_chans, n_times)`` -> per-time-step embeddings, then their mean."""

    def __init__(
        self,
        n_chans: int,
        positions: np.ndarray | Tensor,
        n_subjects: int,
        config: SpeechClipConfig,
    ) -> None:
        super().__init__()
        if n_chans < 1 or n_subjects < 1:
            raise ValueError(
                f"Invalid value for 'n_chans'/'n_subjects': both must be >= 1, got {n_chans=}, "
                f"{n_subjects=}."
            )
        self.n_chans, self.n_subjects, self.config = n_chans, n_subjects, config
        attention, harmonics = SpatialAttention, config.fourier_harmonics
        if config.spatial_dims == 3:
            attention, harmonics = SpatialAttention3D, config.fourier_harmonics_3d
            unit = positions_to_unit_cube(positions, n_chans)
        else:
            unit = as_positions_2d(positions, n_chans)
        self.spatial = attention(
            unit,
            config.spatial_channels,
            n_subjects,
            harmonics,
            config.spatial_dropout_radius,
            config.max_colocated,
        )
        self.pointwise = nn.Conv1d(config.spatial_channels, config.hidden, 1)
        self.subject_layer = SubjectLayer(config.hidden, n_subjects)
        layers: list[nn.Module] = []
        for i in range(config.n_conv_layers):
            dilation = _DILATIONS[i % len(_DILATIONS)]
            layers.append(
                ResidualDilatedConv(
                    config.hidden, dilation, config.conv_dropout, config.layer_scale_init
                )
            )
            if i % 2 == 1:
                layers.append(GLUConv(config.hidden))
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Conv1d(config.hidden, 2 * config.hidden, 1),
            nn.GELU(),
            nn.Conv1d(2 * config.hidden, config.embed_dim, 1),
        )

    def per_time(self, x: Tensor, subject: Tensor, spatial: nn.Module | None = None) -> Tensor:
        """Embeddings per time step ``(batch, embed_dim, n_times)``."""
        spatial = self.spatial if spatial is None else spatial
        x = self.subject_layer(self.pointwise(spatial(x, subject)), subject)
        return self.head(self.layers(x))

    def forward(self, x: Tensor, subject: Tensor) -> Tensor:
        """Pooled embedding ``(batch, embed_dim)``."""
        return self.per_time(x, subject).mean(dim=-1)


class AudioEncoder(nn.Module):
    """Log-mel ``(batch, n_mels, n_frames)`` -> embedding ``(batch, embed_dim)`` (mean over time).

    The log-mel values are standardised per band with ``center``/``scale`` buffers, set from
    the training audio (:meth:`set_statistics`) and saved with the weights.
    """

    def __init__(self, config: SpeechClipConfig) -> None:
        super().__init__()
        self.register_buffer("center", torch.zeros(config.n_mels))
        self.register_buffer("scale", torch.ones(config.n_mels))
        if config.audio_layers == 0:
            self.body = nn.Conv1d(config.n_mels, config.embed_dim, 1)
        else:
            blocks: list[nn.Module] = [nn.Conv1d(config.n_mels, config.audio_hidden, 3, padding=1)]
            blocks += [
                ResidualDilatedConv(
                    config.audio_hidden, 2**i, config.conv_dropout, config.layer_scale_init
                )
                for i in range(config.audio_layers)
            ]
            blocks.append(nn.Conv1d(config.audio_hidden, config.embed_dim, 1))
            self.body = nn.Sequential(*blocks)
        self.n_mels = config.n_mels

    @torch.no_grad()
    def set_statistics(self, mels: np.ndarray) -> None:
        """Set the standardisation from training log-mels ``(..., n_mels, n_frames)``."""
        flat = np.moveaxis(np.asarray(mels, dtype=np.float64), -2, 0).reshape(self.n_mels, -1)
        self.center.copy_(torch.as_tensor(flat.mean(axis=1)))
        self.scale.copy_(torch.as_tensor(np.maximum(flat.std(axis=1), 1e-3)))

    def forward(self, mel: Tensor) -> Tensor:
        """Pooled embedding of ``(batch, n_mels, n_frames)`` log-mel features."""
        if mel.ndim != 3 or mel.shape[1] != self.n_mels:
            raise ValueError(
                f"Invalid shape for 'mel': expected (batch, {self.n_mels}, n_frames), got "
                f"{tuple(mel.shape)}. Compute features with the bundle's mel config."
            )
        x = (mel - self.center[:, None]) / self.scale[:, None]
        return self.body(x).mean(dim=-1)


def clip_loss(brain: Tensor, audio: Tensor, logit_scale: Tensor) -> Tensor:
    """CLIP loss, brain -> audio: each window must pick its own segment among the batch's."""
    logits = logit_scale.exp() * F.normalize(brain, dim=-1) @ F.normalize(audio, dim=-1).T
    return F.cross_entropy(logits.float(), torch.arange(len(brain), device=brain.device))


class SpeechClip(nn.Module):
    """Speech decoder: brain and audio encoders with a learned CLIP temperature.

    Parameters
    ----------
    n_chans : int
        Input channels.
    positions : array, shape (n_chans, 2) or (n_chans, 3)
        Sensor positions: 2D in [0, 1] or 3D head frame (projected) for ``spatial_dims=2``; 3D
        for ``spatial_dims=3``.
    n_subjects : int
        Number of subjects (per-subject spatial heads and subject layer).
    config : SpeechClipConfig
    """

    def __init__(
        self,
        n_chans: int,
        positions: np.ndarray | Tensor,
        n_subjects: int,
        config: SpeechClipConfig,
    ) -> None:
        super().__init__()
        self.config, self.n_chans, self.n_subjects = config, n_chans, n_subjects
        self.n_times, self.sfreq = config.n_times, config.sfreq
        self.brain = BrainEncoder(n_chans, positions, n_subjects, config)
        self.audio = AudioEncoder(config)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def check_windows(self, x: Tensor) -> None:
        """Raise ValueError unless ``x`` is float32 ``(batch, n_chans, n_times)``."""
        check_continuous(x, self.n_chans)
        if x.shape[-1] != self.n_times:
            raise ValueError(
                f"n_times={x.shape[-1]} different from (tmax - tmin) * sfreq = "
                f"({self.config.tmax} - {self.config.tmin}) * {self.config.sfreq} = "
                f"{self.n_times}. Cut 3 s windows at the decoder's rate."
            )

    def forward(self, x: Tensor, subject: Tensor) -> Tensor:
        """Brain embeddings ``(batch, embed_dim)`` of windows ``(batch, n_chans, n_times)``."""
        self.check_windows(x)
        check_subject(subject, x.shape[0], self.n_subjects)
        return self.brain(x, subject)

    def loss(self, x: Tensor, subject: Tensor, mel: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """CLIP loss of a batch and both (detached) embeddings."""
        brain, audio = self(x, subject), self.audio(mel)
        scale = self.logit_scale.clamp(max=math.log(100.0))
        return clip_loss(brain, audio, scale), brain.detach(), audio.detach()

    def export_graphs(self, batch: int = 2, freeze_spatial: bool = True) -> dict[str, ExportGraph]:
        """The ``brain`` and ``audio`` graphs (module docstring), dynamic batch (and frames)."""
        device = next(self.parameters()).device
        return {
            "brain": ExportGraph(
                module=BrainGraph(self, freeze_spatial),
                example_inputs=(
                    torch.randn(batch, self.n_chans, self.n_times, device=device),
                    torch.arange(batch, device=device) % self.n_subjects,
                ),
                input_names=("x", "subject"),
                output_names=("embedding",),
                dynamic_axes={"x": {0: "batch"}, "subject": {0: "batch"}},
            ),
            "audio": ExportGraph(
                module=self.audio,
                example_inputs=(
                    torch.randn(batch, self.config.n_mels, self.n_times, device=device),
                ),
                input_names=("mel",),
                output_names=("embedding",),
                dynamic_axes={"mel": {0: "batch", 2: "n_frames"}},
            ),
        }


class BrainGraph(nn.Module):
    """Export view of the brain encoder, with the spatial attention frozen per subject."""

    def __init__(self, model: SpeechClip, freeze_spatial: bool = True) -> None:
        super().__init__()
        self.model = model
        self.spatial = model.brain.spatial.frozen() if freeze_spatial else model.brain.spatial

    def forward(self, x: Tensor, subject: Tensor) -> Tensor:
        """Return ``embedding (batch, embed_dim)``."""
        self.model.check_windows(x)
        check_subject(subject, x.shape[0], self.model.n_subjects)
        return self.model.brain.per_time(x, subject, self.spatial).mean(dim=-1)


def with_spatial_dims(config: SpeechClipConfig, channel_types: list[str]) -> SpeechClipConfig:
    """Config with ``spatial_dims=3`` for intracranial montages (sEEG/ECoG/DBS), else as given."""
    intracranial = modality_of(channel_types) == "ieeg"
    return dataclasses.replace(config, spatial_dims=3 if intracranial else config.spatial_dims)
