"""Listening task of the simulator: heard sentences and auditory-cortex responses to them.

Per sentence: 1.0-1.5 s of silence, then the sentence's words (:func:`sentence_words`), each
synthesized on its own (:mod:`acquisition.simulator.speech`) and joined with 40-120 ms gaps, so
every word onset is exact. Markers: ``sentence_start:<text>`` at the first word's onset,
``word:<word>`` at each word's acoustic onset, ``sentence_end:<text>`` at the last word's end.
Word onsets fall on data samples; the audio of each sentence (from its onset to its end) is kept
at :data:`~acquisition.simulator.speech.AUDIO_SFREQ` in the ground truth.

Brain response: a temporal response function (TRF) per auditory feature, convolved with the
feature (:func:`~acquisition.simulator.speech.band_envelopes`: four band envelopes and the
acoustic-edge signal) and projected through Heschl's gyrus dipoles of both hemispheres (right at
90 %). Band ``b``'s TRF is ``0.6 g(50 + 4b ms, 12 ms) - g(100 + 8b ms, 20 ms) + 0.6 g(190 + 10b
ms, 35 ms)`` (P1-N1-P2) through band ``b``'s tonotopic dipole; the edge TRF ``-1.5 g(100 ms,
20 ms) + 0.75 g(200 ms, 40 ms)`` goes through the mean of a hemisphere's band dipoles. Because
each band has its own dipole and latency, the brain signal carries spectral as well as envelope
information for a speech decoder to find.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import signal
from scipy.io import wavfile

from acquisition.simulator.anatomy import N_AUDIO_BANDS
from acquisition.simulator.events import Event, Trial
from acquisition.simulator.speech import AUDIO_SFREQ, band_envelopes, synthesize_word

_PUNCTUATION = "\"'.,;:!?()[]{}-_`*"
#: Length of the temporal response functions (seconds).
TRF_LENGTH = 0.5


def sentence_words(text: str) -> list[str]:
    """Split a sentence into the words that are spoken and marked (outer punctuation removed).

    >>> sentence_words("Hello, world - again.")
    ['Hello', 'world', 'again']
    """
    words = (token.strip(_PUNCTUATION) for token in text.split())
    return [word for word in words if word]


def _gauss(t: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((t - centre) / width) ** 2)


class SpeechResponses:
    """Temporal response functions and auditory sensor patterns of one subject.

    Parameters
    ----------
    auditory_patterns : array, shape (n_channels, 2 * N_AUDIO_BANDS)
        Fixed patterns of the auditory dipoles, left-hemisphere bands then right.
    sfreq : float
        Sampling rate (Hz).
    """

    def __init__(self, auditory_patterns: np.ndarray, sfreq: float) -> None:
        self.sfreq = float(sfreq)
        lags = np.arange(round(TRF_LENGTH * self.sfreq)) / self.sfreq
        kernels = [
            0.6 * _gauss(lags, 0.05 + 0.004 * b, 0.012)
            - _gauss(lags, 0.10 + 0.008 * b, 0.02)
            + 0.6 * _gauss(lags, 0.19 + 0.01 * b, 0.035)
            for b in range(N_AUDIO_BANDS)
        ]
        kernels.append(-1.5 * _gauss(lags, 0.1, 0.02) + 0.75 * _gauss(lags, 0.2, 0.04))
        # times the sampling interval: the sum over lags approximates the convolution integral,
        # so source amplitudes do not depend on the sampling rate
        self.kernels = np.stack(kernels, axis=1) / self.sfreq  # (n_lags, n_features)
        left = auditory_patterns[:, :N_AUDIO_BANDS]
        right = 0.9 * auditory_patterns[:, N_AUDIO_BANDS:]
        self.pattern = np.concatenate(
            [left, left.mean(axis=1, keepdims=True), right, right.mean(axis=1, keepdims=True)],
            axis=1,
        ).T  # (2 * (n_bands + 1), n_channels)

    def response(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (source time courses, pattern) for auditory ``features`` ``(n, n_bands + 1)``."""
        courses = signal.oaconvolve(features, self.kernels, mode="full", axes=0)
        return np.concatenate([courses, courses], axis=1), self.pattern


class ListeningTask:
    """Schedules listening trials: sentence audio, word markers, responses, ground truth.

    Parameters
    ----------
    sentences : sequence of str
        Sentences to hear, in a seeded random order, reshuffled when exhausted.
    responses : SpeechResponses
        TRFs and patterns.
    rng : numpy.random.Generator
        Session randomness (order, gaps, pauses).
    engine : "espeak-ng" | "noise"
        Speech engine (already resolved).
    """

    name = "listening"

    def __init__(
        self,
        sentences: list[str],
        responses: SpeechResponses,
        rng: np.random.Generator,
        engine: str,
    ) -> None:
        usable = [s for s in sentences if sentence_words(s)]
        if not usable:
            raise ValueError(
                "Invalid value for 'sentences': none of them holds a word to speak. Give "
                "sentences with letters or digits."
            )
        self.sentences = usable
        self.responses = responses
        self.sfreq = responses.sfreq
        self.engine = engine
        self._rng = rng
        self._order: list[int] = []

    def _next_sentence(self) -> str:
        if not self._order:
            self._order = list(self._rng.permutation(len(self.sentences)))
        return self.sentences[self._order.pop(0)]

    def trial(self, start: int) -> Trial:
        """Schedule the next sentence from sample ``start`` on."""
        sfreq, rng = self.sfreq, self._rng
        text = self._next_sentence()
        onset = start + round(rng.uniform(1.0, 1.5) * sfreq)
        per_sample = AUDIO_SFREQ / sfreq
        placed, cursor = [], onset
        for word in sentence_words(text):
            audio = synthesize_word(word, self.engine)
            length = int(np.ceil(audio.shape[0] / per_sample))
            placed.append((word, cursor, cursor + length, audio))
            cursor += length + round(rng.uniform(0.04, 0.12) * sfreq)
        end = placed[-1][2]
        sentence_audio = np.zeros(round((end - onset) * per_sample) + 1, dtype=np.float32)
        for _, first, _, audio in placed:
            index = round((first - onset) * per_sample)
            piece = audio[: sentence_audio.shape[0] - index]
            sentence_audio[index : index + piece.shape[0]] = piece
        waveform, pattern = self.responses.response(band_envelopes(sentence_audio, sfreq))
        markers = [(onset, f"sentence_start:{text}")]
        markers += [(first, f"word:{word}") for word, first, _, _ in placed]
        markers.append((end, f"sentence_end:{text}"))
        truth = {
            "text": text,
            "onset": onset / sfreq,
            "offset": end / sfreq,
            "words": [
                {"word": word, "onset": first / sfreq, "offset": last / sfreq}
                for word, first, last, _ in placed
            ],
            "audio": sentence_audio,
        }
        stop = end + round(0.5 * sfreq)
        return Trial(start, stop, markers, [Event(onset, waveform, pattern)], truth, [(onset, end)])


def write_stimulus_audio(ground_truth: dict, directory: str | Path) -> list[Path]:
    """Write the heard audio of a listening session as 16-bit WAV files, for speech decoders.

    Writes ``sentences/<i>.wav`` (sentence ``i`` from its onset to its end),
    ``words/<word>.wav`` (each distinct word as first heard; the name is the ``word:`` marker's
    text with path separators replaced) and ``stimuli.json`` (sentences, words, onsets in
    seconds and file names).

    Parameters
    ----------
    ground_truth : dict
        ``recording.meta["ground_truth"]`` of a simulated listening session.
    directory : path-like
        Output folder (created if missing).

    Returns
    -------
    paths : list of Path
        Every file written.
    """
    if ground_truth.get("task") != "listening":
        raise ValueError(
            "Invalid value for 'ground_truth': it is not from a listening session (task="
            f"{ground_truth.get('task')!r}). Pass recording.meta['ground_truth'] of a "
            "Simulator(..., task='listening') recording."
        )
    root = Path(directory)
    (root / "sentences").mkdir(parents=True, exist_ok=True)
    (root / "words").mkdir(exist_ok=True)
    rate = int(ground_truth["audio_sfreq"])
    paths, index, seen = [], [], set()
    for i, sentence in enumerate(ground_truth["sentences"]):
        audio = np.asarray(sentence["audio"], dtype=np.float64)
        paths.append(_write_wav(root / "sentences" / f"{i:04d}.wav", audio, rate))
        words = []
        for word in sentence["words"]:
            name = word["word"].replace("/", "_").replace("\\", "_")
            first = round((word["onset"] - sentence["onset"]) * rate)
            last = round((word["offset"] - sentence["onset"]) * rate)
            if name not in seen:
                seen.add(name)
                paths.append(_write_wav(root / "words" / f"{name}.wav", audio[first:last], rate))
            words.append({**word, "file": f"words/{name}.wav"})
        index.append(
            {
                "text": sentence["text"],
                "onset": sentence["onset"],
                "offset": sentence["offset"],
                "file": f"sentences/{i:04d}.wav",
                "words": words,
            }
        )
    listing = root / "stimuli.json"
    listing.write_text(json.dumps({"audio_sfreq": rate, "sentences": index}, indent=1))
    return [*paths, listing]


def _write_wav(path: Path, audio: np.ndarray, rate: int) -> Path:
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
    wavfile.write(path, rate, pcm)
    return path
