"""The audio a listening recording's participant heard, on the recording's time line.

:func:`audio_track` rebuilds one mono 16 kHz track per recording, sample 0 at the recording's
first sample (the simulator's ``time_origin: "first sample"``), from, in this order:

1. ``recording.meta["ground_truth"]`` of a simulated listening session (in memory);
2. a stimulus folder (``--audio DIR``, or ``<recording stem>_stimuli/`` beside the file) holding
   ``stimuli.json`` (sentence onsets and ``sentences/NNNN.wav``, as
   :func:`acquisition.simulator.listening.write_stimulus_audio` writes it);
3. a folder of per-word files (``DIR/words/<word>.wav`` or ``DIR/<word>.wav``), each placed at
   its ``word:<word>`` marker (real recordings whose markers name the word).

Every ``word:`` marker must be covered by audio, or the build fails naming the word and time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from acquisition.recording import Recording, parse_marker
from bci_app.speech.audio import AUDIO_RATE, read_wav

#: A word marker may lie this far (s) outside its sentence's audio span and still count as heard.
ONSET_TOLERANCE_S = 0.05


@dataclass
class AudioTrack:
    """Heard audio on a recording's time line.

    Attributes
    ----------
    audio : array, float32
        Mono samples at :data:`~bci_app.speech.audio.AUDIO_RATE`; sample 0 is at ``origin``.
    origin : float
        Recording time (s) of audio sample 0 (the recording's first sample time).
    spans : list of (float, float)
        Recording-time spans that hold stimulus audio.
    source : str
        Where the audio came from (for messages and provenance).
    """

    audio: np.ndarray
    origin: float
    spans: list[tuple[float, float]]
    source: str


def _place(track: np.ndarray, start_s: float, piece: np.ndarray) -> None:
    first = round(start_s * AUDIO_RATE)
    if first < 0:
        piece, first = piece[-first:], 0
    piece = piece[: max(len(track) - first, 0)]
    track[first : first + len(piece)] += piece


def _from_sentences(
    sentences: list[dict], n_samples: int, origin: float, load
) -> tuple[np.ndarray, list]:
    track = np.zeros(n_samples, dtype=np.float32)
    spans = []
    for sentence in sentences:
        audio = load(sentence)
        _place(track, float(sentence["onset"]), audio)
        spans.append((origin + float(sentence["onset"]), origin + float(sentence["offset"])))
    return track, spans


def _stimulus_dir(label: str, audio_dir: str | Path | None) -> Path | None:
    if audio_dir is not None:
        path = Path(audio_dir)
        if not path.is_dir():
            raise FileNotFoundError(
                f"Invalid value for 'audio': '{path}' is not a folder. Give the stimulus folder "
                "(stimuli.json + sentences/, or words/<word>.wav)."
            )
        return path
    guess = Path(label)
    guess = guess.with_name(guess.name.split(".")[0] + "_stimuli")
    return guess if guess.is_dir() else None


def audio_track(
    recording: Recording, label: str, audio_dir: str | Path | None = None
) -> AudioTrack:
    """Rebuild the heard audio of ``recording`` (module docstring) and check its word markers.

    Raises
    ------
    FileNotFoundError
        No audio source found, or a file named by ``stimuli.json`` is missing.
    ValueError
        An audio file is unreadable, or a ``word:`` marker has no audio.
    """
    origin = float(recording.timestamps[0])
    n_samples = int(np.ceil((recording.duration + 1.0) * AUDIO_RATE))
    truth = (recording.meta or {}).get("ground_truth") or {}
    folder = _stimulus_dir(label, audio_dir)
    if folder is None and truth.get("task") == "listening":
        track, spans = _from_sentences(
            truth["sentences"], n_samples, origin, lambda s: np.asarray(s["audio"], np.float32)
        )
        result = AudioTrack(track, origin, spans, "simulator ground truth")
    elif folder is not None and (folder / "stimuli.json").is_file():
        listing = json.loads((folder / "stimuli.json").read_text())
        track, spans = _from_sentences(
            listing["sentences"], n_samples, origin, lambda s: read_wav(folder / s["file"])
        )
        result = AudioTrack(track, origin, spans, str(folder))
    elif folder is not None:
        result = _from_words(recording, folder, n_samples, origin)
    else:
        raise FileNotFoundError(
            f"No stimulus audio for '{label}': give the folder with --audio DIR (stimuli.json + "
            f"sentences/, or words/<word>.wav), or keep '<name>_stimuli/' beside the recording "
            "('bci-app simulate --task listening --out X.xdf' writes X_stimuli/)."
        )
    check_word_audio(recording, result, label)
    return result


def _from_words(recording: Recording, folder: Path, n_samples: int, origin: float) -> AudioTrack:
    track = np.zeros(n_samples, dtype=np.float32)
    spans, cache = [], {}
    for marker in recording.markers_of("word"):
        word = parse_marker(marker.value)[1]
        name = word.replace("/", "_").replace("\\", "_")
        if name not in cache:
            candidates = [folder / "words" / f"{name}.wav", folder / f"{name}.wav"]
            found = next((p for p in candidates if p.is_file()), None)
            if found is None:
                raise ValueError(
                    f"Word marker with no audio: 'word:{word}' at "
                    f"{marker.timestamp - origin:.2f} s has no file {candidates[0]} or "
                    f"{candidates[1]}. Add the word's audio, or remove the marker."
                )
            cache[name] = read_wav(found)
        start = marker.timestamp - origin
        _place(track, start, cache[name])
        spans.append((marker.timestamp, marker.timestamp + len(cache[name]) / AUDIO_RATE))
    return AudioTrack(track, origin, spans, str(folder))


def check_word_audio(recording: Recording, track: AudioTrack, label: str) -> None:
    """Raise ValueError if a ``word:`` marker lies outside every span of stimulus audio."""
    words = recording.markers_of("word")
    if not words:
        raise ValueError(
            f"Invalid recording '{label}': it has no word-onset markers ('word:<w>'), so it "
            "cannot train or evaluate a speech decoder. Record a listening session."
        )
    if not track.spans:
        raise ValueError(f"Invalid stimulus audio for '{label}': it lists no sentence.")
    starts = np.array([s for s, _ in track.spans]) - ONSET_TOLERANCE_S
    ends = np.array([e for _, e in track.spans]) + ONSET_TOLERANCE_S
    times = np.array([m.timestamp for m in words])
    covered = ((times[:, None] >= starts[None]) & (times[:, None] <= ends[None])).any(axis=1)
    if not covered.all():
        bad = [words[i] for i in np.flatnonzero(~covered)[:5]]
        shown = ", ".join(
            f"{parse_marker(m.value)[1]!r} at {m.timestamp - track.origin:.2f} s" for m in bad
        )
        raise ValueError(
            f"Word markers with no audio in '{label}': {int((~covered).sum())} of {len(words)} "
            f"(e.g. {shown}) fall outside the stimulus audio from {track.source}. Give the "
            "stimulus folder of this very recording (--audio DIR)."
        )
