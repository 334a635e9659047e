"""Typing datasets from calibration recordings: keystroke windows grouped into whole sentences.

:func:`build_typing_dataset` reads each recording (a file through
:func:`acquisition.io.read_recording`, or an in-memory :class:`~acquisition.recording.Recording`)
and, per recording as Brain2Qwerty does:

1. picks the data channels (:data:`models.data_sources.DATA_TYPES`, or the caller's ``picks``);
   every recording must have the same ones (the decoder reads a fixed set) at one input rate;
2. fits the robust scaler on that recording (:func:`~bci_app.processing.preprocessing.fit_scaler`)
and runs
   it through the live path's :class:`~bci_app.processing.preprocessing.Preprocessor` (0.1-20 Hz,
   50 Hz);
3. cuts -0.2..+0.3 s around every ``key:<c>`` marker with the live
   :class:`~bci_app.processing.windowing.EventWindower` (baseline on the first 0.2 s, clamp +-5);
4. labels each keystroke with its character's class (:func:`bci_app.typing.alphabet.char_to_class`);
   keys outside the alphabet (``shift``, ``backspace``) are skipped and counted;
5. groups keystrokes into sentences between ``sentence_start`` and ``sentence_end`` markers;
   keys outside any sentence are grouped by pauses longer than :data:`SENTENCE_PAUSE_S`.

Windows that overlap invalid samples (NaN stretches, gaps) are dropped and counted
(``stats["n_dropped_invalid"]``). The torch side (:class:`KeystrokeSentences`,
:class:`ContinuousSentences` and their collate functions) lives in :mod:`models.typing.datasets`.

Scaler statistics for a new session (what the bundle stores): the per-channel **median over
recordings** of the per-recording medians and IQRs. With one recording it is that recording's
scaler; with several it is robust to one odd session, and needs no second pass over the data.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from acquisition.channels import ChannelSpec
from acquisition.recording import Marker, Recording, parse_marker
from bci_app.processing.preprocessing import PreprocessConfig, fit_scaler, preprocess_recording
from bci_app.processing.windowing import EventWindower
from bci_app.splits import split_by_sentence
from bci_app.typing.alphabet import char_to_class, classes_to_text
from models.data_sources import (
    RecordingLike,
    check_same_channels,
    load_recording,
    pick_channels,
    subset_channels,
)

#: Keystroke window (Brain2Qwerty): seconds, Hz, baseline, clamp; stored in bundles as is.
WINDOW = {"tmin": -0.2, "tmax": 0.3, "sfreq": 50.0, "baseline": [None, 0.0], "clamp": 5.0}
#: Keys more than this many seconds apart start a new sentence when no sentence markers say.
SENTENCE_PAUSE_S = 2.0
#: Smallest dataset that trains: one sentence each for training, validation and test.
MIN_SENTENCES = 3
MIN_KEYSTROKES = 30
#: Continuous data kept around a sentence's keys for the CTC decoder (seconds each side).
SPAN_MARGIN_S = 0.5


@dataclass
class TypingSentence:
    """One typed sentence: its keystroke windows, their classes and where it sits in its recording.

    Attributes
    ----------
    windows : array, shape (n_keys, n_channels, n_times), float32
    targets : array, shape (n_keys,), int64
        Class of each keystroke (:mod:`bci_app.typing.alphabet`).
    key_times : array, shape (n_keys,)
        Marker times (recording clock, seconds).
    subject : int
        Subject index (into :attr:`TypingDataset.subject_labels`).
    recording : int
        Index of the recording it comes from.
    prompt : str
        The sentence shown (``sentence_start`` text), or the typed text when grouped by pauses.
    span : tuple of int
        ``[start, stop)`` samples of the recording's preprocessed data around its keys.
    span_valid : bool
        Whether every sample of ``span`` is valid (the CTC decoder trains only on those).
    """

    windows: np.ndarray
    targets: np.ndarray
    key_times: np.ndarray
    subject: int
    recording: int
    prompt: str
    span: tuple[int, int]
    span_valid: bool

    @property
    def n_keys(self) -> int:
        """Number of keystrokes."""
        return len(self.targets)

    @property
    def target_text(self) -> str:
        """What was typed, as display text of the classes."""
        return classes_to_text(self.targets)


@dataclass
class TypingDataset:
    """Sentences of keystroke windows from one or more recordings, with what made them.

    Attributes
    ----------
    sentences : list of TypingSentence
    channels : ChannelSpec
        The picked channels, in the order of the windows' channel axis.
    sfreq_in : float
        Rate of the recordings (what a live stream must deliver).
    preprocessing : PreprocessConfig
        Brain2Qwerty preprocessing with the pooled scaler (module docstring): the bundle's.
    recording_preprocessing : list of PreprocessConfig
        Each recording's own fitted preprocessing (what its windows went through).
    continuous : list of array | None
        Per recording, the preprocessed data ``(n_channels, n_samples)`` clipped to +-clamp
        (only with ``continuous=True``).
    subject_labels : list
        Subject label of each subject index.
    stats : dict
        Counts: windows kept, dropped invalid, dropped at the edges, skipped keys, per recording.
    provenance : list of dict
        Per recording: file name and sha256, or the simulator's parameters.
    """

    sentences: list[TypingSentence]
    channels: ChannelSpec
    sfreq_in: float
    preprocessing: PreprocessConfig
    recording_preprocessing: list[PreprocessConfig]
    continuous: list[np.ndarray | None]
    subject_labels: list
    stats: dict
    provenance: list[dict] = field(default_factory=list)

    @property
    def n_chans(self) -> int:
        """Number of channels the decoder reads."""
        return self.channels.n_channels

    @property
    def n_subjects(self) -> int:
        """Number of distinct subjects."""
        return len(self.subject_labels)

    @property
    def n_keystrokes(self) -> int:
        """Keystroke windows kept, over all sentences."""
        return sum(s.n_keys for s in self.sentences)

    def split(
        self, *, seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15
    ) -> dict[str, np.ndarray]:
        """Split sentence indices into ``train``/``val``/``test``, near-duplicates kept together.

        Raises
        ------
        ValueError
            If validation or test would be empty (fewer than 3 distinct sentences).
        """
        prompts = [s.prompt for s in self.sentences]
        split = split_by_sentence(
            prompts, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
        )
        empty = [name for name in ("train", "val", "test") if len(split[name]) == 0]
        if empty:
            raise ValueError(
                f"Too little data: {len(prompts)} sentences leave the {'/'.join(empty)} split(s) "
                f"empty (near-duplicate sentences stay in one split, so at least "
                f"{MIN_SENTENCES} distinct sentences are needed). Record more distinct sentences."
            )
        return split


def build_typing_dataset(
    recordings: Sequence[RecordingLike],
    *,
    subject_ids: Sequence[Hashable] | None = None,
    picks: Sequence[str] | None = None,
    continuous: bool = False,
    min_sentences: int = MIN_SENTENCES,
    min_keystrokes: int = MIN_KEYSTROKES,
) -> TypingDataset:
    """Build a typing dataset from calibration recordings (see the module docstring).

    Parameters
    ----------
    recordings : sequence of path | Recording
        Recordings with ``key:<c>`` markers (XDF, FIF, EDF, BIDS, ... or in memory).
    subject_ids : sequence | None
        One subject label per recording (any hashable); None: all from one subject.
    picks : sequence of str | None
        Channel types (``"mag"``) and/or names to keep; None: every channel of
        :data:`models.data_sources.DATA_TYPES`.
    continuous : bool
        Keep each recording's preprocessed continuous data (the CTC decoder needs it).
    min_sentences, min_keystrokes : int
        Smallest dataset accepted.

    Raises
    ------
    ValueError
        A recording without keystroke markers, channels or rates that differ between recordings,
        channels without positions, or fewer sentences/keystrokes than the minimum.
    """
    if isinstance(recordings, str | os.PathLike | Recording) or len(recordings) == 0:
        raise ValueError(
            "Invalid value for 'recordings': expected a non-empty list of files or Recordings, "
            f"got {type(recordings).__name__} {str(recordings)[:60]!r}. Pass a list, e.g. [path]."
        )
    if subject_ids is not None and len(subject_ids) != len(recordings):
        raise ValueError(
            f"Invalid value for 'subject_ids': {len(subject_ids)} labels for {len(recordings)} "
            "recordings. Give one subject label per recording."
        )
    labels = list(dict.fromkeys(subject_ids)) if subject_ids is not None else [0]
    subjects = [0] * len(recordings)
    if subject_ids is not None:
        subjects = [labels.index(s) for s in subject_ids]
    parts, reference = [], None
    for index, item in enumerate(recordings):
        recording, label, provenance = load_recording(item)
        names = pick_channels(recording, picks, label)
        if reference is None:
            reference = (recording, label, names)
        else:
            names = check_same_channels(reference, recording, label, names)
        part = _recording_sentences(recording, label, names, index, subjects[index], continuous)
        parts.append((part, provenance, recording.channels))
    first_channels = parts[0][2]
    picks_index = [first_channels.names.index(n) for n in reference[2]]
    channels = subset_channels(first_channels, picks_index)
    configs = [p[0]["config"] for p in parts]
    return _assemble(parts, configs, channels, labels, min_sentences, min_keystrokes)


def _assemble(parts, configs, channels, labels, min_sentences, min_keystrokes) -> TypingDataset:
    sentences = [s for part, _, _ in parts for s in part["sentences"]]
    per_recording = [part["stats"] for part, _, _ in parts]
    totals = {
        key: sum(r[key] for r in per_recording)
        for key in per_recording[0]
        if isinstance(per_recording[0][key], int)
    }
    stats = {**totals, "n_recordings": len(parts), "per_recording": per_recording}
    n_keys = sum(s.n_keys for s in sentences)
    if len(sentences) < min_sentences or n_keys < min_keystrokes:
        raise ValueError(
            f"Too little data: {len(sentences)} sentences with {n_keys} usable keystrokes in "
            f"{len(parts)} recording(s) (after dropping {totals['n_dropped_invalid']} invalid "
            f"windows); training needs at least {min_sentences} sentences and {min_keystrokes} "
            "keystrokes. Record a longer calibration session or add recordings."
        )
    center = np.median([c.scaler_center for c in configs], axis=0)
    scale = np.median([c.scaler_scale for c in configs], axis=0)
    pooled = configs[0].with_scaler(center.tolist(), scale.tolist())
    return TypingDataset(
        sentences=sentences,
        channels=channels,
        sfreq_in=configs[0].sfreq_in,
        preprocessing=pooled,
        recording_preprocessing=configs,
        continuous=[part["continuous"] for part, _, _ in parts],
        subject_labels=labels,
        stats=stats,
        provenance=[p for _, p, _ in parts],
    )


def _recording_sentences(
    recording: Recording,
    label: str,
    names: tuple[str, ...],
    index: int,
    subject: int,
    keep_continuous: bool,
) -> dict:
    """Preprocess one recording and return its sentences, stats, config and continuous data."""
    keys = recording.markers_of("key")
    if not keys:
        kinds = dict(Counter(parse_marker(m.value)[0] for m in recording.markers))
        raise ValueError(
            f"Invalid recording '{label}': it has no keystroke markers ('key:<c>'), so it cannot "
            f"train a typing decoder. Marker kinds found: {kinds or 'none'}. Record the "
            "keystrokes as markers (the calibration task does), or give a typing session."
        )
    config = fit_scaler(recording, PreprocessConfig.brain2qwerty(recording.sfreq, names))
    processed = preprocess_recording(recording, config)
    windower = EventWindower(
        WINDOW["tmin"],
        WINDOW["tmax"],
        config.rate_after,
        baseline=tuple(WINDOW["baseline"]),
        clamp=WINDOW["clamp"],
    )
    windows = windower.push_markers(keys) + windower.push_data(*processed)
    windower.finish()
    by_marker = {id(w.marker): w for w in windows}
    labelled, n_skipped = [], 0
    for marker in keys:
        try:
            labelled.append((marker, char_to_class(parse_marker(marker.value)[1])))
        except ValueError:
            n_skipped += 1
    groups, n_from_pauses = _group_keys(recording.markers, [m for m, _ in labelled])
    sentences, n_invalid = [], 0
    margin = round(SPAN_MARGIN_S * config.rate_after)
    for group, prompt in groups:
        kept = [labelled[i] for i in group if id(labelled[i][0]) in by_marker]
        good = [(m, c) for m, c in kept if by_marker[id(m)].valid]
        n_invalid += len(kept) - len(good)
        if not good:
            continue
        times = np.array([m.timestamp for m, _ in good])
        targets = np.array([c for _, c in good], dtype=np.int64)
        start, stop = np.searchsorted(processed.timestamps, [times[0], times[-1]])
        span = (max(0, int(start) - margin), min(len(processed.timestamps), int(stop) + margin))
        sentences.append(
            TypingSentence(
                windows=np.stack([by_marker[id(m)].data for m, _ in good]),
                targets=targets,
                key_times=times,
                subject=subject,
                recording=index,
                prompt=prompt if prompt is not None else classes_to_text(targets),
                span=span,
                span_valid=bool(processed.valid[span[0] : span[1]].all()),
            )
        )
    data = None
    if keep_continuous:
        data = np.clip(processed.data.T, -WINDOW["clamp"], WINDOW["clamp"]).astype(np.float32)
    stats = {
        "label": label,
        "n_keys": len(keys),
        "n_windows": sum(s.n_keys for s in sentences),
        "n_dropped_invalid": n_invalid,
        "n_dropped_edge": windower.n_dropped,
        "n_skipped_keys": n_skipped,
        "n_sentences": len(sentences),
        "n_sentences_from_pauses": n_from_pauses,
    }
    return {"sentences": sentences, "stats": stats, "config": config, "continuous": data}


def _group_keys(
    markers: Sequence[Marker], keys: Sequence[Marker]
) -> tuple[list[tuple[list[int], str | None]], int]:
    """Group keys (indices into ``keys``) by sentence markers, else by pauses; with prompts."""
    spans: list[tuple[float, float, str]] = []
    opened: tuple[float, str] | None = None
    for marker in markers:
        kind, text = parse_marker(marker.value)
        if kind == "sentence_start":
            if opened is not None:
                spans.append((opened[0], marker.timestamp, opened[1]))
            opened = (marker.timestamp, text)
        elif kind == "sentence_end" and opened is not None:
            spans.append((opened[0], marker.timestamp, opened[1]))
            opened = None
    if opened is not None:
        spans.append((opened[0], np.inf, opened[1]))
    times = np.array([k.timestamp for k in keys], dtype=float)
    starts = np.array([s[0] for s in spans], dtype=float)
    ends = np.array([s[1] for s in spans], dtype=float)
    slot = np.searchsorted(starts, times, side="right") - 1
    inside = np.zeros(len(times), dtype=bool)
    if spans:
        inside = (slot >= 0) & (times <= ends[np.maximum(slot, 0)])
    groups = [
        (np.flatnonzero(inside & (slot == i)).tolist(), spans[i][2]) for i in range(len(spans))
    ]
    outside = np.flatnonzero(~inside)
    breaks = np.flatnonzero(np.diff(times[outside]) > SENTENCE_PAUSE_S) + 1
    pause_groups = [(g.tolist(), None) for g in np.split(outside, breaks) if len(g)]
    groups = [g for g in groups if g[0]] + pause_groups
    groups.sort(key=lambda g: times[g[0][0]])
    return groups, len(pause_groups)
