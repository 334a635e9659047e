"""Character n-gram LM: Kneser-Ney smoothing, English statistics, files, corpora, KenLM adapter."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from bci_app.lm.kneser_ney import discounts
from bci_app.lm.model import (
    DEFAULT_CORPUS,
    EOS,
    CharLanguageModel,
    CharNgramLM,
    default_lm,
    train_lm_cli,
)
from bci_app.typing.alphabet import N_CLASSES, char_to_class, text_to_classes

REPO = Path(__file__).resolve().parents[2]
SENTENCES = (REPO / "acquisition" / "data" / "text" / "sentences.txt").read_text("utf-8")
HELD_OUT = SENTENCES.splitlines()


@pytest.fixture(scope="module")
def corpus_lines() -> list[str]:
    return DEFAULT_CORPUS.read_text("utf-8").splitlines()


@pytest.fixture(scope="module")
def lm6(corpus_lines) -> CharNgramLM:
    return CharNgramLM.train(corpus_lines, 6)


def _random_states(lm: CharNgramLM, rng: np.random.Generator, n: int):
    for _ in range(n):
        context = rng.integers(0, N_CLASSES, rng.integers(0, 12)).tolist()
        yield context, bool(rng.integers(2))


@pytest.mark.parametrize("order", [1, 2, 4, 6])
def test_distributions_normalise_over_classes_and_eos(corpus_lines, order):
    lm = CharNgramLM.train(corpus_lines[:1500], order)
    rng = np.random.default_rng(order)
    for context, start in _random_states(lm, rng, 200):
        log_probs = lm.log_probs(context, sentence_start=start)
        assert log_probs.shape == (N_CLASSES + 1,)
        assert np.exp(log_probs.astype(np.float64)).sum() == pytest.approx(1.0, abs=1e-5)
        assert np.all(np.isfinite(log_probs))


def test_kneser_ney_probabilities_match_hand_computation():
    lm = CharNgramLM.train(["ab", "ab", "b"], order=2)
    # Unigram continuation counts: a 1 (after BOS), b 2 (after a, BOS), EOS 1 (after b); total 4.
    # Too few counts for the count-of-counts estimate: discounts fall back to 0.5, 1.0, 1.5.
    uniform = 1 / 30
    p1 = {"a": 0.5 / 4 + 0.5 * uniform, "b": 1 / 4 + 0.5 * uniform, "eos": 0.5 / 4 + 0.5 * uniform}
    a, b = char_to_class("a"), char_to_class("b")
    assert np.exp(lm.log_prob(b, "a")) == pytest.approx(0.5 + 0.5 * p1["b"], rel=1e-6)
    assert np.exp(lm.log_prob(a, "")) == pytest.approx(1 / 3 + 0.5 * p1["a"], rel=1e-6)
    assert np.exp(lm.log_prob(EOS, "ab")) == pytest.approx(0.5 + 0.5 * p1["eos"], rel=1e-6)
    # An unseen context ("c") backs off to the unigram distribution.
    assert np.exp(lm.log_prob(b, "c", sentence_start=False)) == pytest.approx(p1["b"], rel=1e-6)
    assert np.exp(lm.log_prob(char_to_class("z"), "c")) == pytest.approx(0.5 * uniform, rel=1e-6)


def test_modified_kneser_ney_discounts_follow_count_of_counts():
    counts = np.array([1, 1, 1, 1, 2, 2, 3, 4, 9])  # n1=4, n2=2, n3=1, n4=1 -> Y = 0.5
    np.testing.assert_allclose(discounts(counts), [0.5, 1.25, 1.0])


def test_english_is_more_likely_than_shuffled_text(lm6):
    rng = np.random.default_rng(0)
    better = 0
    for sentence in HELD_OUT[:100]:
        shuffled = "".join(rng.permutation(list(sentence)))
        better += lm6.sentence_log_prob(sentence)[0] > lm6.sentence_log_prob(shuffled)[0]
    assert better >= 98


def test_held_out_perplexity_falls_with_order(corpus_lines, lm6):
    perplexity = {
        order: CharNgramLM.train(corpus_lines, order).perplexity(HELD_OUT) for order in (1, 3)
    }
    perplexity[6] = lm6.perplexity(HELD_OUT)
    assert perplexity[6] < perplexity[3] < perplexity[1] < 30
    assert isinstance(lm6, CharLanguageModel)


def test_save_load_round_trip(tmp_path, lm6):
    path = lm6.save(tmp_path / "char6.npz")
    loaded = CharNgramLM.load(path)
    assert loaded.order == 6 and loaded.stats == lm6.stats
    rng = np.random.default_rng(1)
    for context, start in _random_states(lm6, rng, 100):
        np.testing.assert_array_equal(
            loaded.log_probs(context, sentence_start=start),
            lm6.log_probs(context, sentence_start=start),
        )
    with np.load(path, allow_pickle=False) as archive:
        assert str(archive["format"]) == "bci-app-char-ngram-lm" and int(archive["version"]) == 1


def _rewrite(source: Path, target: Path, **changes) -> Path:
    with np.load(source, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays.update(changes)
    for name in [name for name, value in changes.items() if value is None]:
        del arrays[name]
    with target.open("wb") as handle:
        np.savez(handle, **arrays)
    return target


def test_corrupt_and_foreign_files_raise_clear_errors(tmp_path, corpus_lines):
    good = CharNgramLM.train(corpus_lines[:300], 3).save(tmp_path / "good.npz")
    with pytest.raises(FileNotFoundError, match="no language model file"):
        CharNgramLM.load(tmp_path / "missing.npz")
    (tmp_path / "noise.npz").write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(ValueError, match="not a readable .npz archive"):
        CharNgramLM.load(tmp_path / "noise.npz")
    (tmp_path / "cut.npz").write_bytes(good.read_bytes()[:2000])
    with pytest.raises(ValueError, match="not a readable .npz archive"):
        CharNgramLM.load(tmp_path / "cut.npz")
    np.savez(tmp_path / "foreign.npz", weights=np.zeros(3))
    with pytest.raises(ValueError, match="not a bci-app character LM"):
        CharNgramLM.load(tmp_path / "foreign.npz")
    newer = _rewrite(good, tmp_path / "newer.npz", version=np.array(99))
    with pytest.raises(ValueError, match="version 99 is newer"):
        CharNgramLM.load(newer)
    negative = _rewrite(good, tmp_path / "neg.npz", counts_2=-np.ones(665, np.int64))
    with pytest.raises(ValueError, match="counts of order 2 are malformed"):
        CharNgramLM.load(negative)
    missing = _rewrite(good, tmp_path / "nocounts.npz", codes_3=None)
    with pytest.raises(ValueError, match="order 3 are missing"):
        CharNgramLM.load(missing)
    with np.load(good, allow_pickle=False) as archive:
        codes, counts = archive["codes_2"], archive["counts_2"]
    kept = codes // 31 != char_to_class("q")  # order 3 still holds contexts ending in "q"
    holed = _rewrite(good, tmp_path / "holed.npz", codes_2=codes[kept], counts_2=counts[kept])
    with pytest.raises(ValueError, match="inconsistent counts"):
        CharNgramLM.load(holed)


def test_corpus_characters_outside_the_alphabet_are_mapped_and_counted():
    lines = ["Ünïcödé “quotes” — ok", "tab\there\x07bell", "😀 emoji 42", "", "   ", "\u200b"]
    lm = CharNgramLM.train(lines, 4)
    assert lm.stats["n_sentences"] == 3
    counts = lm.stats["mapping"]["counts"]
    assert counts == {"exact": 32, "folded": 5, "number": 2, "special": 4, "ignored": 2}
    assert lm.stats["mapping"]["examples"]["special"] == {"“": 1, "”": 1, "—": 1, "😀": 1}
    assert lm.stats["mapping"]["examples"]["ignored"] == {"\x07": 1, "\u200b": 1}
    assert np.exp(lm.log_probs("unic")).sum() == pytest.approx(1.0, abs=1e-5)


def test_train_rejects_bad_order_and_empty_corpus():
    with pytest.raises(ValueError, match="'order'.*1 to 12, got 0"):
        CharNgramLM.train(["hello"], 0)
    with pytest.raises(ValueError, match="no non-empty line"):
        CharNgramLM.train(["", "  \n"], 3)
    with pytest.raises(ValueError, match="'next_class'"):
        CharNgramLM.train(["hello"], 2).log_prob(30)


def test_train_lm_cli_writes_a_loadable_model_and_reports_stats(tmp_path, caplog):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Première phrase, 1er essai.\nSecond line\n\nThird one!\n", "utf-8")
    with caplog.at_level(logging.INFO, logger="bci_app.lm.model"):
        stats = train_lm_cli(corpus, 3, tmp_path / "lm.npz")
    assert stats["n_sentences"] == 3 and stats["order"] == 3
    assert stats["mapping"]["counts"]["number"] == 1
    assert stats["size_bytes"] == (tmp_path / "lm.npz").stat().st_size
    json.dumps(stats)
    assert "Trained a 3-gram character LM on 3 sentences" in caplog.text
    assert CharNgramLM.load(tmp_path / "lm.npz").order == 3
    (tmp_path / "latin1.txt").write_bytes("café\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8 text"):
        train_lm_cli(tmp_path / "latin1.txt", 3, tmp_path / "x.npz")
    with pytest.raises(FileNotFoundError, match="'corpus_path'"):
        train_lm_cli(tmp_path / "nope.txt", 3, tmp_path / "x.npz")
    with pytest.raises(FileNotFoundError, match="'out_path'"):
        train_lm_cli(corpus, 3, tmp_path / "no" / "dir" / "x.npz")
    before = (tmp_path / "lm.npz").read_bytes()
    with pytest.raises(FileExistsError, match=r"lm\.npz.*--overwrite"):
        train_lm_cli(corpus, 2, tmp_path / "lm.npz")
    assert (tmp_path / "lm.npz").read_bytes() == before
    assert train_lm_cli(corpus, 2, tmp_path / "lm.npz", overwrite=True)["order"] == 2


def test_default_lm_is_trained_once_and_cached_by_corpus_hash(tmp_path):
    from bci_app.lm import model as lm_module

    lm = default_lm(cache_dir=tmp_path)
    assert default_lm(cache_dir=tmp_path) is lm and lm.order == 6
    (cache_file,) = (tmp_path / "lm").glob("char6-*-v1.npz")
    np.testing.assert_array_equal(CharNgramLM.load(cache_file).log_probs("th"), lm.log_probs("th"))
    cache_file.write_bytes(b"garbage")
    lm_module._cached_default_lm.cache_clear()
    retrained = default_lm(cache_dir=tmp_path)
    np.testing.assert_array_equal(retrained.log_probs("th"), lm.log_probs("th"))
    assert CharNgramLM.load(cache_file).order == 6


def test_state_interface_matches_context_queries(lm6):
    state = lm6.initial_state()
    for symbol in text_to_classes("the quick brown fox").tolist():
        state = lm6.next_state(state, symbol)
    np.testing.assert_array_equal(lm6.state_log_probs(state), lm6.log_probs("the quick brown fox"))
    np.testing.assert_array_equal(
        lm6.log_probs("k brown fox", sentence_start=False), lm6.log_probs("the quick brown fox")
    )
    # A sentence start conditions the next character differently from a mid-sentence fragment.
    assert lm6.log_prob(char_to_class("t"), "") > lm6.log_prob(
        char_to_class("t"), "x", sentence_start=False
    )
    states = [lm6.initial_state(), state, lm6.null_state()]
    np.testing.assert_array_equal(
        lm6.states_log_probs(states), np.stack([lm6.state_log_probs(s) for s in states])
    )
    with pytest.raises(ValueError, match="read-only"):
        lm6.state_log_probs(state)[0] = 0.0


def test_write_kenlm_corpus_uses_class_tokens(tmp_path):
    from bci_app.lm.kenlm_adapter import write_kenlm_corpus

    n = write_kenlm_corpus(["Hi, 2 you", "", "ok"], tmp_path / "corpus.tok")
    assert n == 2
    assert (tmp_path / "corpus.tok").read_text("utf-8").splitlines() == [
        "h i <special> <space> <number> <space> y o u",
        "o k",
    ]


def test_kenlm_adapter_reads_an_arpa_model(tmp_path):
    pytest.importorskip("kenlm")
    from bci_app.lm.kenlm_adapter import KENLM_TOKENS, KenLMCharLM

    tokens = [*KENLM_TOKENS, "</s>"]
    lines = ["\\data\\", f"ngram 1={len(tokens) + 2}", "", "\\1-grams:", "-99\t<s>\t0", "-2\t<unk>"]
    lines += [f"{np.log10(1 / len(tokens)):.6f}\t{token}" for token in tokens]
    lines += ["", "\\end\\", ""]
    (tmp_path / "uniform.arpa").write_text("\n".join(lines), "utf-8")
    lm = KenLMCharLM(tmp_path / "uniform.arpa")
    assert lm.order == 1
    np.testing.assert_allclose(lm.log_probs("abc"), np.log(1 / len(tokens)), atol=1e-5)


def test_kenlm_adapter_explains_how_to_install_kenlm(tmp_path):
    try:
        import kenlm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("kenlm is installed")
    from bci_app.lm.kenlm_adapter import KenLMCharLM

    with pytest.raises(ImportError, match="pip install kenlm"):
        KenLMCharLM(tmp_path / "model.arpa")
