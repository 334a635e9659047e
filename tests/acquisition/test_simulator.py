"""Simulator: montages, determinism, chunking, markers vs ground truth, SNR, decodable keys.

Listening responses, and live streaming to a real LSL inlet on loopback.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pylsl
import pytest
from scipy import signal
from scipy.io import wavfile

from acquisition.channels import channels_from_info
from acquisition.io import read_recording, write_recording
from acquisition.recording import parse_marker
from acquisition.simulator import (
    Simulator,
    SimulatorStream,
    load_sentences,
    make_channels,
    sentence_key,
    split_of,
)
from acquisition.simulator.anatomy import make_anatomy
from acquisition.simulator.forward import leadfield
from acquisition.simulator.listening import sentence_words, write_stimulus_audio
from acquisition.simulator.montages import HEAD_RADIUS, MEG_RADIUS, SPHERE_ORIGIN, seeg_shafts
from acquisition.simulator.noise import COMPONENTS as BACKGROUND
from acquisition.simulator.simulator import DIFFICULTIES
from acquisition.simulator.speech import band_envelopes, espeak_available
from acquisition.simulator.typing import KeyResponses, key_geometry
from scripts.bench_simulator import keystroke_windows, nearest_centroid_accuracy

SENTENCES = ["the quick brown fox", "jumps over the lazy dog.", "Hello, world - again!"]


def _radius(positions: np.ndarray) -> np.ndarray:
    return np.linalg.norm(positions - SPHERE_ORIGIN, axis=1)


def test_eeg_montage_is_64_electrodes_of_the_10_20_system():
    channels = make_channels("eeg")
    assert channels.n_channels == 64
    assert set(channels.types) == {"eeg"} and set(channels.units) == {"V"}
    assert {"Fp1", "Fz", "Cz", "C3", "C4", "Pz", "Oz", "T7", "T8"} <= set(channels.names)
    np.testing.assert_allclose(_radius(channels.positions), HEAD_RADIUS, atol=1e-3)
    cz, oz = (channels.positions[channels.names.index(n)] for n in ("Cz", "Oz"))
    assert cz[2] > oz[2] and oz[1] < 0  # vertex on top, occiput at the back


def test_meg_montage_is_neuromag_like():
    channels = make_channels("meg")
    types, names = np.array(channels.types), np.array(channels.names)
    assert channels.n_channels == 306
    assert (types == "mag").sum() == 102 and (types == "grad").sum() == 204
    assert all(re.fullmatch(r"MEG\d{3}[123]", n) for n in names)
    assert all(n.endswith("1") for n in names[types == "mag"])
    assert {u for u, t in zip(channels.units, types) if t == "grad"} == {"T/m"}
    assert {u for u, t in zip(channels.units, types) if t == "mag"} == {"T"}
    # one magnetometer and two gradiometers share each of the 102 locations
    locations = {}
    for name, pos in zip(names, channels.positions):
        locations.setdefault(name[:6], []).append(pos)
    assert len(locations) == 102 and all(len(p) == 3 for p in locations.values())
    assert all(np.allclose(p[0], p[1]) and np.allclose(p[0], p[2]) for p in locations.values())
    np.testing.assert_allclose(_radius(channels.positions), MEG_RADIUS, atol=1e-6)


def test_ieeg_montage_is_shafts_of_contacts_3_5_mm_apart():
    channels = make_channels("ieeg")
    shafts = seeg_shafts()
    assert 8 <= len(shafts) <= 10 and 95 <= channels.n_channels <= 115
    assert set(channels.types) == {"seeg"} and set(channels.units) == {"V"}
    for shaft, n_contacts in shafts.items():
        assert 10 <= n_contacts <= 15
        idx = [channels.names.index(f"{shaft}{k}") for k in range(1, n_contacts + 1)]
        steps = np.linalg.norm(np.diff(channels.positions[idx], axis=0), axis=1)
        np.testing.assert_allclose(steps, 0.0035, atol=1e-9)
    assert _radius(channels.positions).max() < 0.9 * HEAD_RADIUS  # inside the brain


def test_forward_patterns_are_referenced_and_decay_with_distance():
    source = np.array([[-0.05, -0.01, 0.04]])  # left auditory cortex
    eeg = leadfield("eeg", source)[:, 0, :]
    np.testing.assert_allclose(eeg.sum(axis=0), 0.0, atol=1e-12 * np.abs(eeg).max())
    seeg = np.linalg.norm(leadfield("ieeg", source)[:, 0, :], axis=1)
    channels = make_channels("ieeg")
    near = np.linalg.norm(channels.positions - source, axis=1).argsort()
    assert seeg[near[:5]].min() > 10 * seeg[near[-20:]].max()
    meg = leadfield("meg", source)[:, 0, :]
    assert np.isfinite(meg).all() and np.abs(meg).max() > 0


def test_same_seed_same_session_other_seed_or_subject_differs():
    recordings = [
        Simulator("eeg", "typing", seed=seed, subject=subject, sentences=SENTENCES).generate(4.0)
        for seed, subject in ((3, 0), (3, 0), (4, 0), (3, 1))
    ]
    same, again, other_seed, other_subject = recordings
    np.testing.assert_array_equal(same.data, again.data)
    assert same.markers == again.markers
    assert same.meta["ground_truth"] == again.meta["ground_truth"]
    assert not np.allclose(same.data, other_seed.data)
    assert not np.allclose(same.data, other_subject.data)


@pytest.mark.parametrize("modality", ["meg", "ieeg"])
def test_chunked_output_equals_generate(modality):
    sim = Simulator(modality, "typing", seed=7, sentences=SENTENCES)
    recording = sim.generate(5.0)
    sizes = np.random.default_rng(0).integers(1, 700, 50)
    chunks, markers, total = [], [], 0
    for size in sizes:
        size = int(min(size, recording.n_times - total))
        if size == 0:
            break
        chunk = sim.next_chunk(size)
        assert chunk.first_sample == total
        chunks.append(chunk.data)
        markers += chunk.markers
        total += size
    np.testing.assert_array_equal(np.concatenate(chunks), recording.data)
    assert [(m.timestamp, m.value) for m in recording.markers] == [
        (s / sim.sfreq, v) for s, v in markers
    ]
    sim.reset()
    streamed = np.concatenate([c.data for c in sim.iter_chunks(0.13, duration_s=5.0)])
    np.testing.assert_array_equal(streamed, recording.data)


def test_typing_markers_match_ground_truth():
    sim = Simulator("eeg", "typing", seed=1, typo_rate=0.1)
    recording = sim.generate(60.0)
    truth = recording.meta["ground_truth"]
    assert truth["task"] == "typing" and len(truth["sentences"]) >= 2
    keys = [(m.timestamp, parse_marker(m.value)[1]) for m in recording.markers_of("key")]
    expected = [(k["time"], k["char"]) for s in truth["sentences"] for k in s["keys"]]
    assert keys == expected
    complete = [s for s in truth["sentences"] if s["complete"]]
    assert complete and all(s["typed"] == "".join(k["char"] for k in s["keys"]) for s in complete)
    assert all(len(s["typed"]) == len(s["text"]) for s in complete)
    assert any(s["typed"] != s["text"] for s in complete)  # typo_rate 0.1 over > 60 letters
    starts = [parse_marker(m.value)[1] for m in recording.markers_of("sentence_start")]
    ends = [parse_marker(m.value)[1] for m in recording.markers_of("sentence_end")]
    assert starts == [s["text"] for s in truth["sentences"]]
    assert ends == [s["text"] for s in complete]
    for sentence in complete:  # shown, then typed from memory, then ended
        times = np.array([k["time"] for k in sentence["keys"]])
        assert sentence["onset"] + 1.0 < times[0] and times[-1] < sentence["offset"]
        assert sentence["typing_onset"] == times[0]
        assert 0.15 < np.median(np.diff(times)) < 0.35
    stamps = [m.timestamp * sim.sfreq for m in recording.markers]
    np.testing.assert_allclose(stamps, np.round(stamps), atol=1e-6)  # markers sit on samples


def _band_power(data: np.ndarray, sfreq: float) -> np.ndarray:
    sos = signal.butter(2, (0.1, 20.0), "bandpass", fs=sfreq, output="sos")
    return signal.sosfilt(sos, data.astype(np.float64), axis=0)[int(20 * sfreq) :].var(axis=0)


def test_snr_sets_the_evoked_to_background_ratio():
    duration, runs = 80.0, {}
    for snr in (0.5, 1.5):
        for parts in (("evoked",), BACKGROUND):
            sim = Simulator("eeg", "typing", snr=snr, seed=2, components=parts)
            runs[snr, parts[0]] = sim.generate(duration)
    evoked, background = runs[0.5, "evoked"], runs[0.5, "brain"]
    np.testing.assert_allclose(runs[1.5, "evoked"].data, 3.0 * evoked.data, rtol=1e-5, atol=1e-12)
    np.testing.assert_array_equal(runs[1.5, "brain"].data, background.data)
    sfreq, mask = evoked.sfreq, np.zeros(evoked.n_times, dtype=bool)
    for marker in evoked.markers_of("key"):
        i = round(marker.timestamp * sfreq)
        mask[max(i - int(0.2 * sfreq), 0) : i + int(0.3 * sfreq)] = True
    evoked_power = np.mean(evoked.data[mask].astype(np.float64) ** 2, axis=0)
    measured = np.sqrt(np.mean(evoked_power / _band_power(background.data, sfreq)))
    assert measured == pytest.approx(0.5, rel=0.2)


@pytest.mark.parametrize("line_freq", [50.0, 60.0])
def test_artefacts_line_noise_blinks_and_pink_background(line_freq):
    def part(*components):
        sim = Simulator("eeg", seed=0, line_freq=line_freq, components=components)
        return sim.generate(40.0)

    line, blinks, brain = part("line").data, part("blinks").data, part("brain").data
    freqs, psd = signal.welch(line, fs=500.0, nperseg=1000, axis=0)
    assert freqs[psd.mean(axis=1).argmax()] == line_freq
    names = make_channels("eeg").names
    rms = np.sqrt(np.mean(blinks.astype(np.float64) ** 2, axis=0))
    frontal = [rms[names.index(n)] for n in ("Fp1", "Fpz", "Fp2")]
    occipital = [rms[names.index(n)] for n in ("O1", "Oz", "O2")]
    assert min(frontal) > 3 * max(occipital) > 0
    freqs, psd = signal.welch(brain, fs=500.0, nperseg=2000, axis=0)
    power = psd.mean(axis=1)
    low, high = power[(freqs > 1) & (freqs < 3)].mean(), power[(freqs > 30) & (freqs < 60)].mean()
    assert 5 < low / high < 100  # 1/f: ~20x power from 2 Hz to 40 Hz


def test_key_responses_follow_the_touch_typing_fingers():
    assert key_geometry("a") == ("L5", 0.0, 0.0, False)
    assert key_geometry("J") == ("R2", 0.0, 0.0, True)
    assert key_geometry(" ")[0] == "R1" and key_geometry("y")[:2] == ("R2", -1.0)
    anatomy = make_anatomy(0)
    free = leadfield(
        "meg", np.concatenate([anatomy["finger"].positions, anatomy["letter"].positions])
    )
    letters = np.einsum("csk,sk->cs", free[:, 10:], anatomy["letter"].orientations)
    responses = KeyResponses(anatomy, free[:, :10], letters, 1000.0)

    def evoked(char):
        waveform, pattern = responses.response(char)
        return (waveform @ pattern).ravel()

    def similarity(a, b):
        return np.corrcoef(evoked(a), evoked(b))[0, 1]

    assert similarity("f", "r") > similarity("f", "d") > similarity("f", "j")  # same finger first
    assert similarity("f", "r") < 0.99  # related, not identical
    assert similarity("a", "A") < 0.99  # shift adds the other little finger


def test_keys_are_decodable_from_keystroke_windows():
    recording = Simulator("meg", "typing", snr=2.0, seed=5).generate(100.0)
    accuracy, chance = nearest_centroid_accuracy(*keystroke_windows(recording), n_classes=8)
    assert accuracy > 3.0 * chance


@pytest.mark.parametrize(
    "engine",
    [
        "noise",
        pytest.param(
            "espeak-ng",
            marks=pytest.mark.skipif(not espeak_available(), reason="espeak-ng not installed"),
        ),
    ],
)
def test_listening_words_markers_and_envelope_response(engine, tmp_path):
    sim = Simulator("meg", "listening", snr=1.0, seed=0, sentences=SENTENCES, speech_engine=engine)
    recording = sim.generate(20.0)
    truth = recording.meta["ground_truth"]
    assert truth["speech_engine"] == engine and truth["audio_sfreq"] == 16000
    complete = [s for s in truth["sentences"] if s["complete"]]
    assert len(complete) >= 3
    for sentence in complete:
        assert [w["word"] for w in sentence["words"]] == sentence_words(sentence["text"])
        duration = sentence["offset"] - sentence["onset"]
        assert sentence["audio"].shape[0] == pytest.approx(duration * 16000, abs=20)
        assert np.sqrt(np.mean(sentence["audio"] ** 2)) > 0.01
    words = [(m.timestamp, parse_marker(m.value)[1]) for m in recording.markers_of("word")]
    assert words == [(w["onset"], w["word"]) for s in truth["sentences"] for w in s["words"]]
    heard = sum(len(sentence_words(s["text"])) for s in complete)
    assert sum(len(s["words"]) for s in complete) == heard
    # the brain follows the audio envelope ~100-200 ms later
    sfreq, envelope = recording.sfreq, np.zeros(recording.n_times)
    for sentence in truth["sentences"]:
        features = band_envelopes(sentence["audio"], sfreq)[:, :-1].sum(axis=1)
        first = round(sentence["onset"] * sfreq)
        n = min(features.shape[0], recording.n_times - first)
        envelope[first : first + n] = features[:n]
    sos = signal.butter(2, (1.0, 15.0), "bandpass", fs=sfreq, output="sos")
    brain = signal.sosfiltfilt(sos, recording.data.astype(np.float64), axis=0)
    envelope = signal.sosfiltfilt(sos, envelope)
    best = 0.0
    for lag in range(0, int(0.3 * sfreq), int(0.02 * sfreq)):
        r = [np.corrcoef(envelope[: envelope.shape[0] - lag], ch[lag:])[0, 1] for ch in brain.T]
        best = max(best, np.nanmax(np.abs(r)))
    assert best > 0.5
    files = write_stimulus_audio(truth, tmp_path)
    rate, first_sentence = wavfile.read(files[0])
    assert rate == 16000 and first_sentence.shape[0] == truth["sentences"][0]["audio"].shape[0]
    assert (tmp_path / "words" / "quick.wav").is_file()


def test_session_written_to_xdf_reads_back_with_markers(tmp_path):
    recording = Simulator("eeg", "typing", seed=0, sentences=SENTENCES).generate(6.0)
    back = read_recording(write_recording(recording, tmp_path / "session.xdf"))
    np.testing.assert_array_equal(back.data, recording.data)
    assert back.channels.names == recording.channels.names and back.sfreq == recording.sfreq
    assert [m.value for m in back.markers] == [m.value for m in recording.markers]
    assert any(m.value.startswith("key:") for m in back.markers)


def _inlet(source_id: str) -> pylsl.StreamInlet:
    found = pylsl.resolve_byprop("source_id", source_id, 1, 10.0)
    assert found, f"no LSL stream with source_id {source_id!r}"
    inlet = pylsl.StreamInlet(found[0], max_buflen=60, recover=False)
    inlet.open_stream(10.0)
    return inlet


def test_stream_pushes_data_and_markers_to_lsl(source_id):
    sim = Simulator("eeg", "typing", seed=4, sentences=["hi"])
    expected = Simulator("eeg", "typing", seed=4, sentences=["hi"]).generate(6.0)
    stream = SimulatorStream(sim, name="sim-test", source_id=source_id)
    with stream:
        with pytest.warns(RuntimeWarning, match="already running"):
            stream.start()
        markers_inlet = _inlet(f"{source_id}-markers")
        data_inlet = _inlet(source_id)
        info = data_inlet.info()
        data, stamps, markers = [], [], []
        deadline = time.monotonic() + 20.0
        while len(markers) < 4 and time.monotonic() < deadline:
            chunk, ts = data_inlet.pull_chunk(timeout=0.2, max_samples=2048, dest_obj=None)
            if ts:
                data.append(np.array(chunk, dtype=np.float32))
                stamps += ts
            values, marker_ts = markers_inlet.pull_chunk(timeout=0.0)
            markers += [(t, v[0]) for t, v in zip(marker_ts, values)]
        t0 = stream.start_timestamp
        markers_inlet.close_stream()
        data_inlet.close_stream()
    stream.stop()  # a second stop is harmless
    assert stream.error is None and not stream.running
    assert info.name() == "sim-test" and info.type() == "EEG" and info.nominal_srate() == 500
    channels = channels_from_info(info)
    assert channels.names == sim.channels.names and channels.types == sim.channels.types
    np.testing.assert_allclose(channels.positions, sim.channels.positions, atol=1e-6)
    index = np.round((np.array(stamps) - t0) * sim.sfreq).astype(int)
    np.testing.assert_allclose(np.array(stamps) - t0, index / sim.sfreq, atol=1e-6)
    np.testing.assert_array_equal(np.concatenate(data), expected.data[index])
    want = {round(m.timestamp * sim.sfreq): m.value for m in expected.markers}
    got = {round((t - t0) * sim.sfreq): v for t, v in markers}
    assert got.items() <= want.items()
    assert [v for v in got.values() if v.startswith("key:")] == ["key:h", "key:i"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(modality="fmri"), "'modality'.*eeg, meg, ieeg"),
        (dict(task="reading"), "'task'.*typing, listening"),
        (dict(snr=0.0), "'snr'.*> 0"),
        (dict(snr=float("nan")), "'snr'"),
        (dict(sfreq=50.0), "'sfreq'.*>= 100 Hz"),
        (dict(sentences=[" ", ""]), "'sentences'"),
        (dict(sentences="/no/such/file.txt"), "'sentences'.*not a file"),
        (dict(components=("evoked", "cosmic")), "'components'"),
        (dict(task="listening", speech_engine="festival"), "'speech_engine'"),
        (dict(seed=1.5), "'seed'.*int"),
        (dict(typo_rate=2.0), "'typo_rate'"),
        (dict(sentence_split="train"), "'sentence_split'.*all, calibration, test"),
        (
            dict(sentences=load_sentences(split="calibration")[:3], sentence_split="test"),
            "none of the 3 sentences .* 'test'",
        ),
        (dict(difficulty="hard"), "'difficulty': 'hard'; use one of paper"),
        (dict(difficulty="paper", snr=5.0), "snr=5.0 and difficulty='paper' both set the SNR"),
    ],
)
def test_bad_arguments_are_named_in_the_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Simulator(**{"modality": "eeg", **kwargs})


def test_defaults_and_bad_calls():
    assert Simulator("eeg", sentences=SENTENCES).sfreq == 500.0
    sim = Simulator("ieeg", sentences=SENTENCES)
    assert sim.sfreq == 1000.0 and sim.stream_type == "iEEG"
    with pytest.raises(ValueError, match="'duration_s'"):
        sim.generate(-1.0)
    with pytest.raises(ValueError, match="'n_samples'"):
        sim.next_chunk(0)
    with pytest.raises(TypeError, match="'simulator'"):
        SimulatorStream("not a simulator")
    stream = SimulatorStream(sim)
    stream.stop()  # before start: harmless
    with pytest.raises(RuntimeError, match="Create a new SimulatorStream"):
        stream.start()


def test_sentence_bank_splits_by_hash_into_calibration_and_test():
    import hashlib

    bank = load_sentences()
    calibration = load_sentences(split="calibration")
    test = load_sentences(split="test")
    assert sorted(calibration + test) == sorted(bank) and not set(calibration) & set(test)
    assert 0.25 < len(test) / len(bank) < 0.42  # one in three by hash
    for text in bank[:20]:  # the rule: SHA-256 of the normalised text, mod 3
        digest = hashlib.sha256(" ".join(text.lower().split()).encode()).hexdigest()[:16]
        assert sentence_key(text) == digest == sentence_key(f"  {text.upper()} ")
        assert split_of(text) == ("test" if int(digest, 16) % 3 == 0 else "calibration")
    sim = Simulator("eeg", sentence_split="test", seed=4)
    typed = [s["text"] for s in sim.generate(40.0).meta["ground_truth"]["sentences"]]
    assert typed and set(typed) <= set(test)
    assert sim.parameters()["sentence_split"] == "test"


def test_paper_difficulty_sets_the_snr_of_each_modality():
    for modality in ("meg", "eeg"):
        sim = Simulator(modality, difficulty="paper", sentences=SENTENCES)
        assert sim.snr == DIFFICULTIES["paper"][modality]
        assert sim.parameters()["difficulty"] == "paper"
        # the recorded settings (snr and difficulty both) make the same session again
        again = Simulator(modality, difficulty="paper", snr=sim.snr, sentences=SENTENCES)
        assert again.evoked_scale == sim.evoked_scale
    assert Simulator("eeg", sentences=SENTENCES).snr == 1.0
