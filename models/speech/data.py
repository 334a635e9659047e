"""Speech datasets from listening recordings: brain windows paired with the audio heard.

:func:`build_speech_dataset` runs each recording through the live path's
:class:`~bci_app.processing.preprocessing.Preprocessor` (0.1 Hz high-pass, 120 Hz, robust scaler
fitted on
that recording) and cuts brain windows with the live
:class:`~bci_app.processing.windowing.EventWindower`: 3 s, baseline on the first 0.5 s, clamp +-20,
shifted
150 ms after the audio segment they are paired with (the brain answers late). Audio segments are
``[anchor - 0.5, anchor + 2.5)`` s of the heard audio (:mod:`bci_app.speech.heard`) as feature
frames at 120 Hz: log-mel, or a local pretrained model's (:mod:`bci_app.speech.extractors`).
Anchors:

- ``word`` windows: every ``word:<w>`` marker (evaluation, candidates; as the paper evaluates);
- ``train`` windows: every 0.5 s (training), kept when at least :data:`MIN_SPEECH_FRACTION` of
  their audio is speech.

Each window belongs to the sentence around its anchor (``sentence_start``/``sentence_end``
markers, or pauses > 2 s between words); a training window that also reaches into another
sentence records it in ``overlaps`` so a split can keep test audio out of training.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from acquisition.recording import Marker, Recording, parse_marker
from bci_app.processing.preprocessing import PreprocessConfig, fit_scaler, preprocess_recording
from bci_app.processing.windowing import EventWindower
from bci_app.speech.audio import MelConfig
from bci_app.speech.extractors import AudioFeatures, LogMelFeatures
from bci_app.speech.heard import audio_track
from bci_app.splits import split_by_sentence
from models.data_sources import check_same_channels, load_recording, pick_channels, subset_channels
from models.speech.model import SpeechClipConfig

#: Hop of the training windows (s).
TRAIN_HOP_S = 0.5
#: Smallest share of speech frames in a training window's audio.
MIN_SPEECH_FRACTION = 0.25
#: Log-mel value under which a frame counts as silence (log10 power).
SILENCE_LOG_MEL = -6.0
#: Words more than this many seconds apart start a new sentence when no sentence markers say.
SENTENCE_PAUSE_S = 2.0


def window_spec(config: SpeechClipConfig) -> dict:
    """The brain window of the bundle manifest: span relative to the audio anchor, and more."""
    shift = config.brain_shift
    return {
        "tmin": config.tmin + shift,
        "tmax": config.tmax + shift,
        "sfreq": config.sfreq,
        "baseline": [None, config.tmin + shift + config.baseline_s],
        "clamp": config.clamp,
        "audio_tmin": config.tmin,
        "audio_tmax": config.tmax,
        "brain_shift": shift,
    }


def brain_windower(spec: dict, marker_filter=None) -> EventWindower:
    """An event windower cutting the manifest's brain windows around anchors."""
    return EventWindower(
        spec["tmin"],
        spec["tmax"],
        spec["sfreq"],
        baseline=tuple(spec["baseline"]),
        clamp=spec["clamp"],
        marker_filter=marker_filter,
        history_s=60.0,
    )


@dataclass
class SpeechDataset:
    """Brain windows and the features of their audio, from one or more recordings.

    Attributes
    ----------
    brain : array (n, n_chans, n_times) float32
    mel : array (n, n_features, n_times) float32
        Audio features (log-mel, or a pretrained model's: :attr:`features`).
    kind : array of str ("word" or "train")
    words : list of str
        Word at the anchor (``word`` windows) or ``""``.
    sentence : array of int
        Sentence index (into :attr:`sentences`) of each window.
    overlaps : list of tuple of int
        Other sentences each window's span reaches into.
    subject, recording : arrays of int
    anchors : array of float
        Anchor time (s from the recording's first sample).
    sentences : list of str
    """

    brain: np.ndarray
    mel: np.ndarray
    kind: np.ndarray
    words: list[str]
    sentence: np.ndarray
    overlaps: list[tuple[int, ...]]
    subject: np.ndarray
    recording: np.ndarray
    anchors: np.ndarray
    sentences: list[str]
    channels: object
    sfreq_in: float
    preprocessing: PreprocessConfig
    features: AudioFeatures
    subject_labels: list
    stats: dict
    provenance: list[dict] = field(default_factory=list)

    @property
    def n_chans(self) -> int:
        """Channels the decoder reads."""
        return self.brain.shape[1]

    @property
    def n_subjects(self) -> int:
        """Distinct subjects."""
        return len(self.subject_labels)

    def split(self, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
        """Window indices per split (``train``/``val``/``test``) and kind, split by sentence.

        Training windows that reach into a sentence of another split are left out.
        """
        parts = split_by_sentence(self.sentences, val_fraction=0.15, test_fraction=0.15, seed=seed)
        empty = [key for key in ("train", "val", "test") if len(parts[key]) == 0]
        if empty:
            raise ValueError(
                f"Too little data: {len(self.sentences)} distinct sentences leave the "
                f"{'/'.join(empty)} split(s) empty; at least 3 are needed. Record longer."
            )
        owner = np.empty(len(self.sentences), dtype=object)
        for key in ("train", "val", "test"):
            owner[parts[key]] = key
        out = {}
        for key in ("train", "val", "test"):
            mine = np.array([owner[s] == key for s in self.sentence], dtype=bool)
            clean = np.array([all(owner[o] == key for o in ov) for ov in self.overlaps], bool)
            out[key] = {
                "train": np.flatnonzero(mine & clean & (self.kind == "train")),
                "word": np.flatnonzero(mine & (self.kind == "word")),
            }
        return out


def sentence_spans(recording: Recording) -> list[tuple[float, float, str]]:
    """``(start, end, text)`` per sentence, from sentence markers or pauses between words."""
    spans, opened = [], None
    for marker in recording.markers:
        kind, text = parse_marker(marker.value)
        if kind == "sentence_start":
            opened = (marker.timestamp, text)
        elif kind == "sentence_end" and opened is not None:
            spans.append((opened[0], marker.timestamp, opened[1]))
            opened = None
    if spans:
        return spans
    words = recording.markers_of("word")
    times = np.array([m.timestamp for m in words])
    breaks = np.flatnonzero(np.diff(times) > SENTENCE_PAUSE_S) + 1
    out = []
    for group in np.split(np.arange(len(words)), breaks):
        text = " ".join(parse_marker(words[i].value)[1] for i in group)
        out.append((times[group[0]], times[group[-1]] + 1.0, text))
    return out


def build_speech_dataset(
    recordings: Sequence[str | os.PathLike | Recording],
    config: SpeechClipConfig,
    *,
    audio_dirs: Sequence[str | os.PathLike | None] | None = None,
    subject_ids: Sequence[Hashable] | None = None,
    picks: Sequence[str] | None = None,
    train_windows: bool = True,
    features: AudioFeatures | None = None,
    anti_alias: str = "minphase",
) -> SpeechDataset:
    """Build a speech dataset (module docstring) from listening recordings.

    Parameters
    ----------
    recordings : sequence of path | Recording
    config : SpeechClipConfig
        Window, rate and mel bands.
    audio_dirs : sequence of path | None
        Stimulus folder per recording (None entries: ground truth or ``<stem>_stimuli``).
    subject_ids : sequence | None
        One subject label per recording.
    picks : sequence of str | None
        Channel types or names (default: every brain channel).
    train_windows : bool
        Also cut the 0.5 s-hop training windows.
    features : AudioFeatures | None
        Audio feature extractor (default: log-mel with ``config.n_mels`` bands).
    anti_alias : {"minphase", "linear"}
        Anti-alias FIR of the resampler (:class:`PreprocessConfig`); the bundle records it, so
        live decoding runs the same filter.
    """
    if isinstance(recordings, str | os.PathLike | Recording) or len(recordings) == 0:
        raise ValueError(
            "Invalid value for 'recordings': expected a non-empty list of files or Recordings, "
            f"got {type(recordings).__name__}. Pass a list, e.g. [path]."
        )
    audio_dirs = list(audio_dirs) if audio_dirs is not None else [None] * len(recordings)
    if len(audio_dirs) not in (1, len(recordings)):
        raise ValueError(
            f"Invalid value for 'audio': {len(audio_dirs)} folders for {len(recordings)} "
            "recordings. Give one stimulus folder per recording (or one for a single recording)."
        )
    if subject_ids is not None and len(subject_ids) != len(recordings):
        raise ValueError(
            f"Invalid value for 'subject_ids': {len(subject_ids)} labels for {len(recordings)} "
            "recordings. Give one subject label per recording."
        )
    labels = list(dict.fromkeys(subject_ids)) if subject_ids is not None else [0]
    if features is None:
        features = LogMelFeatures(MelConfig(frame_rate=config.sfreq, n_mels=config.n_mels))
    if features.frame_rate != config.sfreq or features.n_features != config.n_mels:
        raise ValueError(
            f"Invalid audio features: {features.n_features} features at {features.frame_rate} Hz, "
            f"but the model expects {config.n_mels} at {config.sfreq} Hz. Set the model config's "
            "n_mels to the extractor's n_features."
        )
    parts, reference, sentences = [], None, []
    for index, item in enumerate(recordings):
        recording, label, provenance = load_recording(item)
        names = pick_channels(recording, picks, label)
        if reference is None:
            reference = (recording, label, names)
        else:
            names = check_same_channels(reference, recording, label, names)
        track = audio_track(recording, label, audio_dirs[index if len(audio_dirs) > 1 else 0])
        subject = labels.index(subject_ids[index]) if subject_ids is not None else 0
        pre = replace(PreprocessConfig.speech(recording.sfreq, names), anti_alias=anti_alias)
        part = _recording_windows(
            recording, pre, track, config, features, len(sentences), train_windows
        )
        sentences += part.pop("sentences")
        parts.append({**part, "subject": subject, "recording": index, "label": label})
        provenance["audio"] = track.source
        parts[-1]["provenance"] = provenance
    first = reference[0].channels
    channels = subset_channels(first, [first.names.index(n) for n in reference[2]])
    return _assemble(parts, sentences, channels, features, labels)


def _assemble(parts, sentences, channels, features, labels) -> SpeechDataset:
    configs = [p["config"] for p in parts]
    center = np.median([c.scaler_center for c in configs], axis=0)
    scale = np.median([c.scaler_scale for c in configs], axis=0)
    cat = lambda key: np.concatenate([p[key] for p in parts])  # noqa: E731
    n = [len(p["kind"]) for p in parts]
    stats = {
        "n_windows": int(sum(n)),
        "n_word_windows": int(sum((p["kind"] == "word").sum() for p in parts)),
        "n_dropped_invalid": int(sum(p["n_invalid"] for p in parts)),
        "n_dropped_edge": int(sum(p["n_edge"] for p in parts)),
        "n_recordings": len(parts),
    }
    if stats["n_word_windows"] < 3:
        raise ValueError(
            f"Too little data: {stats['n_word_windows']} usable word windows in {len(parts)} "
            "recording(s); record a longer listening session."
        )
    return SpeechDataset(
        brain=cat("brain"),
        mel=cat("mel"),
        kind=cat("kind"),
        words=[w for p in parts for w in p["words"]],
        sentence=cat("sentence"),
        overlaps=[o for p in parts for o in p["overlaps"]],
        subject=np.repeat([p["subject"] for p in parts], n),
        recording=np.repeat([p["recording"] for p in parts], n),
        anchors=cat("anchors"),
        sentences=sentences,
        channels=channels,
        sfreq_in=configs[0].sfreq_in,
        preprocessing=configs[0].with_scaler(center.tolist(), scale.tolist()),
        features=features,
        subject_labels=labels,
        stats=stats,
        provenance=[p["provenance"] for p in parts],
    )


def _recording_windows(recording, pre, track, config, features, sentence_base, train) -> dict:
    """Preprocess one recording; cut its word (and training) windows and their audio."""
    pre = fit_scaler(recording, pre)
    processed = preprocess_recording(recording, pre)
    origin = track.origin
    spans = sentence_spans(recording)
    words = recording.markers_of("word")
    anchors = [(m.timestamp, "word", parse_marker(m.value)[1]) for m in words]
    if train:
        t0, t1 = recording.timestamps[0] - config.tmin, recording.timestamps[-1] - config.tmax
        anchors += [(t, "train", "") for t in np.arange(t0, t1 - config.brain_shift, TRAIN_HOP_S)]
    spec = window_spec(config)
    windower = brain_windower(spec)
    markers = [Marker(float(t), f"{kind}:{i}") for i, (t, kind, _) in enumerate(anchors)]
    windows = windower.push_markers(markers) + windower.push_data(*processed)
    windower.finish()
    kept = [w for w in windows if w.valid]
    index = np.array([int(parse_marker(w.marker.value)[1]) for w in kept], dtype=np.int64)
    times = np.array([anchors[i][0] for i in index]) - origin
    kinds = np.array([anchors[i][1] for i in index])
    starts_s = times + config.tmin
    if isinstance(features, LogMelFeatures):
        mel = loudness = features.segments(track.audio, starts_s, config.n_times)
    else:  # the speech test below reads a log-mel; the kept windows then go through the model
        loudness = LogMelFeatures(MelConfig(frame_rate=config.sfreq)).segments(
            track.audio, starts_s, config.n_times
        )
    speech = (loudness.max(axis=1) > SILENCE_LOG_MEL).mean(axis=1)
    keep = (kinds == "word") | (speech >= MIN_SPEECH_FRACTION)
    starts = np.array([s for s, _, _ in spans]) - origin - 1.0
    ends = np.array([e for _, e, _ in spans]) - origin + 0.5
    owner = np.searchsorted(starts, times, side="right") - 1
    keep &= (owner >= 0) & (times <= ends[np.maximum(owner, 0)])
    lo, hi = times + config.tmin, times + config.tmax + config.brain_shift
    reach = (lo[:, None] < ends[None]) & (hi[:, None] > starts[None])
    keep_index = np.flatnonzero(keep)
    if not isinstance(features, LogMelFeatures):
        mel = features.segments(track.audio, starts_s[keep_index], config.n_times)
    else:
        mel = mel[keep_index]
    return {
        "brain": np.stack([kept[i].data for i in keep_index]).astype(np.float32),
        "mel": mel,
        "kind": kinds[keep_index],
        "words": [anchors[index[i]][2] for i in keep_index],
        "sentence": owner[keep_index] + sentence_base,
        "overlaps": [
            tuple(int(s) + sentence_base for s in np.flatnonzero(reach[i]) if s != owner[i])
            for i in keep_index
        ],
        "anchors": times[keep_index],
        "sentences": [text for _, _, text in spans],
        "config": pre,
        "n_invalid": len(windows) - len(kept),
        "n_edge": windower.n_dropped,
    }
