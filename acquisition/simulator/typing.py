"""Typing task of the simulator: Brain2Qwerty sessions with key-dependent brain responses.

Protocol per sentence (Levy et al. 2025): a fixation (0.5 s), the sentence shown on screen
(``sentence_start:<text>``) for 0.8 s + 0.3 s per word, then hidden; after 0.5-1.0 s the
participant types it from memory without feedback, one ``key:<c>`` marker per key press; the
``sentence_end:<text>`` marker follows the last key by 0.3-0.6 s, then 1-2 s of rest.

Inter-key intervals: log-normal, median 210 ms (sigma 0.35), plus Gamma(2, 50 ms) after a space,
40 ms when the same finger presses again, 60 ms for a shifted character, and a 0.3-1.0 s
hesitation with probability 3 %; never under 60 ms. With ``typo_rate`` > 0 a letter is sometimes
replaced by its left or right neighbour on the keyboard; markers and ground truth hold what was
typed, the sentence text what was meant.

Brain response to a key press (three components, each a fixed time course times a sensor pattern
from the forward model; time from the press, Gaussians ``g(t; centre, width)``):

- **motor**: the dipole of the finger that presses the key (QWERTY touch typing: little finger
  on ``a``/``q``/``z``/``1``, ..., thumb on space), in the opposite hemisphere, its orientation
  tilted by the key's row and column offset from the finger's home key (0.35 rad per row/column),
  so keys of one finger give similar but distinct patterns; the time course
  ``0.7 g(-0.04, 0.05) - g(0.06, 0.03) + 0.35 g(0.18, 0.05)`` (readiness field, movement-evoked
  field) is delayed by 12 ms per row and 6 ms per column of reach; plus 25 % of the same finger's
  dipole in the other hemisphere.
- **visual / orthographic**: a character-specific mix of the six ``letter`` sources (weights fixed
  per subject and character; upper case = lower case) with time course
  ``0.6 (g(0.11, 0.025) - 0.7 g(0.19, 0.035))``.
- **shift**: for shifted characters, the little finger of the other hand pressing shift,
  100 ms before the key.

The sentence display evokes a visual response (onset and offset) in the ``letter`` sources that
is not key-specific.
"""

from __future__ import annotations

import numpy as np

from acquisition.recording import key_marker
from acquisition.simulator.anatomy import FINGERS, Anatomy, tangent_basis
from acquisition.simulator.events import Event, Trial

_ROWS = (
    ("`1234567890-=", "~!@#$%^&*()_+", 0.0, "5543222234555"),
    ("qwertyuiop[]\\", "QWERTYUIOP{}|", 0.5, "5432222345555"),
    ("asdfghjkl;'", 'ASDFGHJKL:"', 0.75, "54322223455"),
    ("zxcvbnm,./", "ZXCVBNM<>?", 1.25, "5432222345"),
)
_HOME = {"L5": "a", "L4": "s", "L3": "d", "L2": "f", "R2": "j", "R3": "k", "R4": "l", "R5": ";"}
#: Template span around the key press (seconds).
TEMPLATE_SPAN = (-0.4, 0.6)
#: Window around key presses over which the evoked RMS of the SNR is measured (seconds).
SNR_WINDOW = (-0.2, 0.3)
_LETTER_SALT = 0x1E77E5


def _layout() -> dict[str, tuple[str, float, float, bool]]:
    """Map each character to (finger, row, x position, shifted)."""
    keys: dict[str, tuple[str, float, float, bool]] = {}
    for row, (plain, shifted, offset, fingers) in enumerate(_ROWS):
        for col, (lower, upper, finger) in enumerate(zip(plain, shifted, fingers)):
            hand = "L" if _is_left(row, col) else "R"
            keys[lower] = (hand + finger, float(row), offset + col, False)
            keys[upper] = (hand + finger, float(row), offset + col, True)
    keys[" "] = ("R1", 2.0, 0.0, False)
    return keys


def _is_left(row: int, col: int) -> bool:
    return col < (6 if row == 0 else 5)


_KEYS = _layout()


def key_geometry(char: str) -> tuple[str, float, float, bool]:
    """Return (finger, row offset, column offset, shifted) of a character's key press.

    The finger is one of :data:`~acquisition.simulator.anatomy.FINGERS`; offsets are in keys
    from the finger's home key (rows: negative = upwards). Characters not on a US QWERTY
    keyboard are typed as a far reach of the right little finger.
    """
    if char not in _KEYS:
        return "R5", -1.0, 2.0, False
    finger, row, x, shifted = _KEYS[char]
    if finger[1] == "1":
        return finger, 0.0, 0.0, shifted
    _, home_row, home_x, _ = _KEYS[_HOME[finger]]
    return finger, row - home_row, x - home_x, shifted


def _gauss(t: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((t - centre) / width) ** 2)


class KeyResponses:
    """Per-character evoked responses (low-rank: time courses x sensor patterns).

    Parameters
    ----------
    anatomy : Anatomy
        Source layout of the subject.
    finger_leadfield, letter_patterns : array
        Free leadfield of the finger dipoles ``(C, 10, 3)`` and fixed patterns of the letter
        sources ``(C, 6)``.
    sfreq : float
        Sampling rate (Hz).
    """

    def __init__(
        self,
        anatomy: Anatomy,
        finger_leadfield: np.ndarray,
        letter_patterns: np.ndarray,
        sfreq: float,
    ) -> None:
        self.sfreq = float(sfreq)
        self.subject = anatomy.subject
        self._fingers = anatomy["finger"]
        self._finger_leadfield = finger_leadfield
        self._letter_patterns = letter_patterns
        n = round((TEMPLATE_SPAN[1] - TEMPLATE_SPAN[0]) * self.sfreq)
        self.offset = round(-TEMPLATE_SPAN[0] * self.sfreq)
        self.times = (np.arange(n) - self.offset) / self.sfreq
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _finger_pattern(self, finger: str, d_row: float, d_col: float) -> np.ndarray:
        index = FINGERS.index(finger)
        pos = self._fingers.positions[index]
        base = self._fingers.orientations[index]
        radial, _, _ = tangent_basis(pos)
        across = np.cross(radial, base)
        ori = base + 0.35 * d_row * radial + 0.35 * d_col * across
        ori /= np.linalg.norm(ori)
        mirror = FINGERS.index(("R" if finger[0] == "L" else "L") + finger[1])
        ipsi = self._finger_leadfield[:, mirror, :] @ self._fingers.orientations[mirror]
        return self._finger_leadfield[:, index, :] @ ori + 0.25 * ipsi

    def _letter_weights(self, char: str) -> np.ndarray:
        rng = np.random.default_rng([_LETTER_SALT, self.subject, ord(char.lower()[0])])
        weights = rng.standard_normal(self._letter_patterns.shape[1])
        gain = 0.3 if char == " " else 1.0
        return gain * weights / np.linalg.norm(weights)

    def response(self, char: str) -> tuple[np.ndarray, np.ndarray]:
        """Return (waveform ``(n_times, 3)``, pattern ``(3, C)``) of one key press of ``char``."""
        if char in self._cache:
            return self._cache[char]
        finger, d_row, d_col, shifted = key_geometry(char)
        t = self.times
        delay = 0.012 * abs(d_row) + 0.006 * abs(d_col)
        motor = (
            0.7 * _gauss(t, -0.04 + delay, 0.05)
            - _gauss(t, 0.06 + delay, 0.03)
            + 0.35 * _gauss(t, 0.18 + delay, 0.05)
        )
        visual = 0.6 * (_gauss(t, 0.11, 0.025) - 0.7 * _gauss(t, 0.19, 0.035))
        shift_finger = ("R5" if finger[0] == "L" else "L5") if shifted else finger
        shift = (0.7 * _gauss(t, -0.14, 0.04) - 0.5 * _gauss(t, -0.04, 0.03)) * float(shifted)
        waveform = np.stack([motor, visual, shift], axis=1)
        pattern = np.stack(
            [
                self._finger_pattern(finger, d_row, d_col),
                self._letter_patterns @ self._letter_weights(char),
                self._finger_pattern(shift_finger, 0.0, 0.0),
            ]
        )
        self._cache[char] = (waveform, pattern)
        return waveform, pattern

    def display(self, duration: float) -> tuple[np.ndarray, np.ndarray]:
        """Visual response to showing a sentence for ``duration`` s: (waveform, pattern)."""
        t = np.arange(round((duration + 0.5) * self.sfreq)) / self.sfreq
        onset = 1.5 * (_gauss(t, 0.1, 0.02) - 1.2 * _gauss(t, 0.15, 0.025))
        offset = 0.8 * (_gauss(t, duration + 0.1, 0.02) - _gauss(t, duration + 0.16, 0.03))
        waveform = (onset + offset + 0.6 * _gauss(t, 0.25, 0.05))[:, None]
        return waveform, self._letter_patterns[:, :2].sum(axis=1)[None, :]


class TypingTask:
    """Schedules typing trials: sentence display, key presses, markers, responses, truth.

    Parameters
    ----------
    sentences : sequence of str
        Sentences to type, taken in a seeded random order, reshuffled when exhausted.
    responses : KeyResponses
        Evoked responses per key.
    rng : numpy.random.Generator
        Session randomness (order, timing, typos).
    typo_rate : float
        Probability that a letter is replaced by a neighbouring key.
    """

    name = "typing"

    def __init__(
        self,
        sentences: list[str],
        responses: KeyResponses,
        rng: np.random.Generator,
        typo_rate: float = 0.0,
    ) -> None:
        self.sentences = list(sentences)
        self.responses = responses
        self.sfreq = responses.sfreq
        self._rng = rng
        self.typo_rate = float(typo_rate)
        self._order: list[int] = []

    def _next_sentence(self) -> str:
        if not self._order:
            self._order = list(self._rng.permutation(len(self.sentences)))
        return self.sentences[self._order.pop(0)]

    def _typed(self, text: str) -> str:
        typed = []
        for char in text:
            if char.isalpha() and self._rng.random() < self.typo_rate:
                _, row, x, shifted = _KEYS.get(char, ("", 0.0, 0.0, False))
                step = 1.0 if self._rng.random() < 0.5 else -1.0
                near = [c for c, k in _KEYS.items() if k[1:] == (row, x + step, shifted)]
                char = near[0] if near else char
            typed.append(char)
        return "".join(typed)

    def _key_times(self, typed: str) -> np.ndarray:
        rng = self._rng
        gaps = np.exp(np.log(0.21) + 0.35 * rng.standard_normal(len(typed)))
        previous = ""
        for i, char in enumerate(typed):
            finger, _, _, shifted = key_geometry(char)
            if i > 0 and typed[i - 1] == " ":
                gaps[i] += rng.gamma(2.0, 0.05)
            if finger == previous and char != " ":
                gaps[i] += 0.04
            gaps[i] += 0.06 * shifted + (rng.uniform(0.3, 1.0) if rng.random() < 0.03 else 0.0)
            previous = finger
        gaps = np.maximum(gaps, 0.06)
        gaps[0] = 0.0  # the first key starts the typing
        return np.cumsum(gaps)

    def trial(self, start: int) -> Trial:
        """Schedule the next sentence from sample ``start`` on."""
        sfreq, rng = self.sfreq, self._rng
        text = self._next_sentence()
        typed = self._typed(text)
        show = start + round(0.5 * sfreq)
        reading = 0.8 + 0.3 * len(text.split()) + rng.uniform(0.0, 0.3)
        first_key = show + round((reading + rng.uniform(0.5, 1.0)) * sfreq)
        keys = first_key + np.round(self._key_times(typed) * sfreq).astype(int)
        end = int(keys[-1] + round(rng.uniform(0.3, 0.6) * sfreq)) if len(keys) else first_key
        stop = end + round(rng.uniform(1.0, 2.0) * sfreq)
        events = [Event(show, *self.responses.display(reading))]
        for char, sample in zip(typed, keys):
            events.append(
                Event(int(sample) - self.responses.offset, *self.responses.response(char))
            )
        markers = [(show, f"sentence_start:{text}")]
        markers += [(int(s), key_marker(c)) for c, s in zip(typed, keys)]
        markers.append((end, f"sentence_end:{text}"))
        lo, hi = (round(w * sfreq) for w in SNR_WINDOW)
        truth = {
            "text": text,
            "typed": typed,
            "onset": show / sfreq,
            "typing_onset": first_key / sfreq,
            "offset": end / sfreq,
            "keys": [{"char": c, "time": int(s) / sfreq} for c, s in zip(typed, keys)],
        }
        spans = [(int(s) + lo, int(s) + hi) for s in keys]
        return Trial(start, stop, markers, events, truth, spans)
