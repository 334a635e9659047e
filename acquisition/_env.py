"""The environment switch that makes stream workers re-raise their errors (tests set it)."""

from __future__ import annotations

import os

#: Environment variable read by :func:`raise_stream_errors`.
RAISE_STREAM_ERRORS_ENV = "BCI_APP_RAISE_STREAM_ERRORS"


def raise_stream_errors() -> bool:
    """Whether a failed worker re-raises its error from the caller's next call.

    True when ``BCI_APP_RAISE_STREAM_ERRORS`` holds any value other than ``""`` or ``"0"``
    (mne-lsl's ``MNE_LSL_RAISE_STREAM_ERRORS`` pattern). Otherwise a worker logs the error, marks
    itself unhealthy and, where it can, recovers. Read at the moment of the failure, so a test can
    set it with ``monkeypatch.setenv``.
    """
    return os.environ.get(RAISE_STREAM_ERRORS_ENV, "") not in ("", "0")
