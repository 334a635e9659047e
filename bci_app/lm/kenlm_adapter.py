"""Use a KenLM character model (ARPA or binary) with the beam decoders, when ``kenlm`` is installed.

KenLM models words; here every "word" is one class of the typing alphabet, so the model must be
trained on text where each character is written as its token (:data:`KENLM_TOKENS`) and tokens are
separated by spaces: letters as themselves, space as ``<space>``, the special class as ``<special>``
and the number class as ``<number>``, one sentence per line. :func:`write_kenlm_corpus` writes such
a file; then, for example, ``lmplz -o 6 --discount_fallback < corpus.tok > char6.arpa`` and
optionally ``build_binary char6.arpa char6.bin``. KenLM adds ``<s>``/``</s>`` itself, which become
the sentence start and EOS of the decoders.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from bci_app._optional import import_optional
from bci_app.lm.kneser_ney import BOS, N_PREDICTED
from bci_app.lm.model import _LMQueries
from bci_app.typing.alphabet import LETTERS, N_CLASSES, text_to_classes

KENLM_TOKENS: tuple[str, ...] = (*LETTERS, "<space>", "<special>", "<number>")
_LN10 = float(np.log(10.0))


def write_kenlm_corpus(lines: Iterable[str], path: str | os.PathLike) -> int:
    """Write ``lines`` as space-separated class tokens for KenLM's ``lmplz``; return sentences."""
    n_sentences = 0
    with Path(path).open("w", encoding="utf-8") as out:
        for line in lines:
            classes = text_to_classes(line.strip())
            if len(classes):
                out.write(" ".join(KENLM_TOKENS[c] for c in classes.tolist()) + "\n")
                n_sentences += 1
    return n_sentences


class KenLMCharLM(_LMQueries):
    """A KenLM model over class tokens, with the interface of :class:`bci_app.lm.model.CharNgramLM`.

    Parameters
    ----------
    path : path
        ARPA or KenLM binary file trained on :func:`write_kenlm_corpus` output.
    max_cache : int
        Number of context distributions kept in memory.
    """

    def __init__(self, path: str | os.PathLike, max_cache: int = 65_536):
        kenlm = import_optional("kenlm")
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"Invalid value for 'path': no KenLM model at {str(path)!r}. Build one with "
                "lmplz from write_kenlm_corpus() output."
            )
        self._kenlm = kenlm
        self.model = kenlm.Model(str(path))
        self.order = int(self.model.order)
        missing = [token for token in KENLM_TOKENS if token not in self.model]
        if len(missing) == len(KENLM_TOKENS):
            raise ValueError(
                f"Invalid KenLM model {str(path)!r}: none of the class tokens ({KENLM_TOKENS[:3]}"
                ", ..., '<space>') is in its vocabulary. Train it on write_kenlm_corpus() output."
            )
        self._tokens = (*KENLM_TOKENS, "</s>")
        self._cache: dict[tuple[int, ...], np.ndarray] = {}
        self._max_cache = max_cache

    def initial_state(self) -> tuple[int, ...]:
        """Return the state at the start of a sentence."""
        return (BOS,) * (self.order - 1)

    def null_state(self) -> tuple[int, ...]:
        """Return the state with no context."""
        return ()

    def next_state(self, state: tuple[int, ...], symbol: int) -> tuple[int, ...]:
        """Return the state after ``symbol`` follows ``state``."""
        return (*state, symbol)[1 - self.order :] if self.order > 1 else ()

    def state_log_probs(self, state: tuple[int, ...]) -> np.ndarray:
        """Return ln P(symbol | state) for the 29 classes and ``</s>`` (read-only, cached)."""
        cached = self._cache.get(state)
        if cached is None:
            if len(self._cache) >= self._max_cache:
                self._cache.clear()
            cached = self._score_all(state)
            cached.flags.writeable = False
            self._cache[state] = cached
        return cached

    def _score_all(self, state: tuple[int, ...]) -> np.ndarray:
        kenlm = self._kenlm
        current, scratch = kenlm.State(), kenlm.State()
        if state and state[0] == BOS:
            self.model.BeginSentenceWrite(current)
        else:
            self.model.NullContextWrite(current)
        for symbol in state:
            if symbol < N_CLASSES:
                self.model.BaseScore(current, KENLM_TOKENS[symbol], scratch)
                current, scratch = scratch, current
        log10 = [self.model.BaseScore(current, token, scratch) for token in self._tokens]
        return np.asarray(log10, dtype=np.float64)[:N_PREDICTED] * _LN10
