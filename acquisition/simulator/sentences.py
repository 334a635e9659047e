"""The typing sentence bank and its fixed calibration/test split.

A decoder must be scored on sentences it never saw: its transformer and the LM can learn the
calibration sentences themselves, which flatters any figure measured on them. The bundled bank
(``acquisition/data/text/sentences.txt``) is therefore split once and for all by a stable hash
of each sentence (:func:`sentence_key`, SHA-256 of the lower-cased, whitespace-collapsed text):
a sentence whose key, read as a number, is divisible by :data:`TEST_EVERY` is a **test**
sentence, every other one a **calibration** sentence. The rule needs no list to maintain, gives
the same answer on every machine and for any sentence list (a lab's own bank splits the same
way), and adding or removing a sentence never moves the others.

Which part a simulated session draws from is the simulator's ``sentence_split``:

- ``"calibration"``: calibration recordings (``bci-app simulate`` writes these by default, and
  the training scripts use them);
- ``"test"``: held-out evaluation sessions and the live built-in stream (``bci-app run``);
- ``"all"``: the whole bank (the :class:`~acquisition.simulator.Simulator` default, so code that
  gives its own sentence list gets them all).

Training records the keys of its sentences in the bundle (``provenance.training_sentences``) and
``bci-app evaluate`` reports any test sentence found there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

#: The parts a sentence bank can be drawn from.
SPLITS = ("all", "calibration", "test")
#: One sentence in this many (by hash) is a test sentence.
TEST_EVERY = 3
#: Hex digits of SHA-256 kept in a sentence key (64 bits: no collision among any real bank).
KEY_DIGITS = 16
BANK = Path(__file__).resolve().parent.parent / "data" / "text" / "sentences.txt"


def normalise(text: str) -> str:
    """The form of a sentence that its key hashes: lower case, single spaces, no edge spaces."""
    return " ".join(str(text).split()).lower()


def sentence_key(text: str) -> str:
    """Stable identifier of a sentence (16 hex digits of the SHA-256 of :func:`normalise`)."""
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()[:KEY_DIGITS]


def split_of(text: str) -> str:
    """``"test"`` or ``"calibration"``: the fixed part of the bank a sentence belongs to."""
    return "test" if int(sentence_key(text), 16) % TEST_EVERY == 0 else "calibration"


def check_split(split: str) -> str:
    """Return ``split`` if it is one of :data:`SPLITS`, else raise ValueError naming them."""
    if split not in SPLITS:
        raise ValueError(
            f"Invalid value for 'sentence_split': {split!r}; use one of {', '.join(SPLITS)} "
            "(calibration for training sessions, test for evaluation sessions)."
        )
    return split


def load_sentences(
    sentences: Sequence[str] | str | Path | None = None, split: str = "all"
) -> list[str]:
    """Return the sentences to use: the bundled bank, a list, or the lines of a text file.

    Parameters
    ----------
    sentences : sequence of str | path | None
        The sentences, a text file with one per line, or None for the bundled bank.
    split : "all" | "calibration" | "test"
        The part of them to keep (module docstring).

    Returns
    -------
    sentences : list of str
        Whitespace-collapsed, non-empty sentences of that part, in their order.
    """
    check_split(split)
    if sentences is None:
        sentences = BANK
    if isinstance(sentences, str | Path):
        path = Path(sentences)
        if not path.is_file():
            raise ValueError(
                f"Invalid value for 'sentences': {str(path)!r} is not a file. Give a text file "
                "with one sentence per line, or a list of sentences."
            )
        sentences = path.read_text(encoding="utf-8").splitlines()
    cleaned = [" ".join(str(s).split()) for s in sentences]
    cleaned = [s for s in cleaned if s]
    if not cleaned:
        raise ValueError("Invalid value for 'sentences': no non-empty sentence. Give at least one.")
    if split == "all":
        return cleaned
    kept = [s for s in cleaned if split_of(s) == split]
    if not kept:
        raise ValueError(
            f"Invalid value for 'sentence_split': none of the {len(cleaned)} sentences falls in "
            f"the {split!r} part (one in {TEST_EVERY} is a test sentence, by hash). Give more "
            "sentences, or sentence_split='all'."
        )
    return kept
