"""File format of the character LM: an ``.npz`` archive read with ``allow_pickle=False``.

Arrays: ``format`` (the tag ``"bci-app-char-ngram-lm"``), ``version``, ``alphabet`` (the display
characters of the 29 classes, so a model of another alphabet is refused), ``order``, ``stats``
(training statistics as JSON text) and, for every order ``k``, ``codes_k`` (sorted int64 n-gram
codes, see :mod:`bci_app.lm.kneser_ney`) and ``counts_k`` (their raw counts). Smoothing is
recomputed on loading, so the file holds only counts.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np

from bci_app.lm.kneser_ney import BOS, MAX_ORDER, N_SYMBOLS
from bci_app.typing.alphabet import DISPLAY_CHARS

FORMAT_NAME = "bci-app-char-ngram-lm"
FORMAT_VERSION = 1


def write_archive(path: str | os.PathLike, order: int, stats: dict, counts: dict) -> Path:
    """Write a model's counts and statistics to ``path`` atomically; return the path."""
    path = Path(path)
    arrays = {
        "format": np.array(FORMAT_NAME),
        "version": np.array(FORMAT_VERSION),
        "alphabet": np.array(DISPLAY_CHARS),
        "order": np.array(order),
        "stats": np.array(json.dumps(stats)),
        **counts,
    }
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)
    return path


def read_archive(path: str | os.PathLike) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict]:
    """Read and validate a model file; return its raw counts per order and its statistics.

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    ValueError
        If the file is not a readable archive, not a bci-app character LM, from a newer format
        version, of another alphabet, or holds malformed counts.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Invalid value for 'path': no language model file at {str(path)!r}. Train one "
            "with `bci-app lm train CORPUS --out FILE`."
        )
    try:
        with path.open("rb") as handle, np.load(handle, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        stats = json.loads(str(arrays.get("stats", "{}")))
    except Exception as err:
        raise ValueError(
            f"Invalid language model file {str(path)!r}: it is not a readable .npz archive "
            f"({type(err).__name__}: {err}). Retrain it with `bci-app lm train`."
        ) from err
    return _check_archive(arrays, path), stats


def _check_archive(arrays: dict, path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Validate the arrays of a saved model and return its raw counts."""

    def bad(reason: str, fix: str = "Retrain it with `bci-app lm train`.") -> ValueError:
        return ValueError(f"Invalid language model file {str(path)!r}: {reason}. {fix}")

    if "format" not in arrays or str(arrays["format"]) != FORMAT_NAME:
        raise bad(f"it is not a bci-app character LM (no format tag {FORMAT_NAME!r})")
    version = int(arrays["version"])
    if version > FORMAT_VERSION:
        raise bad(
            f"format version {version} is newer than this bci-app reads ({FORMAT_VERSION})",
            "Upgrade bci-app or retrain the model with this version.",
        )
    if str(arrays["alphabet"]) != DISPLAY_CHARS:
        raise bad(f"its alphabet {str(arrays['alphabet'])!r} differs from {DISPLAY_CHARS!r}")
    order = int(arrays["order"])
    if not 1 <= order <= MAX_ORDER:
        raise bad(f"order {order} is outside 1..{MAX_ORDER}")
    raw = []
    for k in range(1, order + 1):
        codes, counts = arrays.get(f"codes_{k}"), arrays.get(f"counts_{k}")
        if codes is None or counts is None:
            raise bad(f"the counts of order {k} are missing")
        if (
            codes.dtype != np.int64
            or codes.shape != counts.shape
            or codes.ndim != 1
            or len(codes) == 0
            or np.any(np.diff(codes) <= 0)
            or codes[0] < 0
            or codes[-1] >= N_SYMBOLS**k
            or np.any(codes % N_SYMBOLS == BOS)
            or np.any(counts <= 0)
        ):
            raise bad(f"the n-gram counts of order {k} are malformed")
        raw.append((codes, counts.astype(np.int64)))
    return raw
