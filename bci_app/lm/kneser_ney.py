"""Counting and smoothing for the character n-gram LM: interpolated modified Kneser-Ney.

Symbols are the 29 typing classes (0-28), end of sentence ``EOS`` (29) and begin of sentence
``BOS`` (30). Every sentence is padded with ``order - 1`` BOS symbols, so each predicted symbol
(a class or EOS, never BOS) has a full-length context. An n-gram of ``k`` symbols is stored as one
int64 code in base ``N_SYMBOLS`` (first symbol most significant), so counting is ``np.unique`` on
integer arrays and an n-gram's context is ``code // N_SYMBOLS``.

Smoothing (Chen & Goodman 1998, "interpolated modified Kneser-Ney"): the highest order uses raw
counts, lower orders use continuation counts (number of distinct left neighbours), except n-grams
that start with BOS, which have no left neighbour and keep raw counts. Each order has three
discounts ``D1, D2, D3+`` from its count-of-counts, and

    P_k(w | h) = max(c(h, w) - D(c), 0) / c(h) + gamma(h) * P_{k-1}(w | h'),
    gamma(h) = (D1 N1(h) + D2 N2(h) + D3+ N3+(h)) / c(h),

down to a uniform distribution over the 30 predictable symbols; an unseen context passes its
lower-order distribution through unchanged. Written here (not taken from a package) because the
well-kept n-gram toolkits (KenLM, SRILM) are C++ programs that are not Python dependencies; a
KenLM model can still be used through :class:`bci_app.lm.kenlm_adapter.KenLMCharLM`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bci_app.typing.alphabet import N_CLASSES, MappingStats, map_codepoints, text_codepoints

EOS = N_CLASSES
BOS = N_CLASSES + 1
N_PREDICTED = N_CLASSES + 1
N_SYMBOLS = N_CLASSES + 2
MAX_ORDER = 12  # N_SYMBOLS ** 12 < 2 ** 63: every n-gram code fits in an int64
SEPARATOR = -2  # end-of-sentence mark in a mapped class stream, before padding
STATE_BITS = 5  # packed LM states: (symbol + 1) per 5 bits, most recent symbol lowest


@dataclass(frozen=True)
class OrderTable:
    """Smoothed probabilities of one order, in sparse rows grouped by context.

    ``contexts`` holds the sorted context codes; the n-grams of context ``i`` are
    ``words[starts[i]:starts[i + 1]]`` with discounted probability mass ``alphas`` and the context's
    back-off weight ``gammas[i]``.
    """

    contexts: np.ndarray
    starts: np.ndarray
    words: np.ndarray
    alphas: np.ndarray
    gammas: np.ndarray


def pad_sentences(classes: np.ndarray, order: int) -> np.ndarray:
    """Turn a class stream with ``SEPARATOR`` after each sentence into a BOS/EOS-padded stream.

    Empty sentences are dropped; a missing final separator is added.
    """
    tokens = np.asarray(classes, dtype=np.int64)
    if len(tokens) == 0:
        return np.zeros(0, np.int64)
    if tokens[-1] != SEPARATOR:
        tokens = np.append(tokens, SEPARATOR)
    is_sep = tokens == SEPARATOR
    empty = is_sep & np.concatenate(([True], is_sep[:-1]))
    tokens, is_sep = tokens[~empty], is_sep[~empty]
    n_pad = order - 1
    sentence_index = np.cumsum(is_sep) - is_sep
    positions = np.arange(len(tokens)) + n_pad * (sentence_index + 1)
    stream = np.full(len(tokens) + n_pad * int(is_sep.sum()), BOS, dtype=np.int64)
    stream[positions] = np.where(is_sep, EOS, tokens)
    return stream


def count_ngrams(stream: np.ndarray, order: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return ``(codes, counts)`` of the n-grams of every order 1..``order`` ending on a target."""
    targets = np.flatnonzero(stream != BOS)
    result = []
    codes = np.zeros(len(targets), np.int64)
    for k in range(1, order + 1):
        # Extend every n-gram one symbol to the left: code of (s_{t-k+1}, ..., s_t).
        codes = codes + stream[targets - (k - 1)] * N_SYMBOLS ** (k - 1)
        result.append(np.unique(codes, return_counts=True))
    return result


def merge_counts(
    first: list[tuple[np.ndarray, np.ndarray]], second: list[tuple[np.ndarray, np.ndarray]]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Add two lists of per-order ``(codes, counts)``."""
    merged = []
    for (codes_a, counts_a), (codes_b, counts_b) in zip(first, second, strict=True):
        codes, inverse = np.unique(np.concatenate([codes_a, codes_b]), return_inverse=True)
        counts = np.bincount(inverse, weights=np.concatenate([counts_a, counts_b]))
        merged.append((codes, counts.astype(np.int64)))
    return merged


def kneser_ney_counts(
    raw: list[tuple[np.ndarray, np.ndarray]],
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Replace the raw counts of every order below the highest by continuation counts."""
    order = len(raw)
    result = []
    for k in range(1, order + 1):
        codes, counts = raw[k - 1]
        if k < order:
            suffixes = raw[k][0] % N_SYMBOLS**k
            cont_codes, cont_counts = np.unique(suffixes, return_counts=True)
            continuation = np.zeros(len(codes), np.int64)
            index = np.searchsorted(cont_codes, codes).clip(max=len(cont_codes) - 1)
            found = cont_codes[index] == codes
            continuation[found] = cont_counts[index[found]]
            starts_with_bos = codes // N_SYMBOLS ** (k - 1) == BOS
            counts = np.where(starts_with_bos | ~found, counts, continuation)
        result.append((codes, counts.astype(np.int64)))
    return result


def discounts(counts: np.ndarray) -> np.ndarray:
    """Modified Kneser-Ney discounts ``(D1, D2, D3+)`` from the count-of-counts of one order.

    Falls back to ``(0.5, 1.0, 1.5)`` when a count-of-count is zero (tiny corpora), and keeps every
    discount strictly inside ``(0, c)`` so that each seen n-gram and each back-off keep some mass.
    """
    n1, n2, n3, n4 = (int(np.count_nonzero(counts == c)) for c in (1, 2, 3, 4))
    if min(n1, n2, n3, n4) == 0:
        values = np.array([0.5, 1.0, 1.5])
    else:
        y = n1 / (n1 + 2 * n2)
        values = np.array([1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3])
    return np.clip(values, 0.05, np.array([0.95, 1.95, 2.95]))


def build_table(codes: np.ndarray, counts: np.ndarray, order_discounts: np.ndarray) -> OrderTable:
    """Turn the (modified) counts and discounts of one order into an :class:`OrderTable`."""
    context_of = codes // N_SYMBOLS
    contexts, first, inverse = np.unique(context_of, return_index=True, return_inverse=True)
    totals = np.bincount(inverse, weights=counts).astype(np.float64)
    discount = order_discounts[np.minimum(counts, 3) - 1]
    mass = np.bincount(inverse, weights=discount)
    return OrderTable(
        contexts=contexts,
        starts=np.append(first, len(codes)).astype(np.int64),
        words=(codes % N_SYMBOLS).astype(np.int64),
        alphas=np.maximum(counts - discount, 0.0) / totals[inverse],
        gammas=mass / totals,
    )


def dense_log_probs(tables: list[OrderTable]) -> list[np.ndarray]:
    """Return, per order, ln P(symbol | context) of every seen context, shape (n_contexts, 30).

    Computed order by order, all contexts at once: a context's distribution interpolates its own
    discounted counts with the distribution of its suffix one symbol shorter, which is always a
    seen context of the order below. The distribution after any state is then the row of its
    longest seen suffix, because an unseen context passes its lower-order distribution through.
    """
    probs = np.full((1, N_PREDICTED), 1.0 / N_PREDICTED)
    previous_contexts = np.zeros(1, np.int64)
    result = []
    for k, table in enumerate(tables, start=1):
        suffixes = table.contexts % N_SYMBOLS ** max(k - 2, 0)
        parents = np.searchsorted(previous_contexts, suffixes).clip(max=len(previous_contexts) - 1)
        if not np.array_equal(previous_contexts[parents], suffixes):
            raise ValueError(
                f"the counts of order {k} hold contexts that order {k - 1} lacks (inconsistent "
                "counts)"
            )
        probs = table.gammas[:, None] * probs[parents]
        rows = np.repeat(np.arange(len(table.contexts)), np.diff(table.starts))
        probs[rows, table.words] += table.alphas
        result.append(np.log(probs).astype(np.float32))
        previous_contexts = table.contexts
    return result


def packed_contexts(contexts: np.ndarray, length: int) -> np.ndarray:
    """Re-encode context codes of ``length`` symbols as packed states (``STATE_BITS`` each).

    Each symbol is stored plus one, so a packed code also tells its length (no leading zeros):
    contexts of every length share one dictionary, and dropping the oldest symbol is a bit mask.
    """
    packed = np.zeros(len(contexts), np.int64)
    remaining = contexts.copy()
    for position in range(length):
        packed |= (remaining % N_SYMBOLS + 1) << (STATE_BITS * position)
        remaining //= N_SYMBOLS
    return packed


def count_batch(batch: list[str], order: int) -> tuple[list, MappingStats, int]:
    """Map sentences onto the alphabet and count their n-grams.

    Returns
    -------
    counts : list of (ndarray, ndarray)
        Per order, n-gram codes and counts.
    mapping : MappingStats
        How the characters were mapped (line breaks between sentences not counted).
    n_sentences : int
        Sentences left once ignored characters are dropped.
    """
    codepoints = text_codepoints("\n".join(batch))
    classes, mapping = map_codepoints(codepoints)
    separators = codepoints == ord("\n")
    classes = classes.astype(np.int64)
    classes[separators] = SEPARATOR
    n_separators = int(separators.sum())
    if n_separators:
        mapping.counts["folded"] -= n_separators
        del mapping.examples["folded"]["\n"]
    stream = pad_sentences(classes[(classes >= 0) | separators], order)
    return count_ngrams(stream, order), mapping, int(np.count_nonzero(stream == EOS))
