"""Beam search that fuses brain posteriors with a character language model.

Two decoders share one scoring rule, Brain2Qwerty's ``score = sum ln p_brain + w * sum ln P_LM``:

- :class:`KeystrokeBeamDecoder` (v1, one posterior over the 29 classes per keystroke): each step
  extends every hypothesis by the ``top_k`` most probable classes of the keystroke and keeps the
  ``beam_width`` best. It runs one keystroke at a time for the live path; :meth:`decode` of a whole
  sentence is the same steps in a row.
- :class:`CTCPrefixBeamDecoder` (v2, asynchronous: per-frame posteriors over the 29 classes and
  a CTC blank): prefix beam search (Hannun et al. 2014) with the LM applied once per character,
  plus an optional per-character insertion bonus; it also streams, frames in any chunks.

The language model is any :class:`bci_app.lm.model.CharLanguageModel` (or ``None`` for no LM). At
the
end of a sentence :meth:`finalize` adds ``w * ln P_LM(end of sentence)``. The default weight
(``DEFAULT_LM_WEIGHT = 0.5``) was best or near best on simulated posteriors at several noise levels
(0.3-0.5 were best; 1-3 were worse); tune it on validation sentences of real data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bci_app.lm.model import EOS, CharLanguageModel
from bci_app.typing.alphabet import DISPLAY_CHARS, N_CLASSES

__all__ = [
    "DEFAULT_LM_WEIGHT",
    "CTCPrefixBeamDecoder",
    "Hypothesis",
    "KeystrokeBeamDecoder",
    "ctc_greedy_decode",
]

DEFAULT_LM_WEIGHT = 0.5
_NEG_INF = float("-inf")


@dataclass(frozen=True)
class Hypothesis:
    """One candidate text, its total score and the two log-probabilities the score weighs.

    ``score = brain_log_prob + lm_weight * lm_log_prob`` (plus ``insertion_bonus * len(text)``
    for CTC, where ``brain_log_prob`` is the CTC probability of the text over all alignments).
    """

    text: str
    score: float
    brain_log_prob: float
    lm_log_prob: float


def _check_positive_int(name: str, value: int, upper: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"Invalid value for {name!r}: expected a positive integer, got {value!r}.")
    if upper is not None and value > upper:
        raise ValueError(f"Invalid value for {name!r}: at most {upper}, got {value!r}.")
    return int(value)


def _check_lm(lm: CharLanguageModel | None, lm_weight: float) -> float:
    if lm is not None and not isinstance(lm, CharLanguageModel):
        raise TypeError(
            f"Invalid value for 'lm': expected a character language model (CharNgramLM, "
            f"KenLMCharLM) or None, got {type(lm).__name__}."
        )
    if not np.isfinite(lm_weight) or lm_weight < 0:
        raise ValueError(
            f"Invalid value for 'lm_weight': expected a finite number >= 0, got {lm_weight!r}."
        )
    return float(lm_weight)


def _log_softmax(values, name: str, n_outputs: int) -> np.ndarray:
    """Validate log-posteriors (or logits) of shape (..., n_outputs) and normalise them."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 0 or values.shape[-1] != n_outputs:
        raise ValueError(
            f"Invalid value for {name!r}: expected {n_outputs} log-posteriors per row, got shape "
            f"{values.shape}. Pass the decoder's log-softmax output."
        )
    if values.size == 0:
        return values
    top = values.max(axis=-1, keepdims=True)
    if np.isnan(top).any() or np.isposinf(top).any():
        raise ValueError(
            f"Invalid value for {name!r}: it holds NaN or +inf. Check the decoder output (NaN "
            "input windows are dropped upstream)."
        )
    if np.isneginf(top).any():
        raise ValueError(
            f"Invalid value for {name!r}: a row is -inf everywhere (probability 0 for every "
            "output)."
        )
    if top.min() <= 1.0 and values.min() >= 0 and np.allclose(values.sum(axis=-1), 1.0):
        raise ValueError(
            f"Invalid value for {name!r}: the rows are probabilities (non-negative, summing to 1),"
            " not log-probabilities. Pass np.log(probabilities)."
        )
    return values - top - np.log(np.exp(values - top).sum(axis=-1, keepdims=True))


class KeystrokeBeamDecoder:
    """Incremental beam search over per-keystroke class posteriors with a character LM.

    Parameters
    ----------
    lm : CharLanguageModel or None
        Character language model; ``None`` decodes from the brain posteriors alone.
    top_k : int
        Classes tried per keystroke (the most probable under the brain decoder), 1 to 29.
    beam_width : int
        Hypotheses kept after every keystroke.
    lm_weight : float
        ``w`` in ``ln p_brain + w * ln P_LM``.
    """

    def __init__(
        self,
        lm: CharLanguageModel | None,
        *,
        top_k: int = 5,
        beam_width: int = 30,
        lm_weight: float = DEFAULT_LM_WEIGHT,
    ):
        self.lm = lm
        self.top_k = _check_positive_int("top_k", top_k, N_CLASSES)
        self.beam_width = _check_positive_int("beam_width", beam_width)
        self.lm_weight = _check_lm(lm, lm_weight)
        self.reset()

    def reset(self) -> None:
        """Start a new sentence."""
        self._texts = [""]
        self._states = [self.lm.initial_state() if self.lm is not None else None]
        self._brain = np.zeros(1)
        self._lm_scores = np.zeros(1)
        self.n_keystrokes = 0

    def step(self, log_posteriors: np.ndarray) -> str:
        """Add one keystroke's log-posteriors (29,) and return the best text so far.

        Logits are accepted too: each row is normalised with a log-softmax.
        """
        log_post = _log_softmax(log_posteriors, "log_posteriors", N_CLASSES)
        if log_post.ndim != 1:
            raise ValueError(
                f"Invalid value for 'log_posteriors': step() takes one keystroke, shape "
                f"({N_CLASSES},), got {log_post.shape}. Use decode() for a whole sentence."
            )
        top = np.argpartition(-log_post, self.top_k - 1)[: self.top_k]
        brain = self._brain[:, None] + log_post[top][None, :]
        lm_scores = self._lm_scores[:, None] + self._lm_rows(self._states)[:, top]
        total = (brain + self.lm_weight * lm_scores).ravel()
        n_keep = min(self.beam_width, total.size)
        keep = np.argpartition(-total, n_keep - 1)[:n_keep]
        keep = keep[np.argsort(-total[keep], kind="stable")]
        parents, choices = np.divmod(keep, self.top_k)
        pairs = list(zip(parents.tolist(), top[choices].tolist()))
        self._texts = [self._texts[p] + DISPLAY_CHARS[c] for p, c in pairs]
        if self.lm is not None:
            next_state, states = self.lm.next_state, self._states
            self._states = [next_state(states[p], c) for p, c in pairs]
        else:
            self._states = [None] * n_keep
        self._brain = brain.ravel()[keep]
        self._lm_scores = lm_scores.ravel()[keep]
        self.n_keystrokes += 1
        return self._texts[0]

    def warm(self) -> None:
        """Look up the LM rows the next :meth:`step` reads (nothing changes).

        Called just before a keystroke is due, it brings those rows back into the CPU caches,
        where live at 1x the LM's tables have been idle since the last keystroke.
        """
        self._lm_rows(self._states)

    def _lm_rows(self, states: list) -> np.ndarray:
        if self.lm is None:
            return np.zeros((len(states), N_CLASSES + 1))
        return self.lm.states_log_probs(states)

    def hypotheses(self, n: int | None = None, *, final: bool = False) -> list[Hypothesis]:
        """Return the ``n`` best hypotheses (all by default), best first.

        With ``final``, the LM's end-of-sentence probability is included (as :meth:`finalize`).
        """
        lm_scores = self._lm_scores
        if final and self.lm is not None:
            lm_scores = lm_scores + self._lm_rows(self._states)[:, EOS]
        total = self._brain + self.lm_weight * lm_scores
        order = np.argsort(-total, kind="stable")[:n]
        return [
            Hypothesis(self._texts[i], float(total[i]), float(self._brain[i]), float(lm_scores[i]))
            for i in order.tolist()
        ]

    def finalize(self) -> str:
        """Return the best text once the sentence ends (LM end-of-sentence score added).

        The decoder's state is left as is: call :meth:`reset` for the next sentence.
        """
        return self.hypotheses(1, final=True)[0].text

    def decode(self, log_posteriors: np.ndarray) -> str:
        """Decode a whole sentence, shape (n_keystrokes, 29): :meth:`reset`, steps, finalize."""
        log_posteriors = np.asarray(log_posteriors, dtype=np.float64)
        if log_posteriors.ndim != 2:
            raise ValueError(
                f"Invalid value for 'log_posteriors': expected shape (n_keystrokes, {N_CLASSES}), "
                f"got {log_posteriors.shape}."
            )
        self.reset()
        for row in log_posteriors:
            self.step(row)
        return self.finalize()


def ctc_greedy_decode(log_probs: np.ndarray, blank: int = N_CLASSES) -> str:
    """Best-path CTC decoding: argmax per frame, merge repeats, drop blanks.

    Parameters
    ----------
    log_probs : ndarray, shape (n_frames, 30)
        Per-frame log-posteriors over the 29 classes and the blank.
    blank : int
        Index of the blank output; the classes fill the other 29 indices in order.
    """
    class_of_output = _class_of_output(blank)
    log_probs = _log_softmax(log_probs, "log_probs", N_CLASSES + 1).reshape(-1, N_CLASSES + 1)
    best = log_probs.argmax(axis=1)
    changed = np.concatenate(([True], best[1:] != best[:-1]))
    kept = best[changed & (best != blank)]
    return "".join(DISPLAY_CHARS[c] for c in class_of_output[kept].tolist())


def _class_of_output(blank: int) -> np.ndarray:
    if (
        isinstance(blank, bool)
        or not isinstance(blank, int | np.integer)
        or not (0 <= blank <= N_CLASSES)
    ):
        raise ValueError(
            f"Invalid value for 'blank': expected the blank's output index in [0, {N_CLASSES}] "
            f"(usually {N_CLASSES}), got {blank!r}."
        )
    outputs = np.arange(N_CLASSES + 1)
    return np.where(outputs < blank, outputs, outputs - 1)


def _logaddexp(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    return a if b == _NEG_INF else a + math.log1p(math.exp(b - a))


class CTCPrefixBeamDecoder:
    """CTC prefix beam search with a character LM, for the asynchronous (v2) decoder.

    A prefix's score is ``ln p_CTC(prefix) + w * ln P_LM(prefix) + insertion_bonus * len(prefix)``;
    the bonus offsets the LM's per-character cost, which would otherwise favour short outputs.

    Parameters
    ----------
    lm : CharLanguageModel or None
        Character language model; ``None`` gives plain prefix beam search.
    beam_width : int
        Prefixes kept after every frame.
    lm_weight : float
        ``w``, the weight of the LM log-probability.
    insertion_bonus : float
        Added per character of a prefix.
    top_k : int
        Classes tried per frame (the most probable ones), besides the blank.
    blank : int
        Index of the blank among the 30 outputs; the 29 classes fill the others in order.
    """

    def __init__(
        self,
        lm: CharLanguageModel | None,
        *,
        beam_width: int = 30,
        lm_weight: float = DEFAULT_LM_WEIGHT,
        insertion_bonus: float = 0.0,
        top_k: int = 8,
        blank: int = N_CLASSES,
    ):
        self.lm = lm
        self.beam_width = _check_positive_int("beam_width", beam_width)
        self.top_k = _check_positive_int("top_k", top_k, N_CLASSES)
        self.lm_weight = _check_lm(lm, lm_weight)
        if not np.isfinite(insertion_bonus):
            raise ValueError(
                f"Invalid value for 'insertion_bonus': expected a finite number, got "
                f"{insertion_bonus!r}."
            )
        self.insertion_bonus = float(insertion_bonus)
        _class_of_output(blank)  # validates it
        self.blank = int(blank)
        self._output_of_class = np.flatnonzero(np.arange(N_CLASSES + 1) != self.blank)
        self.reset()

    def reset(self) -> None:
        """Start a new utterance."""
        # prefix -> [ln P(prefix, ends in blank), ln P(prefix, ends in a character)]
        self._beam: dict[str, list[float]] = {"": [0.0, _NEG_INF]}
        initial = self.lm.initial_state() if self.lm is not None else None
        # prefix -> (LM state, ln P_LM(prefix), w * ln P_LM + insertion_bonus * len(prefix))
        self._lm_info = {"": (initial, 0.0, 0.0)}
        self.n_frames = 0

    def step(self, frames: np.ndarray) -> str:
        """Add frames of log-posteriors, shape (n_frames, 30) or (30,); return the best text."""
        log_probs = _log_softmax(frames, "frames", N_CLASSES + 1).reshape(-1, N_CLASSES + 1)
        for row in log_probs:
            self._advance(row)
        return next(iter(self._beam))

    def _advance(self, row: np.ndarray) -> None:
        class_log_probs = row[self._output_of_class]
        top = np.argpartition(-class_log_probs, self.top_k - 1)[: self.top_k].tolist()
        candidates = [(c, DISPLAY_CHARS[c], float(class_log_probs[c])) for c in top]
        blank_log_prob = float(row[self.blank])
        lm_info, lm_rows = self._lm_info, self._beam_lm_rows()
        next_beam: dict[str, list[float]] = {}
        for index, (prefix, (p_blank, p_char)) in enumerate(self._beam.items()):
            p_total = _logaddexp(p_blank, p_char)
            entry = next_beam.setdefault(prefix, [_NEG_INF, _NEG_INF])
            entry[0] = _logaddexp(entry[0], p_total + blank_log_prob)
            last = prefix[-1:]
            for cls, char, log_prob in candidates:
                if char == last:  # a repeat merges unless a blank separates the two
                    entry[1] = _logaddexp(entry[1], p_char + log_prob)
                    source = p_blank + log_prob
                else:
                    source = p_total + log_prob
                if source == _NEG_INF:
                    continue
                extended = prefix + char
                target = next_beam.setdefault(extended, [_NEG_INF, _NEG_INF])
                target[1] = _logaddexp(target[1], source)
                if extended not in lm_info:
                    lm_info[extended] = self._extend_lm(lm_info[prefix], lm_rows, index, cls)
        scores = {p: _logaddexp(*probs) + lm_info[p][2] for p, probs in next_beam.items()}
        ranked = sorted(scores, key=scores.__getitem__, reverse=True)[: self.beam_width]
        self._beam = {prefix: next_beam[prefix] for prefix in ranked}
        self._lm_info = {prefix: lm_info[prefix] for prefix in ranked}
        self.n_frames += 1

    def _beam_lm_rows(self) -> list[list[float]] | None:
        """LM log-probabilities after every prefix of the beam, as nested lists."""
        if self.lm is None:
            return None
        states = [self._lm_info[prefix][0] for prefix in self._beam]
        return self.lm.states_log_probs(states).tolist()

    def _extend_lm(self, info: tuple, lm_rows: list | None, index: int, cls: int) -> tuple:
        """LM info (state, ln P_LM, weighted LM + insertion bonus) of a prefix + one class."""
        state, lm_log_prob, static = info
        step = lm_rows[index][cls] if lm_rows is not None else 0.0
        new_state = self.lm.next_state(state, cls) if self.lm is not None else state
        return new_state, lm_log_prob + step, static + self.lm_weight * step + self.insertion_bonus

    def _parts(self, prefix: str, final: bool) -> tuple[float, float, float]:
        """Return (ln p_CTC, ln P_LM, total score) of a prefix of the beam."""
        state, lm_log_prob, _ = self._lm_info[prefix]
        if final and self.lm is not None:
            lm_log_prob += float(self.lm.state_log_probs(state)[EOS])
        ctc = _logaddexp(*self._beam[prefix])
        return (
            ctc,
            lm_log_prob,
            ctc + self.lm_weight * lm_log_prob + self.insertion_bonus * len(prefix),
        )

    def hypotheses(self, n: int | None = None, *, final: bool = False) -> list[Hypothesis]:
        """Return the ``n`` best prefixes (all by default), best first; ``final`` adds EOS."""
        parts = {prefix: self._parts(prefix, final) for prefix in self._beam}
        ranked = sorted(parts, key=lambda prefix: parts[prefix][2], reverse=True)[:n]
        return [Hypothesis(p, parts[p][2], parts[p][0], parts[p][1]) for p in ranked]

    def finalize(self) -> str:
        """Return the best text at the end of the utterance (LM end-of-sentence score added)."""
        return self.hypotheses(1, final=True)[0].text

    def decode(self, log_probs: np.ndarray) -> str:
        """Decode a whole utterance, shape (n_frames, 30): :meth:`reset`, step, finalize."""
        log_probs = np.asarray(log_probs, dtype=np.float64)
        if log_probs.ndim != 2:
            raise ValueError(
                f"Invalid value for 'log_probs': expected shape (n_frames, {N_CLASSES + 1}), got "
                f"{log_probs.shape}."
            )
        self.reset()
        self.step(log_probs)
        return self.finalize()
