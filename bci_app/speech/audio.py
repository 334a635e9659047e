"""Audio side of the speech decoder: WAV reading and log-mel spectrograms, numpy/scipy only.

The speech decoder compares brain windows with the audio heard during them. Audio features are
log-mel spectrograms computed here (no torch, no model download), framed at the brain data's rate
(120 Hz), so feature frame ``k`` of a segment starting at time ``s`` is centred on ``s + k / rate``
whatever the audio rate (16 kHz gives a fractional hop of 133.3 samples; frames start at the
rounded sample). A user with a local pretrained speech model (e.g. a wav2vec2 checkpoint on disk)
can plug its features in instead by training on arrays of shape ``(n_features, n_frames)`` at the
same frame rate; nothing here needs one.

librosa is not a dependency of the project; the mel filterbank (HTK formula, triangular filters)
is a few lines of numpy, and the STFT frames are gathered with one index array per block.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy import signal
from scipy.io import wavfile

#: Rate of the audio the features are computed from (Hz); other rates are resampled.
AUDIO_RATE = 16000
_FLOOR = 1e-10
_BLOCK = 8192


@dataclass(frozen=True)
class MelConfig:
    """Parameters of the log-mel features; stored in speech bundles (``to_dict``).

    Parameters
    ----------
    audio_rate : int
        Audio rate the features are computed at (Hz).
    frame_rate : float
        Feature frames per second (the brain data's rate, 120 Hz).
    n_fft : int
        FFT length and window (Hann) in audio samples (400 = 25 ms at 16 kHz).
    n_mels : int
        Number of mel bands.
    fmin, fmax : float
        Band edges of the filterbank (Hz).
    """

    audio_rate: int = AUDIO_RATE
    frame_rate: float = 120.0
    n_fft: int = 400
    n_mels: int = 40
    fmin: float = 50.0
    fmax: float = 7600.0

    def __post_init__(self) -> None:
        if not (self.n_fft >= 16 and self.n_mels >= 1 and self.frame_rate > 0):
            raise ValueError(
                f"Invalid mel config: n_fft={self.n_fft} (>= 16), n_mels={self.n_mels} (>= 1), "
                f"frame_rate={self.frame_rate} (> 0)."
            )
        if not 0 <= self.fmin < self.fmax <= self.audio_rate / 2:
            raise ValueError(
                f"Invalid value for 'fmax': need 0 <= fmin ({self.fmin}) < fmax ({self.fmax}) <= "
                f"audio_rate / 2 ({self.audio_rate / 2})."
            )

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> MelConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=float) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=float) / 2595.0) - 1.0)


def mel_filterbank(config: MelConfig) -> np.ndarray:
    """Triangular HTK-mel filters ``(n_mels, n_fft // 2 + 1)``, each of unit area (Slaney norm)."""
    freqs = np.fft.rfftfreq(config.n_fft, 1.0 / config.audio_rate)
    edges = _mel_to_hz(
        np.linspace(_hz_to_mel(config.fmin), _hz_to_mel(config.fmax), config.n_mels + 2)
    )
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None] - lower) / (centre - lower)
    falling = (upper - freqs[None]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= 2.0 / (upper - lower)
    return weights.astype(np.float32)


def log_mel(
    audio: np.ndarray, config: MelConfig, n_frames: int | None = None, start_s: float = 0.0
) -> np.ndarray:
    """Log-mel spectrogram ``(n_mels, n_frames)`` float32 of mono audio at ``config.audio_rate``.

    Frame ``k`` is centred on ``start_s + k / frame_rate`` seconds of ``audio`` (audio before 0 or
    past the end counts as silence). ``n_frames`` defaults to the whole audio. Values are
    ``log10(max(power, 1e-10))`` of the Hann-windowed power spectrum through the mel filters.
    """
    audio = as_mono(audio)
    if n_frames is None:
        n_frames = int(np.floor((len(audio) / config.audio_rate - start_s) * config.frame_rate))
    n_frames = max(int(n_frames), 0)
    half = config.n_fft // 2
    centres = np.round(
        (start_s + np.arange(n_frames) / config.frame_rate) * config.audio_rate
    ).astype(np.int64)
    lo = int(centres[0]) - half if n_frames else 0
    hi = int(centres[-1]) + half + 1 if n_frames else 0
    padded = np.zeros(max(hi - lo, 0), dtype=np.float32)
    src_lo, src_hi = max(lo, 0), min(hi, len(audio))
    if src_hi > src_lo:
        padded[src_lo - lo : src_hi - lo] = audio[src_lo:src_hi]
    window = signal.get_window("hann", config.n_fft).astype(np.float32)
    filters = mel_filterbank(config)
    out = np.empty((config.n_mels, n_frames), dtype=np.float32)
    offsets = np.arange(config.n_fft)
    for first in range(0, n_frames, _BLOCK):
        starts = centres[first : first + _BLOCK] - half - lo
        frames = padded[starts[:, None] + offsets[None]] * window
        power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
        out[:, first : first + len(starts)] = np.log10(np.maximum(filters @ power.T, _FLOOR))
    return out


def as_mono(audio: np.ndarray) -> np.ndarray:
    """``audio`` as float32 mono samples ``(n,)``; raise ValueError for any other shape."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(
            f"Invalid shape for 'audio': expected mono samples (n,), got {audio.shape}. Average "
            "the channels first."
        )
    return audio


def resample_audio(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample audio (along its first axis) from ``rate_in`` to ``rate_out`` Hz, as float32."""
    if int(rate_in) == int(rate_out):
        return np.asarray(audio, dtype=np.float32)
    ratio = Fraction(int(rate_out), int(rate_in))
    return signal.resample_poly(audio, ratio.numerator, ratio.denominator).astype(np.float32)


def read_wav(path: str | os.PathLike, rate: int = AUDIO_RATE) -> np.ndarray:
    """Read a WAV file as mono float32 in [-1, 1] at ``rate`` (resampled with resample_poly).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it is not a readable WAV file, or empty.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Audio file not found: '{path}'. Give the stimulus audio folder written with the "
            "recording (e.g. 'bci-app simulate --task listening' writes <name>_stimuli/)."
        )
    try:
        file_rate, data = wavfile.read(path)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(
            f"Unreadable audio file '{path}': {str(err).rstrip('.')}. Give 16-bit PCM or float "
            "WAV files."
        ) from None
    if data.size == 0:
        raise ValueError(f"Invalid audio file '{path}': it holds no samples.")
    if np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.float64) / float(np.iinfo(data.dtype).max)
    data = np.asarray(data, dtype=np.float64)
    if data.ndim == 2:
        data = data.mean(axis=1)
    return resample_audio(data, file_rate, rate)


def mel_segments(
    full_mel: np.ndarray, starts_s: np.ndarray, frame_rate: float, n: int
) -> np.ndarray:
    """Cut ``(len(starts), n_mels, n)`` segments of a whole-recording log-mel (silence outside)."""
    first = np.round(np.asarray(starts_s) * frame_rate).astype(np.int64)
    index = first[:, None] + np.arange(n)[None]
    inside = (index >= 0) & (index < full_mel.shape[1])
    out = full_mel[:, np.clip(index, 0, full_mel.shape[1] - 1)].transpose(1, 0, 2)
    out[~np.broadcast_to(inside[:, None, :], out.shape)] = np.log10(1e-10)
    return np.ascontiguousarray(out, dtype=np.float32)
