"""Low-level LSL helpers shared by inlets and outlets: formats, queries, resolution, pulls."""

from __future__ import annotations

import inspect
import logging

import numpy as np
import pylsl

logger = logging.getLogger(__name__)

_PULL_PARAMS = inspect.signature(pylsl.StreamInlet.pull_chunk).parameters
HAS_MIN_SAMPLES = "min_samples" in _PULL_PARAMS  # pylsl >= 1.18
HAS_AS_NUMPY = "as_numpy" in _PULL_PARAMS  # pylsl >= 1.18
_MAX_LISTED = 40
#: Short resolve wait. Not 0.5 s: with liblsl 1.18 a wait equal to its 0.5 s query interval
#: sometimes returns 5 s late.
_SHORT_WAIT_S = 0.6
_FORMAT_NAMES = {
    pylsl.cf_float32: "float32",
    pylsl.cf_double64: "double64",
    pylsl.cf_string: "string",
    pylsl.cf_int32: "int32",
    pylsl.cf_int16: "int16",
    pylsl.cf_int8: "int8",
    pylsl.cf_int64: "int64",
}

#: numpy dtype of each numeric LSL channel format.
NUMPY_DTYPES = {
    pylsl.cf_float32: np.float32,
    pylsl.cf_double64: np.float64,
    pylsl.cf_int32: np.int32,
    pylsl.cf_int16: np.int16,
    pylsl.cf_int8: np.int8,
    pylsl.cf_int64: np.int64,
}


def pull_into(inlet: pylsl.StreamInlet, dest: np.ndarray, timeout: float) -> np.ndarray:
    """Pull up to ``len(dest)`` samples of a numeric stream into ``dest``; return timestamps.

    With pylsl >= 1.18 the call waits up to ``timeout`` for the first sample and then takes
    what is already there (``min_samples=1``), and timestamps come back as an array.
    """
    kwargs = {}
    if HAS_MIN_SAMPLES:
        kwargs["min_samples"] = 1
    if HAS_AS_NUMPY:
        kwargs["as_numpy"] = True
    _, ts = inlet.pull_chunk(timeout=timeout, max_samples=dest.shape[0], dest_obj=dest, **kwargs)
    return np.asarray(ts, dtype=np.float64)


class StreamNotFoundError(RuntimeError):
    """No LSL stream matched the query within the resolve timeout."""


def format_name(channel_format: int) -> str:
    """Return the LSL name of a channel format constant (``cf_float32`` -> ``"float32"``)."""
    return _FORMAT_NAMES.get(channel_format, str(channel_format))


def describe(info: pylsl.StreamInfo) -> str:
    """One line describing a stream: name, type, channels, rate, format, source_id."""
    return (
        f"name={info.name()!r} type={info.type()!r} channels={info.channel_count()} "
        f"sfreq={info.nominal_srate():g} format={format_name(info.channel_format())} "
        f"source_id={info.source_id()!r}"
    )


def _quote(value: str, arg: str) -> str:
    if "'" in value:
        raise ValueError(
            f"Invalid value for {arg!r}: {value!r} contains a single quote, which LSL queries "
            "cannot express. Rename the stream or query it by another property."
        )
    return f"'{value}'"


def query_predicate(name: str | None, stype: str | None, source_id: str | None) -> str:
    """Build the XPath predicate of an LSL query matching every given property."""
    parts = [
        f"{key}={_quote(value, arg)}"
        for key, value, arg in (
            ("name", name, "name"),
            ("type", stype, "stype"),
            ("source_id", source_id, "source_id"),
        )
        if value is not None
    ]
    if not parts:
        raise ValueError(
            "Invalid stream query: 'name', 'stype' and 'source_id' are all None. Give at least "
            "one of them (a unique source_id is the safest)."
        )
    return " and ".join(parts)


def resolve_stream(
    name: str | None,
    stype: str | None,
    source_id: str | None,
    timeout: float,
    prefer=None,
) -> pylsl.StreamInfo:
    """Find one stream matching the query, preferring those for which ``prefer(info)`` is true.

    Raises
    ------
    StreamNotFoundError
        If nothing matched within ``timeout`` seconds; the message lists the visible streams.
    """
    pred = query_predicate(name, stype, source_id)
    found = pylsl.resolve_bypred(pred, 1, float(timeout))
    if found and prefer is not None and not any(prefer(i) for i in found):
        # Streams answer one by one; give a preferred one (e.g. data vs. annotations of the
        # same player, which share a source_id) a moment to answer too.
        found = pylsl.resolve_bypred(pred, len(found) + 1, _SHORT_WAIT_S) or found
    if not found:
        listing = _visible_streams(name, stype, source_id)
        raise StreamNotFoundError(
            f"No LSL stream matched {pred} within resolve_timeout={timeout:g} s. Streams visible "
            f"now:\n{listing}\nStart the outlet, fix the query, or raise resolve_timeout."
        )
    if prefer is not None:
        found.sort(key=lambda i: not prefer(i))
    if len(found) > 1:
        logger.info("%d streams matched %s; using %s", len(found), pred, describe(found[0]))
    return found[0]


def _visible_streams(name: str | None, stype: str | None, source_id: str | None) -> str:
    """List the streams on the network, those sharing a queried property first."""
    visible = pylsl.resolve_streams(_SHORT_WAIT_S)
    query = {(0, name), (1, stype), (2, source_id)}

    def shares(info: pylsl.StreamInfo) -> bool:
        return bool(query & {(0, info.name()), (1, info.type()), (2, info.source_id())})

    visible.sort(key=lambda i: not shares(i))
    lines = [f"  - {describe(i)}" for i in visible[:_MAX_LISTED]]
    if len(visible) > _MAX_LISTED:
        lines.append(f"  ... and {len(visible) - _MAX_LISTED} more")
    return "\n".join(lines) or "  (none)"
