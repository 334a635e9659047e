"""Character n-gram language model over the 29-class typing alphabet, for the beam decoders.

:class:`CharNgramLM` is trained on plain text (one sentence per line), smoothed with interpolated
modified Kneser-Ney (see :mod:`bci_app.lm.kneser_ney`; chosen over Witten-Bell because it gives
lower perplexity on character data), and models sentence boundaries: contexts at the start of a
sentence are padded with begin-of-sentence symbols and ``EOS`` (index 29 of every distribution) is
predicted like a class. Files are ``.npz`` archives read with ``allow_pickle=False``.

Every language model the decoders use offers the same small interface (:class:`CharLanguageModel`):
an LM *state* is an opaque hashable value for the last ``order - 1`` symbols, ``next_state`` moves
it on by one class, and ``state_log_probs(state)`` returns the natural-log probabilities of the 29
classes and EOS. :class:`CharNgramLM` precomputes the distribution of every context seen in
training and packs states into integers, so a beam-search step costs a dictionary lookup or two per
hypothesis.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from acquisition.recording import exists_error
from bci_app.lm.format import FORMAT_VERSION, read_archive, write_archive
from bci_app.lm.kneser_ney import (
    BOS,
    EOS,
    MAX_ORDER,
    N_PREDICTED,
    STATE_BITS,
    build_table,
    count_batch,
    dense_log_probs,
    discounts,
    kneser_ney_counts,
    merge_counts,
    packed_contexts,
)
from bci_app.typing.alphabet import N_CLASSES, MappingStats, text_to_classes

__all__ = [
    "BOS",
    "DEFAULT_CORPUS",
    "EOS",
    "N_PREDICTED",
    "CharLanguageModel",
    "CharNgramLM",
    "context_state",
    "default_lm",
    "train_lm_cli",
]

logger = logging.getLogger(__name__)
DEFAULT_CORPUS = Path(__file__).resolve().parents[1] / "data" / "text" / "corpus.txt"
_BATCH_LINES = 20_000


@runtime_checkable
class CharLanguageModel(Protocol):
    """What the beam decoders need from a character language model."""

    order: int

    def initial_state(self) -> Hashable:
        """Return the state at the start of a sentence."""

    def null_state(self) -> Hashable:
        """Return the state with no context (a fragment, not a sentence start)."""

    def next_state(self, state: Hashable, symbol: int) -> Hashable:
        """Return the state after ``symbol`` (a class index) follows ``state``."""

    def state_log_probs(self, state: Hashable) -> np.ndarray:
        """Return ln P(symbol | state) for the 29 classes and EOS, shape (30,), read-only."""

    def states_log_probs(self, states: Sequence[Hashable]) -> np.ndarray:
        """Return :meth:`state_log_probs` of several states, shape (n_states, 30)."""


def context_state(
    lm: CharLanguageModel, context: str | Sequence[int], sentence_start: bool
) -> Hashable:
    """Return the LM state after ``context`` (text or class indices).

    With ``sentence_start`` the context is the beginning of a sentence; without, it is a fragment
    and only its own symbols condition the next one.
    """
    classes = text_to_classes(context) if isinstance(context, str) else np.asarray(context)
    if classes.size and (classes.min() < 0 or classes.max() >= N_CLASSES):
        raise ValueError(
            f"Invalid value for 'context': class indices must lie in [0, {N_CLASSES - 1}], got "
            f"values from {classes.min()} to {classes.max()}. Pass text or class indices."
        )
    state = lm.initial_state() if sentence_start else lm.null_state()
    for symbol in classes[max(0, len(classes) - lm.order + 1) :].tolist() if lm.order > 1 else ():
        state = lm.next_state(state, symbol)
    return state


class _LMQueries:
    """Queries shared by every language model, built on ``state_log_probs``."""

    def states_log_probs(self, states: Sequence[Hashable]) -> np.ndarray:
        """Return :meth:`state_log_probs` of several states, shape (n_states, 30)."""
        return np.stack([self.state_log_probs(state) for state in states])

    def log_probs(
        self, context: str | Sequence[int] = (), *, sentence_start: bool = True
    ) -> np.ndarray:
        """Return ln P(next | context) for the 29 classes and EOS (index 29), shape (30,).

        Parameters
        ----------
        context : str or sequence of int
            The sentence so far, as text or class indices; only the last ``order - 1`` count.
        sentence_start : bool
            Whether ``context`` starts at the beginning of a sentence.
        """
        return self.state_log_probs(context_state(self, context, sentence_start))

    def log_prob(self, next_class: int, context: str | Sequence[int] = (), **kwargs) -> float:
        """Return ln P(next_class | context); ``next_class`` 29 is the end of the sentence."""
        if isinstance(next_class, bool) or not (0 <= int(next_class) < N_PREDICTED):
            raise ValueError(
                f"Invalid value for 'next_class': expected a class index in [0, {N_PREDICTED - 1}]"
                f" ({EOS} = end of sentence), got {next_class!r}."
            )
        return float(self.log_probs(context, **kwargs)[int(next_class)])

    def sentence_log_prob(self, sentence: str) -> tuple[float, int]:
        """Return the total ln probability of ``sentence`` (with EOS) and its number of symbols."""
        state, total = self.initial_state(), 0.0
        classes = text_to_classes(sentence.strip())
        for symbol in classes.tolist():
            total += float(self.state_log_probs(state)[symbol])
            state = self.next_state(state, symbol)
        return total + float(self.state_log_probs(state)[EOS]), len(classes) + 1

    def perplexity(self, lines: Iterable[str]) -> float:
        """Per-symbol perplexity (classes and EOS) of non-empty ``lines``, one sentence each."""
        total, count = 0.0, 0
        for line in lines:
            if line.strip():
                log_prob, n_symbols = self.sentence_log_prob(line)
                total, count = total + log_prob, count + n_symbols
        if count == 0:
            raise ValueError("Invalid value for 'lines': no non-empty sentence to score.")
        return float(np.exp(-total / count))


class CharNgramLM(_LMQueries):
    """Interpolated modified Kneser-Ney character n-gram model over the typing alphabet.

    Build one with :meth:`train` or :meth:`load`. States are ints: the last ``order - 1`` symbols
    packed 5 bits each (symbol + 1, most recent lowest); the distribution after a state is the
    precomputed row of its longest suffix seen in training.

    Parameters
    ----------
    raw_counts : list of (ndarray, ndarray)
        Per order 1..N, sorted n-gram codes and their raw counts (see :mod:`bci_app.lm.kneser_ney`).
    stats : dict, optional
        Training statistics, saved with the model.
    """

    def __init__(self, raw_counts: list, stats: dict | None = None):
        self.order = len(raw_counts)
        if not 1 <= self.order <= MAX_ORDER:
            raise ValueError(
                f"Invalid value for 'order': expected 1 to {MAX_ORDER}, got {self.order}."
            )
        self.raw_counts = raw_counts
        self.stats = dict(stats or {})
        modified = kneser_ney_counts(raw_counts)
        self.discounts = np.array([discounts(counts) for _, counts in modified])
        tables = [
            build_table(codes, counts, d) for (codes, counts), d in zip(modified, self.discounts)
        ]
        self._log_probs = np.concatenate(dense_log_probs(tables))
        self._log_probs.flags.writeable = False
        packed = [packed_contexts(t.contexts, k) for k, t in enumerate(tables)]
        # packed context -> row of _log_probs, all orders in one dict (~50 ns per lookup)
        self._rows = dict(zip(np.concatenate(packed).tolist(), range(len(self._log_probs))))
        self._state_mask = (1 << (STATE_BITS * (self.order - 1))) - 1

    @classmethod
    def train(cls, lines: Iterable[str], order: int = 6, *, progress=None) -> CharNgramLM:
        """Train on ``lines`` of text, one sentence per line.

        Characters are mapped onto the alphabet by :mod:`bci_app.typing.alphabet` (case and accents
        folded, digits to ``number``, other printable characters to ``special``, control
        characters dropped); ``lm.stats["mapping"]`` reports how many of each.

        Parameters
        ----------
        lines : iterable of str
            Sentences; surrounding whitespace is stripped and empty lines are skipped.
        order : int
            N of the n-grams (context of ``order - 1`` symbols), 1 to 12.
        progress : callable, optional
            Called with the number of characters of every line read (e.g. ``tqdm.update``).
        """
        if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= MAX_ORDER:
            raise ValueError(
                f"Invalid value for 'order': expected an integer from 1 to {MAX_ORDER}, got "
                f"{order!r}. Character LMs usually use 5 to 8."
            )
        start = time.perf_counter()
        mapping, counts, n_sentences, batch = MappingStats(), None, 0, []
        for line in _with_end(lines):
            if line is not None:
                if progress is not None:
                    progress(len(line))
                line = line.strip()
                if line:
                    batch.append(line)
            if batch and (line is None or len(batch) >= _BATCH_LINES):
                batch_counts, batch_mapping, batch_sentences = count_batch(batch, order)
                if batch_sentences:
                    counts = batch_counts if counts is None else merge_counts(counts, batch_counts)
                mapping.update(batch_mapping)
                n_sentences, batch = n_sentences + batch_sentences, []
        if counts is None:
            raise ValueError(
                "Invalid value for 'lines': the corpus holds no non-empty line. Pass a text file "
                "with one sentence per line."
            )
        stats = {
            "order": order,
            "n_sentences": n_sentences,
            "mapping": mapping.to_dict(),
            "n_ngrams": [len(codes) for codes, _ in counts],
            "train_seconds": round(time.perf_counter() - start, 3),
        }
        return cls(counts, stats)

    def initial_state(self) -> int:
        """Return the state at the start of a sentence: ``order - 1`` BOS symbols."""
        state = 0
        for _ in range(self.order - 1):
            state = (state << STATE_BITS) | (BOS + 1)
        return state

    def null_state(self) -> int:
        """Return the state with no context."""
        return 0

    def next_state(self, state: int, symbol: int) -> int:
        """Return the state after ``symbol`` follows ``state``."""
        return ((state << STATE_BITS) | (symbol + 1)) & self._state_mask

    def state_log_probs(self, state: int) -> np.ndarray:
        """Return ln P(symbol | state) for the 29 classes and EOS, shape (30,), read-only."""
        return self._log_probs[self._row(state)]

    def states_log_probs(self, states: Sequence[int]) -> np.ndarray:
        """Return ln P(symbol | state) of several states, shape (n_states, 30)."""
        return self._log_probs[[self._row(state) for state in states]]

    def _row(self, state: int) -> int:
        """Row of the longest suffix of ``state`` seen in training (the empty one always is)."""
        row = self._rows.get(state)
        while row is None:
            state &= (1 << (STATE_BITS * ((state.bit_length() - 1) // STATE_BITS))) - 1
            row = self._rows.get(state)
        return row

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model to ``path`` (an ``.npz`` archive, no pickled objects)."""
        arrays = {
            f"{name}_{k}": array
            for k, pair in enumerate(self.raw_counts, start=1)
            for name, array in zip(("codes", "counts"), pair)
        }
        return write_archive(path, self.order, self.stats, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> CharNgramLM:
        """Read a model written by :meth:`save`; a corrupt or foreign file raises ValueError."""
        raw_counts, stats = read_archive(path)
        try:
            return cls(raw_counts, stats)
        except ValueError as err:
            raise ValueError(
                f"Invalid language model file {str(path)!r}: {err}. Retrain it with "
                "`bci-app lm train`."
            ) from err


def _with_end(lines: Iterable[str]):
    yield from lines
    yield None


def train_lm_cli(
    corpus_path: str | os.PathLike,
    order: int = 6,
    out_path: str | os.PathLike = "lm.npz",
    *,
    overwrite: bool = False,
) -> dict:
    """Train a :class:`CharNgramLM` on a text file and save it (``bci-app lm train``).

    A progress bar appears when training takes more than a second.

    Parameters
    ----------
    corpus_path : path
        UTF-8 text, one sentence per line.
    order : int
        N of the n-grams.
    out_path : path
        Where to write the model (``.npz``).
    overwrite : bool
        Replace an existing ``out_path`` (otherwise refused before training).

    Returns
    -------
    stats : dict
        Training statistics: sentences, characters mapped per kind (with examples), n-grams per
        order, discounts, seconds, output path and size.
    """
    from tqdm.auto import tqdm

    corpus_path, out_path = Path(corpus_path), Path(out_path)
    if not corpus_path.is_file():
        raise FileNotFoundError(
            f"Invalid value for 'corpus_path': no file at {str(corpus_path)!r}. Pass a UTF-8 text "
            "file with one sentence per line."
        )
    if not out_path.parent.is_dir():
        raise FileNotFoundError(
            f"Invalid value for 'out_path': the folder {str(out_path.parent)!r} does not exist. "
            "Create it or choose another output path."
        )
    if out_path.exists() and not overwrite:  # before training, not after
        raise exists_error(out_path, "the LM file")
    total = corpus_path.stat().st_size
    with (
        tqdm(total=total, unit="B", unit_scale=True, desc="Training LM", delay=1.0) as bar,
        corpus_path.open(encoding="utf-8") as lines,
    ):
        try:
            lm = CharNgramLM.train(lines, order, progress=bar.update)
        except UnicodeDecodeError as err:
            raise ValueError(
                f"Invalid value for 'corpus_path': {str(corpus_path)!r} is not UTF-8 text "
                f"({err}). Convert it to UTF-8 (e.g. `iconv -t UTF-8`)."
            ) from err
        bar.update(max(0, total - bar.n))
    lm.save(out_path)
    stats = {
        **lm.stats,
        "discounts": lm.discounts.round(4).tolist(),
        "corpus": str(corpus_path),
        "out": str(out_path),
        "size_bytes": out_path.stat().st_size,
    }
    counts = stats["mapping"]["counts"]
    logger.info(
        "Trained a %d-gram character LM on %d sentences in %.2f s; characters folded onto letters "
        "or space: %d, mapped to number: %d, to special: %d, ignored: %d.",
        order,
        stats["n_sentences"],
        stats["train_seconds"],
        counts["folded"],
        counts["number"],
        counts["special"],
        counts["ignored"],
    )
    return stats


def default_lm(order: int = 6, *, cache_dir: str | os.PathLike | None = None) -> CharNgramLM:
    """Return the character LM trained on the shipped corpus (``bci_app/data/text/corpus.txt``).

    Trained on first use (about a third of a second), then read back from a cache file named after
    the corpus' SHA-256, the order and the file format version, under ``cache_dir``, else
    ``$BCI_APP_CACHE_DIR``, else the user cache folder (``platformdirs``; ``~/.cache/bci-app``).
    An unreadable cache file is retrained; an unwritable cache folder only costs the retraining.
    Calls with the same arguments in one process share one model.
    """
    if cache_dir is None:
        cache_dir = os.environ.get("BCI_APP_CACHE_DIR") or _user_cache_dir()
    return _cached_default_lm(order, str(Path(cache_dir).expanduser()))


def _user_cache_dir() -> Path:
    try:
        import platformdirs
    except ImportError:
        return Path.home() / ".cache" / "bci-app"
    return Path(platformdirs.user_cache_dir("bci-app", appauthor=False))


@functools.lru_cache(maxsize=8)
def _cached_default_lm(order: int, cache_dir: str) -> CharNgramLM:
    digest = hashlib.sha256(DEFAULT_CORPUS.read_bytes()).hexdigest()[:16]
    cache_file = Path(cache_dir) / "lm" / f"char{order}-{digest}-v{FORMAT_VERSION}.npz"
    if cache_file.is_file():
        try:
            return CharNgramLM.load(cache_file)
        except ValueError as err:
            logger.warning("Retraining the default LM: %s", err)
    with DEFAULT_CORPUS.open(encoding="utf-8") as lines:
        lm = CharNgramLM.train(lines, order)
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        lm.save(cache_file)
    except OSError as err:
        logger.info("Could not cache the default LM at %s: %s", cache_file, err)
    return lm
