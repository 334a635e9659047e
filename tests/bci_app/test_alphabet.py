"""The 29-class typing alphabet: character mapping, normalisation, CER and WER."""

from __future__ import annotations

import numpy as np
import pytest

from bci_app.typing.alphabet import (
    CLASSES,
    N_CLASSES,
    NUMBER,
    SPACE,
    SPECIAL,
    char_to_class,
    class_to_char,
    classes_to_text,
    map_text,
    normalize_text,
    text_to_classes,
)
from bci_app.typing.alphabet import cer as char_error_rate
from bci_app.typing.alphabet import wer as word_error_rate


def test_classes_are_letters_space_special_number():
    assert N_CLASSES == len(CLASSES) == 29
    assert CLASSES[:26] == tuple("abcdefghijklmnopqrstuvwxyz")
    assert CLASSES[SPACE] == "space" and CLASSES[SPECIAL] == "special"
    assert CLASSES[NUMBER] == "number"
    for index in range(N_CLASSES):
        assert char_to_class(class_to_char(index)) == index


@pytest.mark.parametrize(
    ("char", "expected"),
    [
        ("é", "e"),
        ("É", "e"),
        ("ç", "c"),
        ("ñ", "n"),
        ("Ü", "u"),
        ("ß", "s"),
        ("Æ", "a"),
        ("ø", "o"),
        ("ł", "l"),
        ("ﬁ", "f"),
        ("Ａ", "a"),
        ("Q", "q"),
    ],
)
def test_accented_uppercase_and_ligatures_fold_to_one_letter(char, expected):
    assert char_to_class(char) == char_to_class(expected)


@pytest.mark.parametrize("char", ["0", "7", "²", "½", "٣", "①"])
def test_digits_and_numerals_map_to_number(char):
    assert char_to_class(char) == NUMBER


@pytest.mark.parametrize("char", [".", ",", "!", "'", "-", "—", "’", "€", "%", "α", "中", "😀"])
def test_punctuation_symbols_and_other_scripts_map_to_special(char):
    assert char_to_class(char) == SPECIAL


@pytest.mark.parametrize("char", ["\t", "\n", "\u00a0", "\u2003"])
def test_other_whitespace_maps_to_space(char):
    assert char_to_class(char) == SPACE


@pytest.mark.parametrize("char", ["\b", "\u200b", "\ufeff", "\x07"])
def test_control_and_format_characters_are_ignored(char):
    with pytest.raises(ValueError, match="control/format character"):
        char_to_class(char)
    assert classes_to_text(text_to_classes(f"a{char}b")) == "ab"


def test_normalize_text_keeps_one_class_per_character():
    assert normalize_text("Café, 42!") == "cafe. 00."
    text = "Naïve façade — 3½ Œuvres"
    assert len(normalize_text(text)) == len(text)
    assert text_to_classes(text).dtype == np.int8


def test_map_text_counts_every_kind_of_mapping():
    classes, stats = map_text("Héllo, Wörld 42!\u200b")
    assert classes_to_text(classes) == "hello. world 00."
    assert stats.counts == {"exact": 8, "folded": 4, "number": 2, "special": 2, "ignored": 1}
    assert stats.n_chars == 17
    assert stats.examples["folded"] == {"H": 1, "é": 1, "W": 1, "ö": 1}
    assert stats.examples["ignored"] == {"\u200b": 1}


def test_bad_characters_and_indices_are_refused():
    with pytest.raises(ValueError, match="single character"):
        char_to_class("ab")
    with pytest.raises(ValueError, match="class index in"):
        class_to_char(29)
    with pytest.raises(ValueError, match="class indices must lie"):
        classes_to_text([0, 31])
    with pytest.raises(TypeError, match="'text'"):
        map_text(b"bytes")


def _reference_levenshtein(source, target) -> int:
    previous = list(range(len(target) + 1))
    for i, a in enumerate(source, start=1):
        current = [i]
        for j, b in enumerate(target, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a != b)))
        previous = current
    return previous[-1]


def test_cer_is_levenshtein_over_target_length():
    assert char_error_rate("kitten", "sitting", normalize=False) == pytest.approx(3 / 7)
    assert char_error_rate("Hello, World!", "hello. world.") == 0.0
    rng = np.random.default_rng(0)
    for _ in range(50):
        source = "".join(rng.choice(list("abc "), rng.integers(0, 12)))
        target = "".join(rng.choice(list("abc "), rng.integers(1, 12)))
        expected = _reference_levenshtein(source, target) / len(target)
        assert char_error_rate(source, target, normalize=False) == pytest.approx(expected)


def test_wer_counts_word_edits():
    assert word_error_rate("the cat sat", "the cat sat on") == pytest.approx(0.25)
    assert word_error_rate("The dog sat.", "the cat sat.") == pytest.approx(1 / 3)


def test_error_rates_refuse_an_empty_target():
    with pytest.raises(ValueError, match="'target'.*empty"):
        char_error_rate("abc", "")
    with pytest.raises(ValueError, match="'target'.*empty"):
        word_error_rate("abc", "\u200b")
