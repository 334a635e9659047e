"""A sentence that never ends: the sentence graph sees only the newest keystrokes.

``MAX_SENTENCE_KEYS`` bounds the input of the sentence graph (and so onnxruntime's per-length
buffers, the native memory that grew without bound); it is lowered here so the test is quick.
"""

from __future__ import annotations

import numpy as np
import pytest

import bci_app.typing.keystroke as keystroke
from bci_app.decoders.shipped import TYPING_BUNDLE
from bci_app.typing.keystroke import KeystrokeDecoder


@pytest.mark.skipif(not TYPING_BUNDLE.is_dir(), reason="default bundle missing")
def test_keystrokes_older_than_the_cap_keep_their_last_posteriors(monkeypatch):
    monkeypatch.setattr(keystroke, "MAX_SENTENCE_KEYS", 8)
    decoder = KeystrokeDecoder(TYPING_BUNDLE, provider="cpu", threads=1)
    rng = np.random.default_rng(0)
    after = {}  # keystrokes typed -> posteriors of the sentence then
    for n in range(1, 15):
        window = rng.standard_normal((decoder.n_channels, decoder.n_times)).astype(np.float32)
        event = decoder.add_keystroke(window, n * 0.2)
        after[n] = decoder.log_probs
        assert event.kind == "keystroke" and len(event.hypothesis) == n
    assert after[14].shape == (14, 29)
    for i in range(14 - 8):  # left the graph's input after keystroke i + 8: frozen there
        np.testing.assert_array_equal(after[14][i], after[i + 8][i])
    assert not np.array_equal(after[14][13 - 7 :], after[13][13 - 7 :])  # the newest: revised
    assert decoder.end_sentence().kind == "sentence_end"
    np.testing.assert_array_equal(decoder.last_sentence.log_probs, after[14])  # what is committed
