"""Sentence splits keep near-duplicates together and never leak a sentence across splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bci_app.splits import near_duplicate_groups, split_by_sentence

BANK = Path(__file__).parents[2] / "acquisition" / "data" / "text" / "sentences.txt"


def test_near_duplicates_grouped():
    sentences = [
        "the cat sat on the mat",
        "The cat sat on the mat.",
        "the cat sat on the mat today",
        "a completely different sentence here",
    ]
    groups = near_duplicate_groups(sentences)
    assert groups[0] == groups[1] == groups[2]
    assert groups[3] != groups[0]


def test_split_is_disjoint_complete_and_seeded():
    sentences = BANK.read_text().splitlines()[:120]
    sentences += [s.upper() for s in sentences[:20]]  # exact repeats in another case
    split = split_by_sentence(sentences, val_fraction=0.2, test_fraction=0.2, seed=3)
    every = np.concatenate(list(split.values()))
    assert sorted(every.tolist()) == list(range(len(sentences)))
    texts = {k: {sentences[i].lower() for i in v} for k, v in split.items()}
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["val"]
    assert len(split["test"]) > 10 and len(split["val"]) > 10
    again = split_by_sentence(sentences, val_fraction=0.2, test_fraction=0.2, seed=3)
    assert all(np.array_equal(split[k], again[k]) for k in split)


def test_bad_fractions():
    with pytest.raises(ValueError, match="leaves nothing to train on"):
        split_by_sentence(["a b c"] * 3, val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="'threshold'"):
        near_duplicate_groups(["a"], threshold=0)
