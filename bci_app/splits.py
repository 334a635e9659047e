"""Train/validation/test split by sentence, with near-duplicate sentences kept in one split.

Typing datasets repeat sentences (a participant may type the same sentence twice, or two
sentences differ by a word). Splitting by keystroke or by trial would leak them across splits and
inflate the test score, so sentences are grouped first: two sentences are near-duplicates when the
Jaccard similarity of their character 3-gram sets reaches ``threshold``. Groups (connected
components) are then assigned to splits whole.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _normalize(text: str) -> str:
    kept = "".join(c if c.isalnum() else " " for c in text.lower())
    return " ".join(kept.split())


def _trigrams(text: str) -> frozenset[str]:
    padded = f"  {_normalize(text)} "
    return frozenset(padded[i : i + 3] for i in range(len(padded) - 2))


def near_duplicate_groups(sentences: Sequence[str], threshold: float = 0.75) -> np.ndarray:
    """Return a group index per sentence; near-duplicates share a group.

    Parameters
    ----------
    sentences : sequence of str
        Target texts.
    threshold : float
        Jaccard similarity of character 3-gram sets at or above which two sentences are joined.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"Invalid value for 'threshold': {threshold}; use a value in (0, 1].")
    grams = [_trigrams(s) for s in sentences]
    parent = list(range(len(sentences)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # Pairwise comparison: datasets hold hundreds to a few thousand sentences, so O(n^2) set
    # operations on short strings stay well under a second; identical texts short-circuit.
    first_of: dict[str, int] = {}
    for i, s in enumerate(sentences):
        key = _normalize(s)
        if key in first_of:
            parent[find(i)] = find(first_of[key])
            continue
        first_of[key] = i
        for j in first_of.values():
            if j == i or find(i) == find(j):
                continue
            union = len(grams[i] | grams[j])
            if union and len(grams[i] & grams[j]) / union >= threshold:
                parent[find(i)] = find(j)
    roots = [find(i) for i in range(len(sentences))]
    _, groups = np.unique(roots, return_inverse=True)
    return groups


def split_by_sentence(
    sentences: Sequence[str],
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    threshold: float = 0.75,
) -> dict[str, np.ndarray]:
    """Assign sentences to ``train``/``val``/``test`` (arrays of sentence indices).

    Near-duplicate groups stay in one split. Each non-empty fraction gets at least one group when
    there are at least three groups.
    """
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"Invalid value for '{name}': {frac}; use a value in [0, 1).")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"Invalid split: val_fraction + test_fraction = {val_fraction + test_fraction:g} "
            "leaves nothing to train on; keep their sum below 1."
        )
    groups = near_duplicate_groups(sentences, threshold)
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    order = np.random.default_rng(seed).permutation(n_groups)
    n_test = round(test_fraction * n_groups)
    n_val = round(val_fraction * n_groups)
    if n_groups >= 3:
        n_test = max(n_test, 1 if test_fraction > 0 else 0)
        n_val = max(n_val, 1 if val_fraction > 0 else 0)
    test_groups = set(order[:n_test].tolist())
    val_groups = set(order[n_test : n_test + n_val].tolist())
    split = {"train": [], "val": [], "test": []}
    for i, g in enumerate(groups.tolist()):
        key = "test" if g in test_groups else "val" if g in val_groups else "train"
        split[key].append(i)
    return {k: np.asarray(v, dtype=int) for k, v in split.items()}
