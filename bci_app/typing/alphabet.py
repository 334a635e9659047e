"""The 29-class typing alphabet of Brain2Qwerty, text normalisation and error rates (CER, WER).

Classes, in index order: ``'a'`` .. ``'z'`` (0-25), ``space`` (26), ``special`` (27, any
punctuation or symbol) and ``number`` (28, any digit). Every input character maps to at most one
class, so one keystroke is always one label and ``len(normalize_text(t))`` equals ``len(t)`` minus
the ignored characters.

Mapping of a character (applied in this order):

1. ``'a'``-``'z'`` and ``' '`` are themselves ("exact").
2. Any other whitespace (tab, newline, no-break and other Unicode spaces) -> ``space``.
3. Control, format, private-use, surrogate and unassigned characters (backspace, zero-width
   joiners, BOM, ...) are ignored: dropped from text, and :func:`char_to_class` raises.
4. Unicode NFKD decomposition with combining marks removed, then lowercase: a result starting with
   a Latin letter gives that letter (``'É'`` -> ``e``, ``'ç'`` -> ``c``, ``'ﬁ'`` -> ``f``, fullwidth
   ``'Ａ'`` -> ``a``); one starting with a digit gives ``number`` (``'²'``, ``'½'``). Latin letters
   with no decomposition use a small table (``ß`` -> ``s``, ``æ`` -> ``a``, ``œ``/``ø`` -> ``o``,
   ``ł`` -> ``l``, ``đ``/``ð`` -> ``d``, ``þ`` -> ``t``, ``ı`` -> ``i``, ...): always the first
   letter, because one keystroke is one class.
5. Any other digit or numeric character -> ``number``.
6. Everything else that is printable (punctuation, symbols, letters of other scripts such as Greek
   or Cyrillic) -> ``special``.

Displayed text (:func:`class_to_char`, :func:`normalize_text`, decoder output) writes ``special`` as
``'.'`` and ``number`` as ``'0'``: the period is by far the most frequent special character in
typed sentences, so a decoded sentence usually reads as the typed one. These are placeholders for
the whole class ("some punctuation", "some digit").
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache

import numpy as np

LETTERS = "abcdefghijklmnopqrstuvwxyz"
SPACE, SPECIAL, NUMBER = 26, 27, 28
N_CLASSES = 29
CLASSES: tuple[str, ...] = (*LETTERS, "space", "special", "number")
SPECIAL_CHAR = "."
NUMBER_CHAR = "0"
DISPLAY_CHARS = LETTERS + " " + SPECIAL_CHAR + NUMBER_CHAR

IGNORED = -1
_KINDS = ("exact", "folded", "number", "special", "ignored")
_DROPPED_CATEGORIES = {"Cc", "Cf", "Co", "Cs", "Cn"}
# Latin letters that NFKD does not decompose: first letter of their usual transliteration.
_LATIN_EXTRA = {
    "ß": "s",
    "æ": "a",
    "œ": "o",
    "ø": "o",
    "ł": "l",
    "đ": "d",
    "ð": "d",
    "þ": "t",
    "ı": "i",
    "ħ": "h",
    "ŧ": "t",
    "ŋ": "n",
    "ĸ": "k",
    "ƒ": "f",
    "ŀ": "l",
    "ɨ": "i",
    "ʉ": "u",
}


@cache
def _classify(char: str) -> tuple[int, str]:
    """Return ``(class index or -1, kind)`` for one character, following the module's rules."""
    if char in LETTERS or char == " ":
        return DISPLAY_CHARS.index(char), "exact"
    if char.isspace():
        return SPACE, "folded"
    if unicodedata.category(char) in _DROPPED_CATEGORIES:
        return IGNORED, "ignored"
    base = "".join(
        c
        for c in unicodedata.normalize("NFKD", char)
        if not unicodedata.category(c).startswith("M")
    ).lower()
    if base:
        first = _LATIN_EXTRA.get(base[0], base[0])
        if first in LETTERS:
            return LETTERS.index(first), "folded"
        if "0" <= first <= "9":
            return NUMBER, "number"
        if first.isspace():
            return SPACE, "folded"
    if unicodedata.category(char).startswith("N"):
        return NUMBER, "number"
    return SPECIAL, "special"


@dataclass
class MappingStats:
    """Counts of how the characters of a text were mapped onto the alphabet.

    Attributes
    ----------
    counts : dict of str to int
        Characters per kind: ``exact`` (already a class: ``a``-``z``, space), ``folded`` (case,
        accents, ligatures, other whitespace), ``number``, ``special`` and ``ignored`` (dropped).
    examples : dict of str to dict of str to int
        For every kind but ``exact``: the characters seen and how often.
    """

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_KINDS, 0))
    examples: dict[str, dict[str, int]] = field(
        default_factory=lambda: {kind: {} for kind in _KINDS[1:]}
    )

    @property
    def n_chars(self) -> int:
        """Number of characters read."""
        return sum(self.counts.values())

    def update(self, other: MappingStats) -> None:
        """Add the counts of ``other`` to these."""
        for kind, n in other.counts.items():
            self.counts[kind] += n
        for kind, chars in other.examples.items():
            for char, n in chars.items():
                self.examples[kind][char] = self.examples[kind].get(char, 0) + n

    def to_dict(self, max_examples: int = 20) -> dict:
        """Return a JSON-ready summary with the ``max_examples`` commonest characters per kind."""
        top = {
            kind: dict(sorted(chars.items(), key=lambda kv: -kv[1])[:max_examples])
            for kind, chars in self.examples.items()
        }
        return {"n_chars": self.n_chars, "counts": dict(self.counts), "examples": top}


def char_to_class(char: str) -> int:
    """Return the class index (0-28) of one typed character.

    Raises
    ------
    ValueError
        If ``char`` is not a single character, or is one the alphabet ignores (control and format
        characters such as backspace); :func:`text_to_classes` drops those instead.
    """
    if not isinstance(char, str) or len(char) != 1:
        raise ValueError(
            f"Invalid value for 'char': expected a single character, got {char!r}. "
            "Pass one character, or use text_to_classes() for a string."
        )
    index, kind = _classify(char)
    if kind == "ignored":
        raise ValueError(
            f"Invalid value for 'char': {char!r} (U+{ord(char):04X}, Unicode category "
            f"{unicodedata.category(char)}) is a control/format character that the typing alphabet "
            "ignores. Skip it, or use text_to_classes(), which drops such characters."
        )
    return index


def class_to_char(index: int) -> str:
    """Return the display character of class ``index``: letter, ``' '``, ``'.'`` or ``'0'``."""
    if (
        isinstance(index, bool)
        or not isinstance(index, int | np.integer)
        or not (0 <= index < N_CLASSES)
    ):
        raise ValueError(
            f"Invalid value for 'index': expected an integer class index in [0, {N_CLASSES - 1}], "
            f"got {index!r}."
        )
    return DISPLAY_CHARS[int(index)]


def map_text(text: str) -> tuple[np.ndarray, MappingStats]:
    """Map ``text`` onto class indices and count how each character was mapped.

    Parameters
    ----------
    text : str
        Any text.

    Returns
    -------
    classes : ndarray of int8, shape (n_kept,)
        Class index of every character that is not ignored.
    stats : MappingStats
        Counts per kind of mapping, with the characters seen.
    """
    if not isinstance(text, str):
        raise TypeError(f"Invalid type for 'text': expected str, got {type(text).__name__}.")
    classes, stats = map_codepoints(text_codepoints(text))
    return classes[classes != IGNORED], stats


def text_codepoints(text: str) -> np.ndarray:
    """Return the Unicode code points of ``text`` as a uint32 array (no Python object per char)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def map_codepoints(codepoints: np.ndarray) -> tuple[np.ndarray, MappingStats]:
    """Map code points to class indices, ``IGNORED`` (-1) where a character is dropped.

    Each distinct character is classified once (cached), then the result is gathered with numpy.
    """
    stats = MappingStats()
    if len(codepoints) == 0:
        return np.zeros(0, np.int8), stats
    unique, inverse, counts = np.unique(codepoints, return_inverse=True, return_counts=True)
    table = np.empty(len(unique), np.int8)
    for i, (code, n) in enumerate(zip(unique.tolist(), counts.tolist())):
        char = chr(code)
        table[i], kind = _classify(char)
        stats.counts[kind] += n
        if kind != "exact":
            stats.examples[kind][char] = n
    return table[inverse.reshape(-1)], stats


def text_to_classes(text: str) -> np.ndarray:
    """Return the class indices (int8) of ``text``, ignored characters dropped."""
    return map_text(text)[0]


def classes_to_text(classes: Sequence[int] | np.ndarray) -> str:
    """Return the display text of a sequence of class indices."""
    classes = np.asarray(classes)
    if classes.size and (classes.min() < 0 or classes.max() >= N_CLASSES):
        raise ValueError(
            f"Invalid value for 'classes': class indices must lie in [0, {N_CLASSES - 1}], got "
            f"values from {classes.min()} to {classes.max()}."
        )
    return "".join(DISPLAY_CHARS[i] for i in classes.tolist())


def normalize_text(text: str) -> str:
    """Return ``text`` as it reads in class space (``"Café, 42!"`` -> ``"cafe. 00."``)."""
    return classes_to_text(text_to_classes(text))


def _levenshtein(source: Sequence, target: Sequence) -> int:
    """Edit distance between two sequences of hashable items (unit costs).

    A row-vectorised dynamic programme; written here because no edit-distance package is a
    dependency of the project and the sequences (sentences) are short.
    """
    vocab: dict = {}
    src = np.array([vocab.setdefault(x, len(vocab)) for x in source], dtype=np.int64)
    tgt = np.array([vocab.setdefault(x, len(vocab)) for x in target], dtype=np.int64)
    positions = np.arange(len(tgt) + 1)
    row = positions.copy()
    for i, item in enumerate(src, start=1):
        candidates = np.empty_like(row)
        candidates[0] = i
        candidates[1:] = np.minimum(row[1:] + 1, row[:-1] + (tgt != item))
        # Insertions: row[j] = min_k<=j candidates[k] + (j - k), a running minimum.
        row = np.minimum.accumulate(candidates - positions) + positions
    return int(row[-1])


def _check_target(target: Sequence, name: str) -> None:
    if len(target) == 0:
        raise ValueError(
            f"Invalid value for 'target': the {name} error rate divides by the length of the "
            "target, which is empty (after normalisation). Pass a non-empty target."
        )


def cer(prediction: str, target: str, *, normalize: bool = True) -> float:
    """Character error rate: Levenshtein(prediction, target) / len(target).

    Parameters
    ----------
    prediction, target : str
        Decoded and true text.
    normalize : bool
        Compare in class space (:func:`normalize_text` on both), as the decoder outputs it.
    """
    if normalize:
        prediction, target = normalize_text(prediction), normalize_text(target)
    _check_target(target, "character")
    return _levenshtein(prediction, target) / len(target)


def wer(prediction: str, target: str, *, normalize: bool = True) -> float:
    """Word error rate: Levenshtein over whitespace-separated words / number of target words."""
    if normalize:
        prediction, target = normalize_text(prediction), normalize_text(target)
    target_words = target.split()
    _check_target(target_words, "word")
    return _levenshtein(prediction.split(), target_words) / len(target_words)
