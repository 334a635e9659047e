"""Beam decoders: keystroke beam search with the LM, CTC greedy and prefix beam search."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from bci_app.lm.beam import CTCPrefixBeamDecoder, KeystrokeBeamDecoder, ctc_greedy_decode
from bci_app.lm.model import EOS, CharNgramLM, default_lm
from bci_app.typing.alphabet import N_CLASSES, cer, char_to_class, classes_to_text, text_to_classes

REPO = Path(__file__).resolve().parents[2]
SENTENCES = (REPO / "acquisition" / "data" / "text" / "sentences.txt").read_text("utf-8")
HELD_OUT = SENTENCES.splitlines()
BLANK = N_CLASSES


@pytest.fixture(scope="module")
def lm(tmp_path_factory) -> CharNgramLM:
    return default_lm(cache_dir=tmp_path_factory.mktemp("cache"))


def noisy_log_posteriors(labels, rng, n_outputs=N_CLASSES, low=0.05, high=0.6) -> np.ndarray:
    """True output gets probability p ~ U(low, high); the rest is spread at random (Dirichlet)."""
    labels = np.asarray(labels)
    p_true = rng.uniform(low, high, len(labels))
    probs = rng.dirichlet(np.full(n_outputs, 0.3), len(labels)) * (1 - p_true)[:, None]
    probs[np.arange(len(labels)), labels] = 0.0
    probs *= ((1 - p_true) / probs.sum(axis=1))[:, None]
    probs[np.arange(len(labels)), labels] = p_true
    return np.log(probs)


def ctc_path(classes, rng, blank=BLANK) -> np.ndarray:
    """A frame labelling of ``classes``: each character 1-2 frames, blanks between some."""
    frames, previous = [], None
    for cls in classes:
        if cls == previous or rng.random() < 0.5:
            frames += [blank] * int(rng.integers(1, 3))
        frames += [cls] * int(rng.integers(1, 3))
        previous = cls
    return np.array([*frames, blank])


def one_hot_log(labels, n_outputs, peak=0.97) -> np.ndarray:
    probs = np.full((len(labels), n_outputs), (1 - peak) / (n_outputs - 1))
    probs[np.arange(len(labels)), labels] = peak
    return np.log(probs)


def test_lm_beam_beats_argmax_on_noisy_keystrokes(lm):
    rng = np.random.default_rng(0)
    decoder = KeystrokeBeamDecoder(lm, top_k=5, beam_width=30)
    argmax_cer, beam_cer = [], []
    for sentence in HELD_OUT[:40]:
        log_post = noisy_log_posteriors(text_to_classes(sentence), rng)
        argmax_cer.append(cer(classes_to_text(log_post.argmax(axis=1)), sentence))
        beam_cer.append(cer(decoder.decode(log_post), sentence))
    assert np.mean(argmax_cer) > 0.1
    assert np.mean(beam_cer) < 0.5 * np.mean(argmax_cer)


def test_without_lm_the_beam_returns_the_argmax():
    rng = np.random.default_rng(1)
    log_post = noisy_log_posteriors(text_to_classes(HELD_OUT[0]), rng)
    decoded = KeystrokeBeamDecoder(None).decode(log_post)
    assert decoded == classes_to_text(log_post.argmax(axis=1))


def test_lm_corrects_a_confusable_keystroke(lm):
    text = "the cat sat on the mat"
    log_post = one_hot_log(text_to_classes(text), N_CLASSES, peak=0.6)
    log_post[1] = np.log(np.full(N_CLASSES, 0.2 / 27))
    log_post[1, char_to_class("q")], log_post[1, char_to_class("h")] = np.log(0.42), np.log(0.38)
    assert classes_to_text(log_post.argmax(axis=1)).startswith("tqe")
    assert KeystrokeBeamDecoder(lm).decode(log_post) == text


def test_incremental_steps_equal_offline_decode(lm):
    rng = np.random.default_rng(2)
    log_post = noisy_log_posteriors(text_to_classes(HELD_OUT[5]), rng)
    offline = KeystrokeBeamDecoder(lm, lm_weight=0.7)
    live = KeystrokeBeamDecoder(lm, lm_weight=0.7)
    for n_keys, row in enumerate(log_post, start=1):
        best = live.step(row)
        assert len(best) == n_keys == live.n_keystrokes
    assert live.finalize() == offline.decode(log_post)
    assert live.hypotheses() == offline.hypotheses()
    live.reset()
    assert live.hypotheses()[0].text == "" and live.n_keystrokes == 0


def test_scores_are_brain_plus_weighted_lm(lm):
    rng = np.random.default_rng(3)
    log_post = noisy_log_posteriors(text_to_classes("a small test"), rng)
    decoder = KeystrokeBeamDecoder(lm, lm_weight=0.8, beam_width=12)
    decoder.decode(log_post)
    hypotheses = decoder.hypotheses()
    assert len(hypotheses) == 12 and len({h.text for h in hypotheses}) == 12
    assert [h.score for h in hypotheses] == sorted((h.score for h in hypotheses), reverse=True)
    for hyp in hypotheses[:3]:
        classes = text_to_classes(hyp.text)
        brain = log_post[np.arange(len(classes)), classes].sum()
        lm_score = sum(lm.log_prob(c, classes[:i]) for i, c in enumerate(classes.tolist()))
        assert hyp.brain_log_prob == pytest.approx(brain, rel=1e-9)
        assert hyp.lm_log_prob == pytest.approx(lm_score, rel=1e-5)
        assert hyp.score == pytest.approx(brain + 0.8 * lm_score, rel=1e-9)
    final = {h.text: h for h in decoder.hypotheses(final=True)}
    for hyp in hypotheses[:3]:
        eos = lm.log_prob(EOS, hyp.text)
        assert final[hyp.text].score == pytest.approx(hyp.score + 0.8 * eos, rel=1e-6)


def test_exhaustive_beam_finds_the_best_scoring_sequence(lm):
    rng = np.random.default_rng(4)
    log_post = noisy_log_posteriors(text_to_classes("to"), rng, low=0.1, high=0.3)
    weight = 0.5
    decoder = KeystrokeBeamDecoder(lm, top_k=N_CLASSES, beam_width=N_CLASSES**2, lm_weight=weight)
    best_score, best_text = -np.inf, None
    for first, second in itertools.product(range(N_CLASSES), repeat=2):
        lm_score = lm.log_prob(first, []) + lm.log_prob(second, [first])
        lm_score += lm.log_prob(EOS, [first, second])
        score = log_post[0, first] + log_post[1, second] + weight * lm_score
        if score > best_score:
            best_score, best_text = score, classes_to_text([first, second])
    assert decoder.decode(log_post) == best_text


def test_logits_are_normalised_and_bad_posteriors_refused(lm):
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(6, N_CLASSES)) * 3 + 7
    decoder = KeystrokeBeamDecoder(lm)
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert decoder.decode(logits) == decoder.decode(log_softmax)
    with pytest.raises(ValueError, match="'log_posteriors'.*29 log-posteriors per row"):
        decoder.step(np.zeros(30))
    with pytest.raises(ValueError, match="probabilities"):
        decoder.step(np.full(N_CLASSES, 1 / N_CLASSES))
    with pytest.raises(ValueError, match="NaN"):
        decoder.step(np.full(N_CLASSES, np.nan))
    with pytest.raises(ValueError, match="one keystroke"):
        decoder.step(np.zeros((2, N_CLASSES)))
    with pytest.raises(ValueError, match="'top_k'"):
        KeystrokeBeamDecoder(lm, top_k=0)
    with pytest.raises(ValueError, match="'lm_weight'"):
        KeystrokeBeamDecoder(lm, lm_weight=-1)
    with pytest.raises(TypeError, match="'lm'"):
        KeystrokeBeamDecoder("english")


@pytest.mark.parametrize("blank", [BLANK, 0])
def test_ctc_greedy_and_beam_decode_a_clean_path(lm, blank):
    rng = np.random.default_rng(6)
    text = "hello, all 3 good"
    outputs = text_to_classes(text) + (1 if blank == 0 else 0)
    labels = ctc_path(outputs.tolist(), rng, blank)
    log_probs = one_hot_log(labels, N_CLASSES + 1)
    expected = "hello. all 0 good"
    assert ctc_greedy_decode(log_probs, blank=blank) == expected
    assert CTCPrefixBeamDecoder(None, blank=blank).decode(log_probs) == expected
    assert CTCPrefixBeamDecoder(lm, blank=blank).decode(log_probs) == expected


def test_ctc_repeats_merge_unless_a_blank_separates_them():
    h, e, l_, o = (char_to_class(c) for c in "helo")
    merged = one_hot_log([h, h, e, l_, l_, o], N_CLASSES + 1)
    separated = one_hot_log([h, e, l_, BLANK, l_, o, o], N_CLASSES + 1)
    assert ctc_greedy_decode(merged) == "helo"
    assert ctc_greedy_decode(separated) == "hello"
    assert CTCPrefixBeamDecoder(None).decode(separated) == "hello"


def test_ctc_prefix_probabilities_equal_the_sum_over_alignments():
    rng = np.random.default_rng(7)
    a, b = char_to_class("a"), char_to_class("b")
    n_frames = 5
    log_probs = np.full((n_frames, N_CLASSES + 1), -np.inf)
    log_probs[:, [a, b, BLANK]] = np.log(rng.dirichlet(np.ones(3), n_frames))
    decoder = CTCPrefixBeamDecoder(None, top_k=2, beam_width=64)
    decoder.decode(log_probs)
    exact: dict[str, float] = {}
    for path in itertools.product([a, b, BLANK], repeat=n_frames):
        collapsed = [c for i, c in enumerate(path) if c != BLANK and (i == 0 or c != path[i - 1])]
        text = classes_to_text(collapsed)
        prob = np.exp(log_probs[np.arange(n_frames), path].sum())
        exact[text] = exact.get(text, 0.0) + prob
    hypotheses = decoder.hypotheses()
    assert len(hypotheses) == len(exact)
    for hyp in hypotheses:
        assert np.exp(hyp.brain_log_prob) == pytest.approx(exact[hyp.text], rel=1e-9)
    assert hypotheses[0].text == max(exact, key=exact.get)


def test_ctc_lm_beam_beats_greedy_on_noisy_frames(lm):
    rng = np.random.default_rng(8)
    decoder = CTCPrefixBeamDecoder(lm, beam_width=16)
    greedy_cer, beam_cer = [], []
    for sentence in HELD_OUT[200:215]:
        labels = ctc_path(text_to_classes(sentence).tolist(), rng)
        log_probs = noisy_log_posteriors(labels, rng, N_CLASSES + 1, low=0.1, high=0.7)
        greedy_cer.append(cer(ctc_greedy_decode(log_probs), sentence))
        beam_cer.append(cer(decoder.decode(log_probs), sentence))
    assert np.mean(greedy_cer) > 0.1
    assert np.mean(beam_cer) < 0.5 * np.mean(greedy_cer)


def test_ctc_streaming_in_chunks_equals_one_shot(lm):
    rng = np.random.default_rng(9)
    labels = ctc_path(text_to_classes(HELD_OUT[300]).tolist(), rng)
    log_probs = noisy_log_posteriors(labels, rng, N_CLASSES + 1, low=0.2, high=0.8)
    one_shot = CTCPrefixBeamDecoder(lm, beam_width=10)
    expected = one_shot.decode(log_probs)
    streaming = CTCPrefixBeamDecoder(lm, beam_width=10)
    bounds = np.sort(rng.choice(np.arange(1, len(log_probs)), 6, replace=False))
    for chunk in np.split(log_probs, bounds):
        best = streaming.step(chunk)
        assert best == streaming.hypotheses(1)[0].text
    streaming.step(np.zeros((0, N_CLASSES + 1)))
    assert streaming.n_frames == len(log_probs)
    assert streaming.finalize() == expected
    assert streaming.hypotheses(final=True) == one_shot.hypotheses(final=True)


def test_ctc_bad_input_is_refused(lm):
    with pytest.raises(ValueError, match="'blank'"):
        CTCPrefixBeamDecoder(lm, blank=30)
    with pytest.raises(ValueError, match="'frames'.*30 log-posteriors"):
        CTCPrefixBeamDecoder(lm).step(np.zeros((3, 29)))
    with pytest.raises(ValueError, match="'log_probs'.*shape \\(n_frames, 30\\)"):
        CTCPrefixBeamDecoder(lm).decode(np.zeros(30))
    with pytest.raises(ValueError, match="'insertion_bonus'"):
        CTCPrefixBeamDecoder(lm, insertion_bonus=np.inf)
    with pytest.raises(ValueError, match="-inf everywhere"):
        ctc_greedy_decode(np.full((2, 30), -np.inf))
