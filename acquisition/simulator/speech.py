"""Speech audio for the listening task: espeak-ng synthesis, or a documented noise stand-in.

- ``"espeak-ng"``: each word is synthesized on its own by Debian's ``espeak-ng`` (voice
  ``en-us``, 170 words/min) through ``espeak-ng --stdout``, resampled from 22.05 kHz to
  :data:`AUDIO_SFREQ`, trimmed of leading/trailing silence and scaled to a fixed RMS, so word
  onsets are exact when words are concatenated.
- ``"noise"`` (when espeak-ng is not installed): a speech-like stand-in per word, deterministic
  from the word's text: white noise shaped by three formant-like band-passes whose centres depend
  on the word, amplitude-modulated at the syllable rate (one sin^2 bump per vowel group, 0.12 s +
  65 ms per letter in all).

:func:`band_envelopes` turns audio into the features the simulated auditory cortex follows:
the Hilbert envelopes of :data:`AUDIO_BANDS` (compressed with exponent 0.6) and the half-wave
rectified derivative of the broadband envelope (acoustic edges), at the brain data's rate.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import zlib
from fractions import Fraction
from functools import lru_cache

import numpy as np
from scipy import fft, signal

logger = logging.getLogger(__name__)

#: Sampling rate of the stimulus audio kept in the ground truth (Hz).
AUDIO_SFREQ = 16000
#: Frequency bands (Hz) whose envelopes drive the auditory sources (low to high).
AUDIO_BANDS = ((150.0, 600.0), (600.0, 1500.0), (1500.0, 3500.0), (3500.0, 7500.0))
ENGINES = ("auto", "espeak-ng", "noise")
_WORD_RMS = 0.1
_ESPEAK = "espeak-ng"


def espeak_available() -> bool:
    """Whether the ``espeak-ng`` executable is on the PATH."""
    return shutil.which(_ESPEAK) is not None


def resolve_engine(engine: str) -> str:
    """Return the speech engine to use for ``engine`` ("auto" picks espeak-ng when installed)."""
    if engine not in ENGINES:
        raise ValueError(
            f"Invalid value for 'speech_engine': {engine!r}. Use one of {', '.join(ENGINES)}."
        )
    if engine == "auto":
        if espeak_available():
            return "espeak-ng"
        logger.warning(
            "espeak-ng is not installed: the listening task uses speech-like modulated noise. "
            "Install it (Debian/Ubuntu: apt-get install espeak-ng) for real synthesized speech."
        )
        return "noise"
    if engine == "espeak-ng" and not espeak_available():
        raise RuntimeError(
            "speech_engine='espeak-ng' but the espeak-ng executable is not on the PATH. Install "
            "it (Debian/Ubuntu: apt-get install espeak-ng) or use speech_engine='noise'."
        )
    return engine


def synthesize_word(word: str, engine: str) -> np.ndarray:
    """Return the audio of one word at :data:`AUDIO_SFREQ`, float32, trimmed, fixed RMS.

    Parameters
    ----------
    word : str
        The word (letters, digits, apostrophes).
    engine : "espeak-ng" | "noise"
        How to make the audio (see the module docstring).
    """
    return _synthesize_cached(str(word), engine).copy()


@lru_cache(maxsize=8192)
def _synthesize_cached(word: str, engine: str) -> np.ndarray:
    audio = _espeak(word) if engine == "espeak-ng" else _noise_word(word)
    audio = _trim(audio)
    rms = np.sqrt(np.mean(audio**2)) if audio.size else 0.0
    if rms > 0:
        audio = audio * (_WORD_RMS / rms)
    audio = audio.astype(np.float32)
    audio.setflags(write=False)
    return audio


def _espeak(word: str) -> np.ndarray:
    result = subprocess.run(
        [_ESPEAK, "--stdout", "-v", "en-us", "-s", "170", word],
        capture_output=True,
        check=False,
        timeout=30,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"espeak-ng failed on {word!r} (exit {result.returncode}): "
            f"{result.stderr.decode(errors='replace').strip()}"
        )
    rate, pcm = _parse_wav(result.stdout)
    ratio = Fraction(AUDIO_SFREQ, rate)
    return signal.resample_poly(pcm, ratio.numerator, ratio.denominator)


def _parse_wav(raw: bytes) -> tuple[int, np.ndarray]:
    """Parse espeak-ng's streamed 16-bit mono WAV (its size fields are placeholders)."""
    if raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise RuntimeError("espeak-ng did not write a WAV stream (missing RIFF/WAVE header).")
    pos, rate, data = 12, None, None
    while pos + 8 <= len(raw):
        chunk, size = raw[pos : pos + 4], int.from_bytes(raw[pos + 4 : pos + 8], "little")
        if chunk == b"fmt ":
            fmt = raw[pos + 8 : pos + 24]
            channels = int.from_bytes(fmt[2:4], "little")
            rate = int.from_bytes(fmt[4:8], "little")
            bits = int.from_bytes(fmt[14:16], "little")
            if channels != 1 or bits != 16:
                raise RuntimeError(f"espeak-ng wrote {channels} channel(s) of {bits} bits.")
        elif chunk == b"data":
            data = raw[pos + 8 :]  # streamed: the size field is not the real length
            break
        pos += 8 + size
    if rate is None or data is None:
        raise RuntimeError("espeak-ng's WAV stream has no fmt or data chunk.")
    usable = len(data) - len(data) % 2
    return rate, np.frombuffer(data[:usable], dtype="<i2").astype(np.float64) / 32768.0


def _trim(audio: np.ndarray, threshold: float = 0.02) -> np.ndarray:
    """Drop leading/trailing samples quieter than ``threshold`` of the peak (5 ms margin)."""
    if audio.size == 0:
        return audio
    loud = np.flatnonzero(np.abs(audio) > threshold * np.abs(audio).max())
    if loud.size == 0:
        return audio[:0]
    margin = int(0.005 * AUDIO_SFREQ)
    return audio[max(loud[0] - margin, 0) : loud[-1] + margin + 1]


def _noise_word(word: str) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(word.lower().encode()))
    n = int((0.12 + 0.065 * len(word)) * AUDIO_SFREQ)
    noise = rng.standard_normal(n)
    audio = np.zeros(n)
    for centre in rng.uniform([300, 900, 2200], [900, 2200, 3800]):
        sos = signal.butter(
            2, (centre / 1.2, centre * 1.2), "bandpass", fs=AUDIO_SFREQ, output="sos"
        )
        audio += signal.sosfilt(sos, noise)
    vowel_groups = sum(
        1
        for i, c in enumerate(word.lower())
        if c in "aeiouy" and (i == 0 or word.lower()[i - 1] not in "aeiouy")
    )
    n_syllables = max(1, vowel_groups)
    phase = np.linspace(0.0, n_syllables * np.pi, n, endpoint=False)
    return audio * np.sin(phase) ** 2


def band_envelopes(audio: np.ndarray, sfreq: float) -> np.ndarray:
    """Return auditory features of ``audio`` at the brain rate ``sfreq``, shape (n, n_bands + 1).

    Columns: the compressed Hilbert envelope of each band of :data:`AUDIO_BANDS`, then the
    half-wave rectified derivative of their sum (scaled to the same range). ``n`` is
    ``ceil(len(audio) * sfreq / AUDIO_SFREQ)``.
    """
    audio = np.asarray(audio, dtype=np.float64)
    ratio = Fraction(float(sfreq)).limit_denominator(1000) / AUDIO_SFREQ
    n_out = int(np.ceil(audio.shape[0] * float(ratio)))
    lowpass = signal.butter(2, 30.0, fs=AUDIO_SFREQ, output="sos")
    columns = []
    for low, high in AUDIO_BANDS:
        sos = signal.butter(3, (low, high), "bandpass", fs=AUDIO_SFREQ, output="sos")
        band = signal.sosfilt(sos, audio)
        envelope = np.abs(signal.hilbert(band, N=fft.next_fast_len(band.shape[0])))[: band.shape[0]]
        envelope = np.maximum(signal.sosfilt(lowpass, envelope), 0.0) ** 0.6
        resampled = signal.resample_poly(envelope, ratio.numerator, ratio.denominator)
        columns.append(np.maximum(resampled[:n_out], 0.0))
    bands = np.stack(columns, axis=1)
    broadband = bands.sum(axis=1)
    edges = np.maximum(np.diff(broadband, prepend=0.0), 0.0) * (0.05 * float(sfreq))
    return np.concatenate([bands, edges[:, None]], axis=1)
