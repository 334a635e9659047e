"""Typing datasets from recordings: windows, targets and sentences against the simulator's truth."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from helpers import typing_data as td

from acquisition.channels import ChannelSpec
from acquisition.io import write_recording
from acquisition.recording import Marker
from bci_app.decoders.bundle import sha256_file
from bci_app.processing.windowing import EventWindower, epochs_from_recording
from bci_app.typing.alphabet import char_to_class
from models.typing.data import MIN_SENTENCES, build_typing_dataset
from models.typing.datasets import (
    IGNORE_INDEX,
    MIN_CROP_KEYS,
    ContinuousSentences,
    KeystrokeSentences,
    collate_continuous,
    collate_keystrokes,
)


@pytest.fixture(scope="module")
def dataset(typing_session):
    return build_typing_dataset([typing_session], continuous=True)


def test_sentences_windows_and_targets_match_the_simulator(typing_session, dataset):
    truth = td.ground_truth_keys(typing_session)
    assert len(dataset.sentences) == len(truth) >= MIN_SENTENCES
    for sentence, (text, times, chars) in zip(dataset.sentences, truth):
        assert sentence.prompt == text
        np.testing.assert_allclose(sentence.key_times, times)
        assert sentence.targets.tolist() == [char_to_class(c) for c in chars]
        assert sentence.target_text == "".join(chars).lower()
        assert sentence.windows.shape == (len(chars), 64, 25)
        assert sentence.windows.dtype == np.float32 and np.abs(sentence.windows).max() <= 5.0
        assert sentence.span_valid and sentence.span[0] < sentence.span[1]
    assert dataset.channels.n_channels == 64 and set(dataset.channels.types) == {"eeg"}
    assert dataset.stats["n_windows"] == dataset.n_keystrokes == sum(len(t[1]) for t in truth)
    assert dataset.stats["n_dropped_invalid"] == dataset.stats["n_skipped_keys"] == 0
    # one recording: the bundle's scaler is that recording's own
    assert dataset.preprocessing == dataset.recording_preprocessing[0]
    # the anti-alias FIR holds back its delay: resample_zeros output samples when linear-phase,
    # none when minimum-phase (Brain2Qwerty's default)
    pre = dataset.preprocessing
    delay = 0 if pre.anti_alias == "minphase" else pre.resample_zeros
    assert dataset.continuous[0].shape == (64, round(typing_session.duration * 50) - delay)


def test_windows_are_those_of_the_live_windower(typing_session, dataset):
    config = dataset.recording_preprocessing[0]
    live = epochs_from_recording(typing_session, config, EventWindower(-0.2, 0.3, 50.0, clamp=5.0))
    by_time = {w.marker.timestamp: w.data for w in live}
    for sentence in dataset.sentences:
        for time, window in zip(sentence.key_times, sentence.windows):
            np.testing.assert_array_equal(window, by_time[time])


def test_files_subjects_and_provenance(tmp_path, typing_session):
    other = td.typing_session(seed=2)
    path = write_recording(typing_session, tmp_path / "session.xdf")
    dataset = build_typing_dataset([path, other], subject_ids=["anna", "ben"])
    assert dataset.subject_labels == ["anna", "ben"] and dataset.n_subjects == 2
    assert {s.subject for s in dataset.sentences if s.recording == 1} == {1}
    assert dataset.provenance[0] == {
        "file": "session.xdf",
        "duration_s": pytest.approx(typing_session.duration),
        "sha256": sha256_file(path),
    }
    assert dataset.provenance[1]["simulator"]["seed"] == 2
    centers = np.array([c.scaler_center for c in dataset.recording_preprocessing])
    np.testing.assert_allclose(dataset.preprocessing.scaler_center, np.median(centers, axis=0))


def test_recording_without_keystrokes_names_the_file_and_its_markers(tmp_path, typing_session):
    path = write_recording(td.without_markers(typing_session, "key"), tmp_path / "rest.xdf")
    with pytest.raises(ValueError, match=r"'.*rest\.xdf': it has no keystroke markers.*"):
        build_typing_dataset([typing_session, path])
    with pytest.raises(ValueError, match=r"Marker kinds found: \{'sentence_start': \d+"):
        build_typing_dataset([path])


def test_channel_mismatch_names_the_channels(typing_session):
    names = list(typing_session.channels.names)
    names[3] = "EEG999"
    spec = dataclasses.replace(typing_session.channels, names=tuple(names))
    other = dataclasses.replace(typing_session, channels=spec, name="other-montage")
    renamed = typing_session.channels.names[3]
    with pytest.raises(ValueError, match=rf"'other-montage' lacks \['{renamed}'\]"):
        build_typing_dataset([typing_session, other])
    slower = dataclasses.replace(typing_session, sfreq=250.0, name="slow")
    with pytest.raises(ValueError, match=r"'slow' runs at 250 Hz but .* at 500 Hz"):
        build_typing_dataset([typing_session, slower])


def test_channels_without_positions_are_refused(typing_session):
    spec = ChannelSpec(
        typing_session.channels.names, typing_session.channels.types, typing_session.channels.units
    )
    with pytest.raises(ValueError, match=r"have no sensor position.*set_montage"):
        build_typing_dataset([dataclasses.replace(typing_session, channels=spec)])


def test_too_little_data_says_the_minimum(typing_session):
    short = dataclasses.replace(
        typing_session, data=typing_session.data[:6000], timestamps=typing_session.timestamps[:6000]
    )
    with pytest.raises(ValueError, match=r"Too little data: [12] sentences .* at least 3 sentence"):
        build_typing_dataset([short])
    with pytest.raises(ValueError, match=r"at least 3 sentences and 500 keystrokes"):
        build_typing_dataset([typing_session], min_keystrokes=500)


def test_nan_stretch_drops_and_counts_its_windows(typing_session, dataset):
    broken = td.typing_session()
    first = dataset.sentences[1].key_times[0]
    stop = int((first + 1.0) * broken.sfreq)
    broken.data[int(first * broken.sfreq) : stop] = np.nan
    damaged = build_typing_dataset([broken])
    n_dropped = damaged.stats["n_dropped_invalid"]
    assert n_dropped >= int(np.sum(dataset.sentences[1].key_times < first + 1.0))
    assert damaged.n_keystrokes + n_dropped == dataset.n_keystrokes
    kept = np.concatenate([s.key_times for s in damaged.sentences])
    assert not np.any((kept >= first) & (kept < first + 1.0))


def test_keys_outside_the_alphabet_are_skipped_and_counted(typing_session, dataset):
    extra = [Marker(t + 0.05, "key:shift") for t in dataset.sentences[0].key_times[:3]]
    extra.append(Marker(dataset.sentences[2].key_times[1] + 0.05, "key:backspace"))
    edited = build_typing_dataset([td.with_markers(typing_session, extra)])
    assert edited.stats["n_skipped_keys"] == 4
    assert [s.target_text for s in edited.sentences] == [s.target_text for s in dataset.sentences]


def test_without_sentence_markers_keys_are_grouped_by_pauses(typing_session, dataset):
    bare = td.without_markers(typing_session, "sentence_start", "sentence_end")
    grouped = build_typing_dataset([bare])
    assert grouped.stats["n_sentences_from_pauses"] == len(grouped.sentences)
    assert [s.prompt for s in grouped.sentences] == [s.target_text for s in dataset.sentences]


def test_split_keeps_near_duplicates_together_and_needs_three_groups(dataset):
    split = dataset.split(seed=0)
    prompts = {k: {dataset.sentences[i].prompt for i in v} for k, v in split.items()}
    assert all(len(v) for v in split.values())
    assert not (prompts["train"] & prompts["val"] or prompts["train"] & prompts["test"])
    repeated = [dataclasses.replace(s, prompt="the same text") for s in dataset.sentences]
    same = dataclasses.replace(dataset, sentences=repeated)
    with pytest.raises(ValueError, match=r"leave the val/test split\(s\) empty"):
        same.split()


def test_collate_pads_sentences_with_a_key_mask(dataset):
    view = KeystrokeSentences(dataset, [0, 1, 2])
    batch = collate_keystrokes([view[i] for i in range(3)])
    lengths = [dataset.sentences[i].n_keys for i in range(3)]
    assert batch["x"].shape == (3, max(lengths), 64, 25)
    assert batch["key_mask"].sum(dim=1).tolist() == lengths
    assert (batch["targets"][~batch["key_mask"]] == IGNORE_INDEX).all()
    assert (batch["x"][~batch["key_mask"]] == 0).all()
    np.testing.assert_array_equal(batch["x"][1, : lengths[1]].numpy(), dataset.sentences[1].windows)
    torch.manual_seed(0)
    cropped = KeystrokeSentences(dataset, [0], crop=1.0)[0]
    full = dataset.sentences[0]
    assert MIN_CROP_KEYS <= len(cropped[1]) <= full.n_keys
    start = next(
        i for i in range(full.n_keys) if np.array_equal(full.windows[i], cropped[0][0].numpy())
    )
    assert cropped[1].tolist() == full.targets[start : start + len(cropped[1])].tolist()


def test_continuous_view_pads_spans_for_ctc(dataset):
    view = ContinuousSentences(dataset, [0, 1])
    batch = collate_continuous([view[0], view[1]])
    spans = [dataset.sentences[i].span for i in (0, 1)]
    assert batch["lengths"].tolist() == [b - a for a, b in spans]
    assert batch["x"].shape == (2, 64, max(b - a for a, b in spans))
    assert batch["target_lengths"].tolist() == [dataset.sentences[i].n_keys for i in (0, 1)]
    assert float(batch["x"].abs().max()) <= 5.0
    no_data = dataclasses.replace(dataset, continuous=[None])
    with pytest.raises(ValueError, match=r"continuous=True"):
        ContinuousSentences(no_data, [0])
