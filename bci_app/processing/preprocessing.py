"""Causal, chunk-by-chunk preprocessing shared by live decoding and offline training.

A :class:`Preprocessor` chains the stages of :mod:`bci_app.processing.stages` and
:mod:`bci_app.processing.resampling`::

    pick channels -> guard (timestamps, NaN/Inf, gaps) -> band-pass + notch (IIR)
                  -> resample (polyphase FIR) -> robust scaling -> clamp -> zero bad channels

(robust scaling with fixed statistics, or re-centred ones when ``PreprocessConfig.recenter`` is
set: :mod:`bci_app.processing.recentering`)

and :func:`preprocess_recording` pushes a whole :class:`~acquisition.recording.Recording` through
the very same object, so training sees exactly what the live path sees.

Where the IIR runs (``PreprocessConfig.iir_stage``): ``"before_resample"`` filters at the input
rate; ``"after_resample"`` filters at the output rate, 20x cheaper for 1 kHz -> 50 Hz. Both are
causal. The anti-alias FIR of the resampler removes everything above the output Nyquist, so
band edges below it are unaffected by the order, and a notch above it has nothing left to remove
(it is dropped when the FIR attenuates it by at least 40 dB). ``"auto"`` (default) filters after
resampling whenever that holds, and before otherwise. The Butterworth shapes differ slightly near
the output Nyquist between the two orders; training and live use the same config, hence the same
order.

Invalid samples: NaN/Inf rows, rows flagged by the caller, and the first row after a timestamp
jump (``max_gap_s``) are marked invalid, replaced by the last valid row before filtering, and the
invalidity spreads to every output sample they influence (the FIR support exactly; the IIR for
``invalid_memory_s``, by default until its impulse response stays under 1 % of its peak, about
1.2-1.4 s for 0.1-20 Hz). Output is never NaN. Timestamps going backwards raise ValueError.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, freqz, iirnotch, tf2sos

from acquisition.recording import Recording
from bci_app.processing.recentering import RecenterConfig, RecenteringScaler
from bci_app.processing.resampling import ANTI_ALIAS, StreamingResampler, rational_ratio
from bci_app.processing.stages import (
    ChannelPicker,
    Chunk,
    Clamp,
    IIRFilter,
    RobustScaler,
    SampleGuard,
    Stage,
    check_chunk,
    sos_memory,
)

IIR_STAGES = ("auto", "before_resample", "after_resample")
#: Anti-alias attenuation (dB) at which a notch above the output Nyquist is dropped as redundant.
NOTCH_DROP_DB = 40.0


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that defines the preprocessing; stored in decoder bundles (see ``to_dict``).

    Parameters
    ----------
    sfreq_in : float
        Rate of the incoming stream (Hz).
    ch_names : tuple of str | None
        Channels to keep, in this order (None keeps all channels of the stream).
    l_freq, h_freq : float | None
        Butterworth band edges in Hz (None: no high-pass / no low-pass).
    notch_freqs : tuple of float
        Line-noise frequencies to notch out (``iirnotch``), quality ``notch_q``.
    filter_order : int
        Butterworth order of each band edge.
    sfreq_out : float | None
        Output rate (None: no resampling). Any rational ratio works (1017.25 -> 50 Hz).
    iir_stage : {"auto", "before_resample", "after_resample"}
        Where the IIR filters run (see the module docstring).
    resample_zeros : int
        Half-length of the anti-alias FIR in output samples (its delay when downsampling with
        ``anti_alias="linear"``).
    anti_alias : {"linear", "minphase"}
        Anti-alias FIR of the resampler: linear-phase with its delay compensated in the
        timestamps (waits ``resample_zeros`` output periods), or the minimum-phase filter of the
        same magnitude, causal (no wait; its group delay is not compensated). Bundles written
        before this option existed have no key and keep ``"linear"``.
    clamp : float | None
        Clip to ``[-clamp, clamp]`` after scaling (None: no clipping).
    scaler_center, scaler_scale : tuple of float | None
        Robust-scaler median and IQR per output channel (None: no scaling); see
        :func:`fit_scaler`.
    max_gap_s : float | None
        A timestamp step larger than this marks the next sample invalid (None: 5 input periods).
    invalid_memory_s : float | None
        How long after an invalid sample the IIR output stays invalid (None: from the filter's
        impulse response).
    recenter : RecenterConfig | None
        Drift re-centering: the scaler statistics follow the recent signal, starting from
        ``scaler_center``/``scaler_scale`` (None: fixed statistics, as in training).
    """

    sfreq_in: float
    ch_names: tuple[str, ...] | None = None
    l_freq: float | None = None
    h_freq: float | None = None
    notch_freqs: tuple[float, ...] = ()
    notch_q: float = 30.0
    filter_order: int = 4
    sfreq_out: float | None = None
    iir_stage: str = "auto"
    resample_zeros: int = 10
    anti_alias: str = "linear"
    clamp: float | None = None
    scaler_center: tuple[float, ...] | None = None
    scaler_scale: tuple[float, ...] | None = None
    max_gap_s: float | None = None
    invalid_memory_s: float | None = None
    recenter: RecenterConfig | None = None

    def __post_init__(self) -> None:
        for name in ("ch_names", "notch_freqs", "scaler_center", "scaler_scale"):
            value = getattr(self, name)
            if value is not None:
                cast = str if name == "ch_names" else float
                object.__setattr__(self, name, tuple(cast(v) for v in value))
        if isinstance(self.recenter, dict):  # read back from a bundle or a log
            object.__setattr__(self, "recenter", RecenterConfig.from_dict(self.recenter))
        _validate_config(self)

    @property
    def rate_after(self) -> float:
        """Rate of the preprocessed output (``sfreq_out``, or ``sfreq_in`` if not resampling)."""
        return self.sfreq_in if self.sfreq_out is None else self.sfreq_out

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"Invalid preprocessing config: unknown keys {unknown}. Known keys: "
                f"{sorted(known)}. Was it written by a newer bci-app?"
            )
        return cls(**d)

    def with_scaler(self, center: Sequence[float], scale: Sequence[float]) -> PreprocessConfig:
        """Return a copy with robust-scaler statistics set."""
        return dataclasses.replace(self, scaler_center=tuple(center), scaler_scale=tuple(scale))

    def with_recentering(self, recenter: RecenterConfig | None = None) -> PreprocessConfig:
        """Return a copy whose scaler statistics follow the signal (default settings if None)."""
        return dataclasses.replace(self, recenter=recenter or RecenterConfig())

    @classmethod
    def brain2qwerty(
        cls, sfreq_in: float, ch_names: Sequence[str] | None = None
    ) -> PreprocessConfig:
        """Brain2Qwerty v1 settings: band-pass 0.1-20 Hz, 50 Hz (scaler: :func:`fit_scaler`).

        The anti-alias FIR has 5 zero crossings and minimum phase: no wait for future samples
        (the linear-phase version waited 0.1 s), 31-57 ms group delay in 1-20 Hz, the same
        magnitude response (docs/DESIGN.md). The +-5 clamp follows the window baseline, so it
        lives in the windower.
        """
        names = None if ch_names is None else tuple(ch_names)
        return cls(
            sfreq_in=sfreq_in,
            ch_names=names,
            l_freq=0.1,
            h_freq=20.0,
            sfreq_out=50.0,
            resample_zeros=5,
            anti_alias="minphase",
        )

    @classmethod
    def speech(cls, sfreq_in: float, ch_names: Sequence[str] | None = None) -> PreprocessConfig:
        """Speech decoder settings: 0.1 Hz high-pass and 120 Hz (clamp +-20 in the windower).

        The anti-alias FIR is minimum-phase (no wait instead of 83 ms for 1 kHz input; 14-15 ms
        group delay in 1-20 Hz).
        """
        names = None if ch_names is None else tuple(ch_names)
        return cls(
            sfreq_in=sfreq_in, ch_names=names, l_freq=0.1, sfreq_out=120.0, anti_alias="minphase"
        )


def _validate_config(c: PreprocessConfig) -> None:
    def bad(name: str, rule: str) -> ValueError:
        return ValueError(f"Invalid value for '{name}': {getattr(c, name)!r}; {rule}.")

    if not (np.isfinite(c.sfreq_in) and c.sfreq_in > 0):
        raise bad("sfreq_in", "it must be a positive rate in Hz")
    nyquist = c.sfreq_in / 2
    for name in ("l_freq", "h_freq"):
        value = getattr(c, name)
        if value is not None and not 0 < value < nyquist:
            raise bad(name, f"it must lie between 0 and the input Nyquist frequency {nyquist} Hz")
    if c.l_freq is not None and c.h_freq is not None and c.l_freq >= c.h_freq:
        raise bad("l_freq", f"it must be below 'h_freq' ({c.h_freq} Hz)")
    if any(not 0 < f < nyquist for f in c.notch_freqs):
        raise bad("notch_freqs", f"each must lie between 0 and {nyquist} Hz")
    if not c.notch_q > 0:
        raise bad("notch_q", "it must be > 0")
    if int(c.filter_order) != c.filter_order or c.filter_order < 1:
        raise bad("filter_order", "use an integer >= 1")
    if c.sfreq_out is not None:
        if not (np.isfinite(c.sfreq_out) and c.sfreq_out > 0):
            raise bad("sfreq_out", "it must be a positive rate in Hz, or None")
        rational_ratio(c.sfreq_in, c.sfreq_out)
    if c.iir_stage not in IIR_STAGES:
        raise bad("iir_stage", f"use one of {IIR_STAGES}")
    if int(c.resample_zeros) != c.resample_zeros or c.resample_zeros < 1:
        raise bad("resample_zeros", "use an integer >= 1")
    if c.anti_alias not in ANTI_ALIAS:
        raise bad("anti_alias", f"use one of {ANTI_ALIAS}")
    if c.clamp is not None and not c.clamp > 0:
        raise bad("clamp", "use a positive number, or None for no clipping")
    if (c.scaler_center is None) != (c.scaler_scale is None):
        raise bad("scaler_center", "give 'scaler_center' and 'scaler_scale' together")
    if c.scaler_center is not None:
        RobustScaler(np.array(c.scaler_center), np.array(c.scaler_scale))
        if c.ch_names is not None and len(c.scaler_center) != len(c.ch_names):
            raise bad("scaler_center", f"it needs one value per channel ({len(c.ch_names)})")
    if c.ch_names is not None and len(set(c.ch_names)) != len(c.ch_names):
        raise bad("ch_names", "channel names must be unique")
    if c.max_gap_s is not None and not c.max_gap_s > 0:
        raise bad("max_gap_s", "use a positive number of seconds, or None")
    if c.invalid_memory_s is not None and not c.invalid_memory_s >= 0:
        raise bad("invalid_memory_s", "use a number of seconds >= 0, or None")
    if c.recenter is not None and not isinstance(c.recenter, RecenterConfig):
        raise bad("recenter", "use a RecenterConfig (or its to_dict()), or None")
    if c.recenter is not None and c.scaler_center is None:
        raise bad(
            "recenter",
            "there is no fitted robust scaler to re-centre. Use the bundle's preprocessing (with "
            "scaler statistics), or fit_scaler() first",
        )


def _sections(c: PreprocessConfig, sfreq: float, notches: Sequence[float]) -> np.ndarray | None:
    """Band-pass and notch filters as one stack of second-order sections at ``sfreq``."""
    parts = []
    order = int(c.filter_order)
    if c.l_freq is not None and c.h_freq is not None:
        parts.append(butter(order, [c.l_freq, c.h_freq], "bandpass", fs=sfreq, output="sos"))
    elif c.l_freq is not None:
        parts.append(butter(order, c.l_freq, "highpass", fs=sfreq, output="sos"))
    elif c.h_freq is not None:
        parts.append(butter(order, c.h_freq, "lowpass", fs=sfreq, output="sos"))
    for freq in notches:
        parts.append(tf2sos(*iirnotch(freq, c.notch_q, fs=sfreq)))
    return np.vstack(parts) if parts else None


def _plan_iir(c: PreprocessConfig, resampler: StreamingResampler | None) -> tuple[bool, tuple]:
    """Decide whether the IIR runs after resampling; return it and the notches it still needs."""
    if resampler is None or c.iir_stage == "before_resample":
        return False, c.notch_freqs
    nyquist_out = c.sfreq_out / 2
    edges = [f for f in (c.l_freq, c.h_freq) if f is not None]
    high = [f for f in c.notch_freqs if f >= nyquist_out]
    attenuation_db = np.full(len(high), np.inf)
    if high:
        fs_up = resampler.up * c.sfreq_in
        _, response = freqz(resampler.taps / resampler.up, worN=np.array(high, float), fs=fs_up)
        attenuation_db = -20 * np.log10(np.maximum(np.abs(response), 1e-300))
    ok = (
        c.sfreq_out < c.sfreq_in
        and all(f < nyquist_out for f in edges)
        and bool((attenuation_db >= NOTCH_DROP_DB).all())
    )
    if c.iir_stage == "after_resample" and not ok:
        raise ValueError(
            f"Invalid value for 'iir_stage': 'after_resample' needs downsampling with band edges "
            f"{edges} Hz below the output Nyquist {nyquist_out} Hz and notches {high} Hz removed "
            f"by the anti-alias filter. Use 'before_resample' or 'auto'."
        )
    if not ok:
        return False, c.notch_freqs
    return True, tuple(f for f in c.notch_freqs if f < nyquist_out)


class Preprocessor:
    """Chain of stateful causal stages; push chunks with :meth:`process`.

    Parameters
    ----------
    config : PreprocessConfig
        What to do.
    stream_channels : sequence of str | None
        Channel names of the incoming stream, in order; ``config.ch_names`` are picked from
        them. None means the stream carries exactly ``config.ch_names`` in that order.
    """

    def __init__(
        self, config: PreprocessConfig, stream_channels: Sequence[str] | None = None
    ) -> None:
        if stream_channels is None and config.ch_names is None:
            raise ValueError(
                "Invalid arguments: give the stream's channel names ('stream_channels') or the "
                "channels to pick ('config.ch_names'); the Preprocessor needs one of them."
            )
        self.config = config
        names = config.ch_names if stream_channels is None else stream_channels
        picker = ChannelPicker(names, config.ch_names)
        self.ch_names: tuple[str, ...] = picker.names
        resampler = None
        if config.sfreq_out is not None and config.sfreq_out != config.sfreq_in:
            resampler = StreamingResampler(
                config.sfreq_in,
                config.sfreq_out,
                zeros=int(config.resample_zeros),
                anti_alias=config.anti_alias,
            )
        self.iir_after_resample, self.notch_freqs = _plan_iir(config, resampler)
        iir_rate = config.rate_after if self.iir_after_resample else config.sfreq_in
        iir = self._make_iir(iir_rate)
        filters = [resampler, iir] if self.iir_after_resample else [iir, resampler]
        max_gap = 5.0 / config.sfreq_in if config.max_gap_s is None else config.max_gap_s
        self.stages: list[Stage] = [picker, SampleGuard(max_gap), *filters]
        if config.scaler_center is not None:
            if len(config.scaler_center) != len(self.ch_names):
                raise ValueError(
                    f"Invalid value for 'scaler_center': {len(config.scaler_center)} values but "
                    f"{len(self.ch_names)} channels are picked. Refit the scaler (fit_scaler)."
                )
            self.stages.append(self._make_scaler())
        if config.clamp is not None:
            self.stages.append(Clamp(config.clamp))
        self.stages = [stage for stage in self.stages if stage is not None]
        self.resampler = resampler
        self.iir = iir
        # the first stage after the guard copies its input into float64 (process())
        self._resampler_first = resampler is not None and self.stages[2] is resampler
        self._bad_columns = np.zeros(0, dtype=np.int64)

    @property
    def bad_channels(self) -> tuple[str, ...]:
        """Picked channels whose output is set to zero (:meth:`set_bad_channels`)."""
        return tuple(self.ch_names[i] for i in self._bad_columns)

    def set_bad_channels(self, names: Sequence[str]) -> tuple[str, ...]:
        """Output zeros for these channels from the next chunk on; return those that apply.

        A bad channel keeps its column, so a decoder keeps its channel count, and zero is its
        neutral value after robust scaling. Names that are not among the picked channels are
        ignored. Safe to call from another thread than :meth:`process`'s.
        """
        bad = set(names)
        self._bad_columns = np.array(
            [i for i, name in enumerate(self.ch_names) if name in bad], dtype=np.int64
        )
        return self.bad_channels

    def _make_scaler(self) -> RobustScaler | RecenteringScaler:
        center, scale = np.array(self.config.scaler_center), np.array(self.config.scaler_scale)
        if self.config.recenter is None:
            return RobustScaler(center, scale)
        return RecenteringScaler(center, scale, self.sfreq_out, self.config.recenter)

    @property
    def recentering(self) -> RecenteringScaler | None:
        """The re-centering scaler stage (None: fixed statistics or no scaling)."""
        return next((s for s in self.stages if isinstance(s, RecenteringScaler)), None)

    def _make_iir(self, sfreq: float) -> IIRFilter | None:
        sos = _sections(self.config, sfreq, self.notch_freqs)
        if sos is None:
            return None
        if self.config.invalid_memory_s is None:
            memory = sos_memory(sos, sfreq)
        else:
            memory = round(self.config.invalid_memory_s * sfreq)
        return IIRFilter(sos, memory)

    @property
    def sfreq_out(self) -> float:
        """Rate of the output samples (Hz)."""
        return self.config.rate_after

    @property
    def latency_s(self) -> float:
        """Wait between an input sample and the output sample with its timestamp (FIR delay).

        The IIR filters, and the ``"minphase"`` anti-alias FIR, are causal and not compensated:
        like any causal filter they delay each frequency by its group delay (tens of ms in the
        1-20 Hz band for 0.1-20 Hz; see ``StreamingResampler.group_delay_s``).
        """
        return 0.0 if self.resampler is None else self.resampler.delay_s

    def process(
        self, data: np.ndarray, timestamps: np.ndarray, valid: np.ndarray | None = None
    ) -> Chunk:
        """Push one chunk ``(n_times, n_channels)``; return the samples it completes.

        Returns ``Chunk(data float32 (n_out, n_picked), timestamps float64, valid bool)``;
        with resampling, ``n_out`` differs from ``n_times`` (and may be 0). Bad channels
        (:meth:`set_bad_channels`) come out as zeros; they are zeroed on input too, so their
        NaN or garbage never marks a sample invalid.
        """
        bad = self._bad_columns
        picker, *stages = self.stages
        data = np.asarray(data)
        # float32 samples (what streams carry) reach the resampler as they are: it copies its
        # input rows into its float64 buffer anyway, so a float64 copy of the whole chunk first
        # was a second copy (with the ring buffer's page faults, the top cost of max-speed
        # replay). The IIR filter writes into an array of its input's dtype: it gets float64.
        float32_ok = data.dtype == np.float32 and self._resampler_first
        dtype = np.float32 if float32_ok else np.float64
        chunk = picker._apply(check_chunk(data, timestamps, valid, dtype=dtype))
        if bad.size:
            picked = chunk.data.copy()
            picked[:, bad] = 0.0
            chunk = chunk._replace(data=picked)
        for stage in stages:
            chunk = stage._apply(chunk)
            if not chunk.timestamps.size:
                # Nothing came out (a chunk shorter than the resampler's step): the later
                # stages would only pass the empty chunk on.
                break
        out = chunk.data.astype(np.float32)
        if bad.size:
            out[:, bad] = 0.0
        return Chunk(out, chunk.timestamps, chunk.valid)

    def reset(self) -> None:
        """Reset every stage: the next chunk starts a new stream."""
        for stage in self.stages:
            stage.reset()


def _check_rate(recording: Recording, config: PreprocessConfig) -> None:
    if not np.isclose(recording.sfreq, config.sfreq_in, rtol=1e-9, atol=0):
        raise ValueError(
            f"Invalid value for 'sfreq_in': the recording runs at {recording.sfreq} Hz but the "
            f"preprocessing expects {config.sfreq_in} Hz. Build the config with "
            f"sfreq_in={recording.sfreq}."
        )


def preprocess_recording(
    recording: Recording, config: PreprocessConfig, chunk_size: int | None = None
) -> Chunk:
    """Push a whole recording through a fresh :class:`Preprocessor`, as the live path would.

    Parameters
    ----------
    recording : Recording
        The data; its channel names are the stream channels.
    config : PreprocessConfig
        Preprocessing to apply.
    chunk_size : int | None
        Input samples per chunk (None: 10 s). The result does not depend on it.

    Returns
    -------
    Chunk
        ``(data, timestamps, valid)`` of the whole processed recording.
    """
    _check_rate(recording, config)
    pre = Preprocessor(config, recording.channels.names)
    step = max(1, int(10 * config.sfreq_in)) if chunk_size is None else int(chunk_size)
    if step < 1:
        raise ValueError(f"Invalid value for 'chunk_size': {chunk_size!r}; use an integer >= 1.")
    parts = [
        pre.process(recording.data[i : i + step], recording.timestamps[i : i + step])
        for i in range(0, recording.n_times, step)
    ]
    if not parts:
        parts = [pre.process(recording.data[:0], recording.timestamps[:0])]
    return Chunk(*(np.concatenate(p) for p in zip(*parts)))


def fit_scaler(
    recording: Recording, config: PreprocessConfig, chunk_size: int | None = None
) -> PreprocessConfig:
    """Fit the robust scaler on a (calibration) recording and return the completed config.

    The recording goes through the filters and resampler of ``config`` (no scaling, no clamp);
    the median and IQR of its valid output samples become the scaler statistics. Channels are
    pinned to the recording's when ``config.ch_names`` is None.
    """
    names = config.ch_names if config.ch_names is not None else recording.channels.names
    base = dataclasses.replace(
        config,
        ch_names=tuple(names),
        clamp=None,
        scaler_center=None,
        scaler_scale=None,
        recenter=None,
    )
    out = preprocess_recording(recording, base, chunk_size)
    scaler = RobustScaler().fit(out.data, out.valid)
    return dataclasses.replace(
        config,
        ch_names=tuple(names),
        scaler_center=tuple(scaler.center.tolist()),
        scaler_scale=tuple(scaler.scale.tolist()),
    )
