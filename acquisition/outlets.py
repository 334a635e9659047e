"""LSL outlets: marker strings, decoded text, and multichannel data with channel metadata.

The player and the simulator push their data through :class:`DataOutlet` and their events
through :class:`MarkerOutlet`; the live session publishes decoded text with :class:`TextOutlet`
so that any LSL tool (LabRecorder, another app) can consume it.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pylsl
from pylsl.util import handle_error

from acquisition._lsl import NUMPY_DTYPES, format_name
from acquisition.channels import ChannelSpec, make_stream_info

__all__ = ["DataOutlet", "MarkerOutlet", "TextOutlet"]


def _check_text(value: object, arg: str) -> str:
    if not isinstance(value, str):
        raise TypeError(
            f"Invalid value for {arg!r}: expected a str, got {type(value).__name__} "
            f"({value!r}). Convert it with str() or use a marker from acquisition.recording."
        )
    return value


def _check_timestamp(timestamp: float | None) -> float:
    if timestamp is None:
        return 0.0  # liblsl stamps the sample with local_clock() now
    timestamp = float(timestamp)
    if not np.isfinite(timestamp) or timestamp <= 0:
        raise ValueError(
            f"Invalid value for 'timestamp': {timestamp!r}; give a positive LSL time "
            "(pylsl.local_clock() domain) or None for now."
        )
    return timestamp


class _Outlet:
    """Common lifetime of the outlets: info, consumers, close, context manager."""

    _outlet: pylsl.StreamOutlet | None

    @property
    def info(self) -> pylsl.StreamInfo:
        """The outlet's ``StreamInfo``."""
        return self._get().get_info()

    def _get(self) -> pylsl.StreamOutlet:
        if self._outlet is None:
            raise RuntimeError("The outlet is closed; create a new one to push again.")
        return self._outlet

    def have_consumers(self) -> bool:
        """Whether at least one inlet is connected."""
        return self._get().have_consumers()

    def wait_for_consumers(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for an inlet to connect; return whether one did."""
        return self._get().wait_for_consumers(float(timeout))

    def close(self) -> None:
        """Destroy the outlet: it disappears from the network and its inlets see it lost."""
        self._outlet = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class MarkerOutlet(_Outlet):
    """An irregular-rate, one-channel LSL string stream of markers (``key:a``, ...).

    Parameters
    ----------
    name : str
        Stream name.
    source_id : str
        Unique, stable source identifier (inlets reconnect by it).
    stype : str
        Stream type.
    """

    _label = "marker"

    def __init__(self, name: str, source_id: str, stype: str = "Markers") -> None:
        for arg, value in (("name", name), ("source_id", source_id), ("stype", stype)):
            if not _check_text(value, arg):
                raise ValueError(f"Invalid value for {arg!r}: it must not be empty.")
        info = pylsl.StreamInfo(name, stype, 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, source_id)
        desc = info.desc()
        desc.append_child_value("manufacturer", "bci-app")
        channel = desc.append_child("channels").append_child("channel")
        channel.append_child_value("label", self._label)
        channel.append_child_value("type", "misc")
        channel.append_child_value("unit", "n/a")
        self._outlet = pylsl.StreamOutlet(info)

    def push(self, value: str, timestamp: float | None = None) -> None:
        """Send one marker, stamped ``timestamp`` (LSL local clock) or now."""
        self._get().push_sample([_check_text(value, "value")], _check_timestamp(timestamp))


class TextOutlet(MarkerOutlet):
    """An LSL string stream of decoded text, one sample per update.

    Parameters
    ----------
    name : str
        Stream name.
    source_id : str
        Unique, stable source identifier.
    stype : str
        Stream type.
    """

    _label = "text"

    def __init__(
        self, name: str = "bci-app-text", source_id: str = "bci-app-text", stype: str = "Text"
    ) -> None:
        super().__init__(name, source_id, stype)

    def push(self, text: str, timestamp: float | None = None) -> None:
        """Send one piece of decoded text, stamped ``timestamp`` (LSL local clock) or now."""
        self._get().push_sample([_check_text(text, "text")], _check_timestamp(timestamp))


class DataOutlet(_Outlet):
    """A regular-rate multichannel LSL stream carrying channel names, types, units, positions.

    Parameters
    ----------
    name : str
        Stream name.
    stype : str
        Stream type (``"EEG"``, ``"MEG"``, ``"sEEG"``, ...).
    channels : ChannelSpec
        Channel metadata written into the stream header.
    sfreq : float
        Nominal sampling rate in Hz.
    source_id : str
        Unique, stable source identifier (inlets reconnect by it).
    chunk_size : int
        Transmission granularity in samples (0: each push is sent as one chunk).
    channel_format : int
        LSL numeric channel format (``pylsl.cf_float32`` by default).
    max_buffered : float
        Seconds of data the outlet keeps for slow consumers.
    """

    def __init__(
        self,
        name: str,
        stype: str,
        channels: ChannelSpec,
        sfreq: float,
        source_id: str,
        chunk_size: int = 0,
        *,
        channel_format: int = pylsl.cf_float32,
        max_buffered: float = 60.0,
    ) -> None:
        if not isinstance(channels, ChannelSpec):
            raise TypeError(
                f"Invalid value for 'channels': expected a ChannelSpec, got "
                f"{type(channels).__name__}. Build one with ChannelSpec(...) or "
                "ChannelSpec.generic(n)."
            )
        if not (np.isfinite(sfreq) and sfreq > 0):
            raise ValueError(
                f"Invalid value for 'sfreq': {sfreq!r}; a data stream needs a positive rate "
                "in Hz (use MarkerOutlet for irregular events)."
            )
        if channel_format not in NUMPY_DTYPES:
            raise ValueError(
                f"Invalid value for 'channel_format': {format_name(channel_format)}; use a "
                "numeric LSL format such as pylsl.cf_float32."
            )
        if int(chunk_size) != chunk_size or chunk_size < 0:
            raise ValueError(f"Invalid value for 'chunk_size': {chunk_size!r}; it must be >= 0.")
        info = make_stream_info(
            name, stype, channels, sfreq, source_id, channel_format=channel_format
        )
        self.channels = channels
        self.sfreq = float(sfreq)
        self._dtype = NUMPY_DTYPES[channel_format]
        self._outlet = pylsl.StreamOutlet(
            info, chunk_size=int(chunk_size), max_buffered=max(1, round(max_buffered))
        )

    def push_chunk(self, data: np.ndarray, timestamps: np.ndarray | float | None = None) -> None:
        """Send samples.

        Parameters
        ----------
        data : array, shape (n_samples, n_channels)
            The samples (cast to the stream's format).
        timestamps : array, shape (n_samples,) | float | None
            LSL time of every sample, or of the last sample (the others follow at the nominal
            rate), or None for "the last sample is now".
        """
        outlet = self._get()
        arr = np.ascontiguousarray(data, dtype=self._dtype)
        n_ch = self.channels.n_channels
        if arr.ndim != 2 or arr.shape[1] != n_ch:
            raise ValueError(
                f"Invalid value for 'data': expected shape (n_samples, {n_ch}), got "
                f"{np.shape(data)}. Pass one row per sample and one column per channel."
            )
        if arr.shape[0] == 0:
            return
        if timestamps is None or np.ndim(timestamps) == 0:
            outlet.push_chunk(arr, _check_timestamp(timestamps))
            return
        ts = np.ascontiguousarray(timestamps, dtype=np.float64)
        if ts.shape != (arr.shape[0],) or not np.isfinite(ts).all():
            raise ValueError(
                f"Invalid value for 'timestamps': expected {arr.shape[0]} finite times (one per "
                f"sample), got shape {ts.shape}. Or pass one float for the last sample, or None."
            )
        # pylsl turns a timestamp array into a ctypes array element by element; hand liblsl
        # the numpy memory directly instead.
        handle_error(
            outlet.do_push_chunk_n(
                outlet.obj,
                ctypes.c_void_p(arr.ctypes.data),
                ctypes.c_long(arr.size),
                ctypes.c_void_p(ts.ctypes.data),
                ctypes.c_int(1),
            )
        )
