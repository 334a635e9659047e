"""Scoring a speech window against the word heard: where it ranks among the candidates."""

from __future__ import annotations

from collections.abc import Iterable


def heard_rank(candidates: Iterable[tuple[str, float]], heard: str | None) -> int | None:
    """1-based rank of ``heard`` among ``(word, probability)`` candidates, case aside.

    Returns 0 when it is not among them, None when nothing was heard (a sliding window).
    """
    if not heard:
        return None
    texts = [str(text).lower() for text, _ in candidates]
    return texts.index(heard.lower()) + 1 if heard.lower() in texts else 0
