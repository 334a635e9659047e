"""Incremental XDF writer, written from the specification.

XDF (https://github.com/sccn/xdf/wiki/Specifications) is LSL's native file format: the magic
``XDF:`` then chunks ``[NumLengthBytes][Length][Tag][Content]``. No well-kept Python library
writes XDF (pyxdf only reads it, LabRecorder's writer is C++), so :class:`XdfWriter` is ours.

Each chunk is written with one unbuffered ``write`` (nothing waits in a user-space buffer), so a
recorder killed with SIGKILL leaves at most a partial last chunk. When a write fails (full disk,
file-size limit) the writer cuts the file back to its last complete chunk, so it still loads.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pylsl

from acquisition.recording import exists_error

logger = logging.getLogger(__name__)

TAG_FILE_HEADER, TAG_STREAM_HEADER, TAG_SAMPLES = 1, 2, 3
TAG_CLOCK_OFFSET, TAG_BOUNDARY, TAG_STREAM_FOOTER = 4, 5, 6
#: The fixed 16-byte signature of Boundary chunks, which readers scan for after corruption.
BOUNDARY_UUID = bytes.fromhex("43A546DCCBF5410FB30ED5467383CBE4")
#: XDF numeric channel formats and their little-endian numpy types.
NUMERIC_FORMATS = {
    "float32": "<f4",
    "double64": "<f8",
    "int8": "i1",
    "int16": "<i2",
    "int32": "<i4",
    "int64": "<i8",
}


def _varlen(n: int) -> bytes:
    """Encode ``n`` as an XDF variable-length integer (1, 4 or 8 bytes after a size byte)."""
    if n < 256:
        return bytes((1, n))
    if n < 2**32:
        return b"\x04" + struct.pack("<I", n)
    return b"\x08" + struct.pack("<Q", n)


def _chunk(tag: int, content: bytes, stream_id: int | None = None) -> bytes:
    head = struct.pack("<H", tag) + (b"" if stream_id is None else struct.pack("<I", stream_id))
    return b"".join((_varlen(len(head) + len(content)), head, content))


@dataclass
class _StreamState:
    """What the writer knows of one stream: its format and the numbers its footer reports."""

    channel_format: str
    channel_count: int
    first_timestamp: float | None = None
    last_timestamp: float | None = None
    sample_count: int = 0
    clock_offsets: list[tuple[float, float]] = field(default_factory=list)


class XdfWriter:
    """Write an XDF file chunk by chunk, each chunk in one write, safe to read while recording.

    Parameters
    ----------
    path : path-like
        The ``.xdf`` file to create.
    overwrite : bool
        Replace an existing file; otherwise an existing file is an error.

    Notes
    -----
    Methods are thread-safe. A failed write raises :class:`OSError` after cutting the file back
    to its last complete chunk; every later write raises the same error.
    """

    def __init__(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._streams: dict[int, _StreamState] = {}
        self._failed: OSError | None = None
        self._size = 0
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
        try:
            self._fd: int | None = os.open(self.path, flags, 0o644)
        except FileExistsError:
            raise exists_error(self.path) from None
        except OSError as err:
            raise OSError(
                err.errno,
                f"Cannot create the XDF file '{self.path}': {err.strerror}. Choose a path in an "
                "existing, writable folder.",
            ) from err
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")
        header = (
            f'<?xml version="1.0"?><info><version>1.0</version><datetime>{now}</datetime></info>'
        )
        try:
            self._write(b"XDF:" + _chunk(TAG_FILE_HEADER, header.encode()))
        except OSError:
            self.close()
            raise

    def _write(self, payload: bytes) -> None:
        """Append ``payload`` (whole chunks) or cut the file back to where it was and raise."""
        with self._lock:
            if self._fd is None:
                raise RuntimeError(f"The XDF writer of '{self.path}' is closed; open a new one.")
            if self._failed is not None:
                raise self._failed
            view, start = memoryview(payload), self._size
            try:
                while view:
                    view = view[os.write(self._fd, view) :]
            except OSError as err:
                try:
                    os.ftruncate(self._fd, start)
                    kept = f"It was cut back to its last complete chunk ({start} bytes)"
                except OSError:
                    kept = "It could not be cut back to its last complete chunk"
                self._failed = OSError(
                    err.errno,
                    f"Writing the XDF file '{self.path}' failed ({err.strerror}). {kept}: what "
                    "was recorded before still loads. Free disk space or choose another disk.",
                )
                raise self._failed from err
            self._size += len(payload)

    def add_stream(
        self,
        stream_id: int,
        info: pylsl.StreamInfo | str | None = None,
        *,
        name: str = "stream",
        stype: str = "",
        channel_count: int = 1,
        nominal_srate: float = 0.0,
        channel_format: str = "float32",
        source_id: str = "",
    ) -> None:
        """Write the StreamHeader of a stream: from a ``StreamInfo``, its XML, or fields."""
        if not isinstance(stream_id, int) or not 0 <= stream_id < 2**32:
            raise ValueError(f"Invalid value for 'stream_id': {stream_id!r}; use an int >= 0.")
        if stream_id in self._streams:
            raise ValueError(f"Invalid value for 'stream_id': stream {stream_id} already added.")
        if isinstance(info, pylsl.StreamInfo):
            info = info.as_xml()
        if info is None:
            stream_info = pylsl.StreamInfo(
                name, stype, channel_count, nominal_srate, channel_format, source_id
            )
            info = stream_info.as_xml()
        try:
            root = ElementTree.fromstring(info)
            fmt = root.findtext("channel_format", "")
            count = int(root.findtext("channel_count", ""))
        except (ElementTree.ParseError, ValueError) as err:
            raise ValueError(
                f"Invalid value for 'info': not an LSL stream header ({err}). Pass a "
                "pylsl.StreamInfo, its as_xml(), or the fields name, channel_count, ..."
            ) from None
        if fmt not in NUMERIC_FORMATS and fmt != "string":
            raise ValueError(
                f"Invalid channel_format {fmt!r} in the header of stream {stream_id}; XDF "
                f"supports {[*NUMERIC_FORMATS, 'string']}."
            )
        self._write(_chunk(TAG_STREAM_HEADER, info.encode(), stream_id))
        self._streams[stream_id] = _StreamState(fmt, count)

    def write_samples(self, stream_id: int, data: Sequence | np.ndarray, timestamps) -> int:
        """Write one Samples chunk: ``data`` is ``(n_samples, n_channels)``; returns n_samples.

        Numeric data is packed with numpy in one go; string samples are ``str`` or ``bytes``.
        """
        state = self._stream(stream_id)
        timestamps = np.asarray(timestamps, dtype=np.float64).reshape(-1)
        n = timestamps.size
        if state.channel_format == "string":
            values = np.asarray(data, dtype=object).reshape(n, -1) if n else np.empty((0, 0))
            content = _pack_strings(values, timestamps, state.channel_count, stream_id)
        else:
            values = np.asarray(data)
            if values.ndim == 1 and state.channel_count == 1:
                values = values[:, np.newaxis]
            if values.shape != (n, state.channel_count):
                raise ValueError(
                    f"Invalid value for 'data': expected ({n}, {state.channel_count}) for "
                    f"{n} timestamps and stream {stream_id}, got shape {values.shape}."
                )
            record = np.empty(
                n,
                dtype=[
                    ("flag", "u1"),
                    ("time", "<f8"),
                    ("values", NUMERIC_FORMATS[state.channel_format], (state.channel_count,)),
                ],
            )
            record["flag"], record["time"], record["values"] = 8, timestamps, values
            content = record.tobytes()
        if n == 0:
            return 0
        self._write(_chunk(TAG_SAMPLES, _varlen(n) + content, stream_id))
        if state.first_timestamp is None:
            state.first_timestamp = float(timestamps[0])
        state.last_timestamp = float(timestamps[-1])
        state.sample_count += n
        return n

    def write_clock_offset(self, stream_id: int, collection_time: float, offset: float) -> None:
        """Write a ClockOffset chunk.

        ``collection_time`` is on the stream's clock (``local_clock() - offset``, as LabRecorder
        does); ``offset`` is what to add to the stream's timestamps (``inlet.time_correction()``).
        """
        state = self._stream(stream_id)
        self._write(
            _chunk(TAG_CLOCK_OFFSET, struct.pack("<dd", collection_time, offset), stream_id)
        )
        state.clock_offsets.append((float(collection_time), float(offset)))

    def write_boundary(self) -> None:
        """Write a Boundary chunk: a marker readers resynchronise on after corrupt data."""
        self._write(_chunk(TAG_BOUNDARY, BOUNDARY_UUID))

    def stream_stats(self, stream_id: int) -> dict:
        """First/last timestamp and sample count written so far for a stream."""
        state = self._stream(stream_id)
        return {
            "first_timestamp": state.first_timestamp,
            "last_timestamp": state.last_timestamp,
            "sample_count": state.sample_count,
        }

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._fd is None

    def close(self, footers: dict[int, dict] | None = None) -> None:
        """Write a StreamFooter for every stream and close the file (safe to call twice).

        Footers hold first/last timestamp, sample count and clock offsets; ``footers`` adds
        fields per stream id. After a failed write, footers are skipped and the file is closed.
        """
        if self._fd is None:
            return
        try:
            if self._failed is None:
                for stream_id, state in self._streams.items():
                    extra = (footers or {}).get(stream_id, {})
                    xml = _footer_xml(state, extra)
                    self._write(_chunk(TAG_STREAM_FOOTER, xml.encode(), stream_id))
        finally:
            with self._lock:
                fd, self._fd = self._fd, None
            os.close(fd)

    def _stream(self, stream_id: int) -> _StreamState:
        if stream_id not in self._streams:
            raise ValueError(
                f"Invalid value for 'stream_id': {stream_id} was never added; call "
                f"add_stream({stream_id}, info) first. Known: {sorted(self._streams)}."
            )
        return self._streams[stream_id]

    def __enter__(self) -> XdfWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _pack_strings(values: np.ndarray, timestamps: np.ndarray, n_ch: int, sid: int) -> bytes:
    if values.shape != (timestamps.size, n_ch):
        raise ValueError(
            f"Invalid value for 'data': expected ({timestamps.size}, {n_ch}) strings for stream "
            f"{sid}, got shape {values.shape}."
        )
    parts = []
    for time, row in zip(timestamps.tolist(), values):
        parts.append(b"\x08" + struct.pack("<d", time))
        for value in row:
            raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
            parts.append(_varlen(len(raw)) + raw)
    return b"".join(parts)


def _footer_xml(state: _StreamState, extra: dict) -> str:
    fields = {
        "first_timestamp": state.first_timestamp,
        "last_timestamp": state.last_timestamp,
        "sample_count": state.sample_count,
    }
    fields.update(extra)
    root = ElementTree.Element("info")
    for key, value in fields.items():
        ElementTree.SubElement(root, key).text = _xml_text(value)
    offsets = ElementTree.SubElement(root, "clock_offsets")
    for time, value in state.clock_offsets:
        offset = ElementTree.SubElement(offsets, "offset")
        ElementTree.SubElement(offset, "time").text = repr(time)
        ElementTree.SubElement(offset, "value").text = repr(value)
    return '<?xml version="1.0"?>' + ElementTree.tostring(root, encoding="unicode")


def _xml_text(value) -> str:
    if value is None:
        return ""
    return repr(float(value)) if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------------------------
# Reading

#: Channel type names other tools write, mapped to MNE's names (anything else becomes "misc").
