"""Typing decoders over real ONNX bundles: live increments, final text, events, errors."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import typing_bundles as tb

import bci_app.typing.keystroke as keystroke_module
from acquisition.recording import Marker
from bci_app.decoders.bundle import save_bundle
from bci_app.lm.beam import CTCPrefixBeamDecoder, KeystrokeBeamDecoder
from bci_app.lm.model import CharNgramLM
from bci_app.processing.windowing import Window, epochs_from_recording
from bci_app.typing.alphabet import DISPLAY_CHARS, cer
from bci_app.typing.keystroke import (
    CTCDecoder,
    KeystrokeDecoder,
    key_class,
    make_windower,
    open_decoder,
    preprocess_config,
)

SENTENCES = ["the quick brown fox", "we met at noon", "she sells sea shells"]


@pytest.fixture(scope="module")
def noisy():
    """A synthetic recording whose keys evoke class templates, with enough noise for errors."""
    recording = tb.keystroke_recording(SENTENCES, noise=3.0, seed=3)
    return recording


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, noisy):
    path = tmp_path_factory.mktemp("template")
    return tb.template_bundle(path / "b", noisy.channels, tb.identity_preprocessing(noisy.channels))


def _sentences(bundle, recording):
    """Keystroke windows of each sentence (sentence markers in order)."""
    windows = epochs_from_recording(recording, preprocess_config(bundle), make_windower(bundle))
    starts = [m.timestamp for m in recording.markers_of("sentence_start")]
    index = np.searchsorted(starts, [w.marker.timestamp for w in windows]) - 1
    return [[w for w, i in zip(windows, index) if i == s] for s in range(len(starts))]


@pytest.mark.parametrize("live_beam", ["incremental", "full"])
def test_final_text_is_the_offline_beam_over_the_whole_sentence(bundle, noisy, live_beam):
    decoder = KeystrokeDecoder(bundle, provider="cpu", live_beam=live_beam)
    lm = CharNgramLM.load(bundle.path / "lm.npz")
    offline = KeystrokeBeamDecoder(lm, top_k=5, beam_width=30, lm_weight=0.5)
    changed = 0
    for text, windows in zip(SENTENCES, _sentences(bundle, noisy)):
        decoder.start_sentence(text)
        first_rows = []
        for window in windows:
            event = decoder.add_window(window)
            first_rows.append(decoder.log_probs[0])
            assert len(event.hypothesis) == decoder.n_keystrokes
        end = decoder.end_sentence()
        result = decoder.last_sentence
        assert end.kind == "sentence_end" and end.committed.endswith(result.text)
        # the bidirectional transformer revised the first keystroke's posteriors as keys came
        changed += not np.allclose(first_rows[0], result.log_probs[0])
        # live steps end exactly where one offline beam pass over the final posteriors does
        assert result.text == offline.decode(result.log_probs)
        assert result.variants["lm"] == result.text
        assert len(result.text) == len(text)
    assert changed == len(SENTENCES)
    assert decoder.committed == " ".join(decoder_texts(bundle, noisy))


def decoder_texts(bundle, recording):
    """Final texts of a fresh decoder fed sentence by sentence (same windows)."""
    decoder = KeystrokeDecoder(bundle, provider="cpu")
    texts = []
    for windows in _sentences(bundle, recording):
        for window in windows:
            decoder.add_window(window)
        decoder.end_sentence()
        texts.append(decoder.last_sentence.text)
    return texts


def test_lm_lowers_the_error_rate_of_noisy_keystrokes(bundle, noisy):
    decoder = KeystrokeDecoder(bundle, provider="cpu")
    errors = {"conv": [], "transformer": [], "lm": []}
    for text, windows in zip(SENTENCES, _sentences(bundle, noisy)):
        for window in windows:
            decoder.add_window(window)
        decoder.end_sentence()
        for variant, decoded in decoder.last_sentence.variants.items():
            errors[variant].append(cer(decoded, text))
    assert np.mean(errors["conv"]) > 0.1  # the noise makes real errors
    assert np.mean(errors["lm"]) < np.mean(errors["transformer"])


def test_clean_templates_decode_exactly(tmp_path):
    recording = tb.keystroke_recording(["hello there", "good night"], noise=0.0)
    pre = tb.identity_preprocessing(recording.channels)
    bundle = tb.template_bundle(tmp_path / "b", recording.channels, pre, scale=12.0)
    for text, windows in zip(["hello there", "good night"], _sentences(bundle, recording)):
        decoder = KeystrokeDecoder(bundle, provider="cpu")
        for window in windows:
            decoder.add_window(window)
        decoder.end_sentence()
        assert decoder.last_sentence.variants == dict.fromkeys(("conv", "transformer", "lm"), text)


def test_text_events(bundle, noisy):
    decoder = KeystrokeDecoder(bundle, provider="cpu")
    first, second = _sentences(bundle, noisy)[:2]
    decoder.start_sentence(SENTENCES[0])
    for window in first:
        before = {"windowed": 1.0}
        event = decoder.add_window(window, stages=before)
        assert event.kind == "keystroke" and event.target == SENTENCES[0]
        assert event.timestamp == window.marker.timestamp
        assert len(event.confidence) == len(event.hypothesis) == decoder.n_keystrokes
        assert all(0.0 <= c <= 1.0 for c in event.confidence)
        probs = [p for _, p in event.candidates]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True)
        assert sum(probs) <= 1.0 + 1e-9 and {c for c, _ in event.candidates} <= set(DISPLAY_CHARS)
        assert before["windowed"] <= event.stages["inferred"] <= event.stages["decoded"]
        assert event.stages["windowed"] == 1.0 and before == {"windowed": 1.0}
    end = decoder.end_sentence(timestamp=99.0)
    first_text = decoder.last_sentence.text
    assert (end.committed, end.hypothesis, end.confidence) == (first_text, "", ())
    assert end.timestamp == 99.0 and end.target == SENTENCES[0]
    texts = [t for t, _ in end.candidates]
    shares = [p for _, p in end.candidates]
    assert texts[0] == first_text and len(set(texts)) == len(texts) == 5
    assert shares == sorted(shares, reverse=True) and sum(shares) <= 1.0 + 1e-9
    event = decoder.add_window(second[0])  # opens the next sentence by itself
    assert event.committed == first_text and event.target is None
    gap = decoder.mark_gap(123.0)
    assert (gap.kind, gap.hypothesis, gap.timestamp) == ("gap", event.hypothesis, 123.0)
    decoder.end_sentence()
    assert decoder.last_sentence.gaps == (123.0,)
    assert decoder.committed == f"{first_text} {decoder.last_sentence.text}"


@pytest.mark.parametrize("live_beam", ["incremental", "full"])
def test_windows_decoded_together_commit_what_one_at_a_time_does(bundle, noisy, live_beam):
    # add_windows() runs the sentence graph once for a batch (a backlog's windows): each key
    # still gets its event (None where skipped), the batch's last key sees the same revision as
    # one at a time, and the committed sentence is the same.
    single = KeystrokeDecoder(bundle, provider="cpu", live_beam=live_beam)
    batched = KeystrokeDecoder(bundle, provider="cpu", live_beam=live_beam)
    for windows in _sentences(bundle, noisy):
        bad = Window(windows[2].data, windows[2].timestamps, windows[2].marker, False, 0.0)
        windows = [*windows[:2], bad, *windows[2:]]
        expected = [single.add_window(w) for w in windows]
        got = []
        for first in range(0, len(windows), 3):
            batch = windows[first : first + 3]
            events = batched.add_windows(batch, [{"windowed": 1.0}] * len(batch))
            got += events
            last = first + len(batch) - 1
            if events[-1] is not None:  # the same keys seen: the same revision
                assert events[-1].candidates == expected[last].candidates
                assert events[-1].stages["windowed"] == 1.0
                if live_beam == "full":  # the live beam re-ran over that revision
                    assert events[-1].hypothesis == expected[last].hypothesis
        assert [e is None for e in got] == [e is None for e in expected]
        assert [e.timestamp for e in got if e] == [e.timestamp for e in expected if e]
        assert all(len(e.hypothesis) == len(e.confidence) for e in got if e)
        single.end_sentence()
        batched.end_sentence()
        one, many = single.last_sentence, batched.last_sentence
        assert many.text == one.text and many.variants == one.variants
        assert many.n_skipped == one.n_skipped == 1
        np.testing.assert_allclose(many.log_probs, one.log_probs, rtol=1e-5, atol=1e-6)
    assert batched.committed == single.committed
    with pytest.raises(ValueError, match="one \\(or None\\) per window"):
        batched.add_windows(windows[:2], [None])


def test_live_context_is_bounded_and_the_committed_sentence_is_revised_whole(
    bundle, noisy, monkeypatch
):
    # live (incremental beam), the sentence graph reads only the newest LIVE_CONTEXT_KEYS
    # keystrokes (its cost grows with its input); end_sentence() re-reads the whole sentence, so
    # what is committed is what the full-context decoder commits
    monkeypatch.setattr(keystroke_module, "LIVE_CONTEXT_KEYS", 4)
    live = KeystrokeDecoder(bundle, provider="cpu")
    whole = KeystrokeDecoder(bundle, provider="cpu", live_beam="full")
    lengths = []
    run = live._sentence.run

    def recorded(feeds, run=run):
        lengths.append(feeds["key_mask"].shape[1])
        return run(feeds)

    monkeypatch.setattr(live._sentence, "run", recorded)
    for windows in _sentences(bundle, noisy):
        assert len(windows) > 8
        lengths.clear()
        for window in windows:
            one, other = live.add_window(window), whole.add_window(window)
            assert len(one.hypothesis) == len(other.hypothesis)
        assert lengths == [min(n, 4) for n in range(1, len(windows) + 1)]
        live.end_sentence()
        whole.end_sentence()
        assert lengths[-1] == len(windows)  # the committed revision read every keystroke
        one, other = live.last_sentence, whole.last_sentence
        np.testing.assert_allclose(one.log_probs, other.log_probs, rtol=1e-5, atol=1e-6)
        assert one.text == other.text and one.variants == other.variants
    assert live.committed == whole.committed


def test_warming_before_each_keystroke_changes_nothing_it_decodes(bundle, noisy):
    # warm() runs the graphs and the beam's LM lookups ahead of a keystroke (the live session
    # does, to find them in the CPU caches): every event and the committed text stay the same
    plain = KeystrokeDecoder(bundle, provider="cpu")
    warmed = KeystrokeDecoder(bundle, provider="cpu")
    runtime = warmed._keystroke
    assert warmed.warm(0.0)  # the load-time run is its last input
    assert not warmed.warm(3600.0)  # it just ran: not idle for an hour
    for windows in _sentences(bundle, noisy):
        for window in windows:
            before = runtime.last_run
            assert warmed.warm(0.0) and runtime.last_run > before
            one, other = plain.add_window(window), warmed.add_window(window)
            assert (other.hypothesis, other.candidates) == (one.hypothesis, one.candidates)
        plain.end_sentence()
        assert warmed.warm(0.0)  # between sentences too (no open sentence)
        warmed.end_sentence()
        np.testing.assert_allclose(
            warmed.last_sentence.log_probs, plain.last_sentence.log_probs, rtol=1e-5, atol=1e-6
        )
    assert warmed.committed == plain.committed and len(warmed.committed) > 20


def test_invalid_and_classless_windows_are_skipped_and_counted(bundle, noisy):
    decoder = KeystrokeDecoder(bundle, provider="cpu", use_lm=False)
    windows = _sentences(bundle, noisy)[0][:4]
    bad = Window(windows[1].data, windows[1].timestamps, windows[1].marker, False, 0.0)
    backspace = Window(
        windows[2].data, windows[2].timestamps, Marker(5.0, "key:backspace"), True, 0
    )
    assert decoder.add_window(bad) is None and decoder.add_window(backspace) is None
    for window in (windows[0], windows[3]):
        assert decoder.add_window(window).kind == "keystroke"
    end = decoder.end_sentence()
    result = decoder.last_sentence
    assert (result.n_skipped, result.n_ignored, len(result.text)) == (1, 1, 2)
    assert end.candidates == () and result.text == result.variants["transformer"]
    assert key_class("key:backspace") is None and key_class("key:shift") is None
    assert key_class("key:É") == key_class("key:e") == 4 and key_class("sentence_end:x") is None


def test_wrong_state_and_bad_windows(bundle):
    with pytest.raises(ValueError, match=r"'live_beam': 'lazy'; use one of \('incremental'"):
        KeystrokeDecoder(bundle, provider="cpu", live_beam="lazy")
    decoder = KeystrokeDecoder(bundle, provider="cpu")
    with pytest.raises(RuntimeError, match=r"no sentence open: call start_sentence\(\)"):
        decoder.end_sentence()
    decoder.start_sentence()
    with pytest.warns(UserWarning, match="repeated on an empty sentence"):
        decoder.start_sentence("again")
    with pytest.raises(ValueError, match=r"takes windows of shape .* = \(4, 25\), got \(4, 24\)"):
        decoder.add_keystroke(np.zeros((4, 24), np.float32), 0.0)
    window = np.zeros((4, 25), np.float32)
    window[1, 3] = np.nan
    with pytest.raises(ValueError, match="holds NaN or Inf. Skip invalid windows"):
        decoder.add_keystroke(window, 0.0)
    decoder.add_keystroke(np.zeros((4, 25), np.float32), 0.0)
    with pytest.raises(RuntimeError, match=r"1 keystroke.* still open: call end_sentence\(\)"):
        decoder.start_sentence()
    decoder.end_sentence()
    decoder.start_sentence()
    empty = decoder.end_sentence()
    assert (empty.kind, empty.candidates, decoder.last_sentence.text) == ("sentence_end", (), "")
    decoder.reset()
    assert decoder.committed == "" and not decoder.in_sentence


def test_bad_bundles(tmp_path, noisy):
    pre = tb.identity_preprocessing(noisy.channels)
    speech = tb.template_bundle(tmp_path / "speech", noisy.channels, pre, task="speech")
    with pytest.raises(ValueError, match=r"is a 'speech' decoder, but typing decoding needs"):
        KeystrokeDecoder(speech, provider="cpu")
    good = tb.template_bundle(tmp_path / "good", noisy.channels, pre)
    swapped = {**good.manifest.to_dict(), "name": "swapped"}
    graphs = {"keystroke": good.graph_path("sentence"), "sentence": good.graph_path("keystroke")}
    (tmp_path / "swapped").mkdir()
    (tmp_path / "swapped" / "lm.npz").write_bytes((good.path / "lm.npz").read_bytes())
    bundle = save_bundle(tmp_path / "swapped", swapped, graphs)
    with pytest.raises(ValueError, match=r"'keystroke' graph takes \['embeddings', 'key_mask'\]"):
        KeystrokeDecoder(bundle, provider="cpu")
    (good.path / "lm.npz").unlink()
    with pytest.raises(FileNotFoundError, match="language model lm.npz is missing"):
        KeystrokeDecoder(good, provider="cpu")
    assert KeystrokeDecoder(good, provider="cpu", use_lm=False).lm is None
    ctc = tb.ctc_bundle(tmp_path / "ctc", noisy.channels, pre)
    with pytest.raises(ValueError, match=r"brain2qwerty_v2 decoder; KeystrokeDecoder runs"):
        KeystrokeDecoder(ctc, provider="cpu")
    with pytest.raises(ValueError, match=r"brain2qwerty_v1 decoder; CTCDecoder runs"):
        CTCDecoder(good, provider="cpu", use_lm=False)
    assert isinstance(open_decoder(ctc.path, provider="cpu"), CTCDecoder)


def test_ctc_decoder_streams_and_ends_with_the_beam(tmp_path, noisy):
    pre = tb.identity_preprocessing(noisy.channels)
    bundle = tb.ctc_bundle(tmp_path / "ctc", noisy.channels, pre)
    data = np.clip(noisy.data[:400], -5, 5)
    stamps = noisy.timestamps[:400]
    decoder = CTCDecoder(bundle, provider="cpu", hop_s=0.5)
    events = [decoder.add_data(data[i : i + 7], stamps[i : i + 7]) for i in range(0, 400, 7)]
    live = [e for e in events if e is not None]
    # the graph re-runs once 25 new samples (hop_s) are in: every 4 chunks of 7 samples
    assert len(live) == 14 and all(e.kind == "keystroke" for e in live)
    assert all(len(e.confidence) == len(e.hypothesis) for e in live)
    assert all(0 <= c <= 1 for e in live for c in e.confidence)
    end = decoder.end_sentence()
    result = decoder.last_sentence
    assert result.log_probs.shape == (400, 30) and result.variants["greedy"]
    lm = CharNgramLM.load(bundle.path / "lm.npz")
    assert result.text == CTCPrefixBeamDecoder(lm).decode(result.log_probs)
    assert end.committed == result.text and end.candidates[0][0] == result.text
    one_shot = CTCDecoder(bundle, provider="cpu")
    one_shot.add_data(data, stamps)
    one_shot.end_sentence()
    assert one_shot.last_sentence.text == result.text
    np.testing.assert_allclose(one_shot.last_sentence.log_probs, result.log_probs, atol=1e-6)
    with pytest.raises(ValueError, match=r"expected processed samples \(n_times, 4\)"):
        decoder.add_data(data[:, :3], stamps)
    small = CTCDecoder(bundle, provider="cpu", use_lm=False, hop_s=0.5, max_sentence_s=2.0)
    ends = [small.add_data(data[i : i + 50], stamps[i : i + 50]) for i in range(0, 400, 50)]
    # 100-sample sentences: the 3rd, 5th and 7th chunks would overflow and end one each
    assert [i for i, e in enumerate(ends) if e.kind == "sentence_end"] == [2, 4, 6]
    assert small.n_sentences == 3 and small.in_sentence


@pytest.mark.slow
def test_exported_models_match_torch(tmp_path):
    torch = pytest.importorskip("torch")
    from acquisition.simulator import Simulator

    recording = Simulator("eeg", "typing", snr=2.0, seed=1, sfreq=100.0).generate(20.0)
    bundle, model = tb.torch_bundle(tmp_path / "v1", "brain2qwerty_v1", recording)
    windows = epochs_from_recording(recording, preprocess_config(bundle), make_windower(bundle))
    decoder = KeystrokeDecoder(bundle, provider="cpu")
    for window in windows[:12]:
        decoder.add_window(window)
    decoder.end_sentence()
    x = torch.from_numpy(np.stack([w.data for w in windows[:12]]))[None]
    with torch.no_grad():
        conv, logits = model.eval().forward_all(x, torch.tensor([1]), torch.ones(1, 12).bool())
    result = decoder.last_sentence
    np.testing.assert_allclose(result.log_probs, torch.log_softmax(logits[0], -1), atol=1e-4)
    np.testing.assert_allclose(result.conv_log_probs, torch.log_softmax(conv[0], -1), atol=1e-4)

    bundle, model = tb.torch_bundle(tmp_path / "v2", "brain2qwerty_v2", recording)
    processed = preprocess_recording_for(bundle, recording)
    data, stamps = processed.data[:300], processed.timestamps[:300]
    decoder = CTCDecoder(bundle, provider="cpu")
    for i in range(0, 300, 40):
        decoder.add_data(data[i : i + 40], stamps[i : i + 40])
    decoder.end_sentence()
    x = torch.from_numpy(np.clip(data.T, -5, 5)[None].copy())
    with torch.no_grad():
        expected = model.eval()(x, torch.tensor([1]))[0]
    np.testing.assert_allclose(decoder.last_sentence.log_probs, expected, atol=1e-4)


def preprocess_recording_for(bundle, recording):
    """The recording through the bundle's preprocessing."""
    from bci_app.processing.preprocessing import preprocess_recording

    return preprocess_recording(recording, preprocess_config(bundle))
