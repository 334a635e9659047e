"""Background activity and artefacts of the simulator, generated block by block with carried state.

Components (each with its own random stream, so switching one off leaves the others unchanged):

- ``brain``: :data:`~acquisition.simulator.anatomy.N_BACKGROUND` dipoles throughout the brain,
  each driven by independent pink (1/f power) noise, projected through the forward model, plus
  four parieto-occipital 8-12 Hz (alpha) sources. Scaled so the broadband RMS over the channels
  of the modality's reference type (``mag`` for MEG) is ``brain_rms`` (table below).
- ``sensor``: white noise per channel (amplifier / SQUID noise) of the given density.
- ``drift``: slow per-channel drift, an AR(1) process with a 0.05 Hz corner (starts stationary),
  stepped once per rendered block and linearly interpolated between steps.
- ``line``: power-line interference at ``line_freq`` and its 2nd and 3rd harmonics (relative
  amplitudes 1, 0.3, 0.15; harmonics above 0.45 * sfreq dropped), fixed per-channel amplitude
  (log-normal spread) and phase, a function of the absolute sample index.
- ``blinks``: eye blinks every 1 s + Exp(3 s) (mean 15/min), each a 0.25-0.45 s sin^2 bump
  through the frontal ``eye`` dipoles, scaled to ``blink_peak`` on the most affected channel of
  the reference type.

Typical levels (per channel type; ``T/m`` values are fT/cm * 1e-13):

========  ===========  ==============  ===========  ==========  ==========
type      brain_rms    sensor /sqrt(Hz) line amp.    drift rms   blink peak
========  ===========  ==============  ===========  ==========  ==========
eeg       10 uV        0.1 uV          5 uV         15 uV       120 uV
mag       250 fT       4 fT            300 fT       500 fT      1.5 pT
grad      (physics)    4 fT/cm         30 fT/cm     20 fT/cm    (physics)
seeg      40 uV        0.2 uV          3 uV         20 uV       15 uV
========  ===========  ==============  ===========  ==========  ==========

Pink noise comes from alternating real poles and zeros spaced a factor 10 apart from 0.02 Hz up
(an analogue prototype mapped with the bilinear transform), which gives a -10 dB/decade power
slope from 0.02 Hz to Nyquist at any sampling rate; scipy has no pink-noise filter design.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
from scipy import signal

from acquisition.channels import ChannelSpec
from acquisition.simulator.events import Event, EventQueue

COMPONENTS = ("brain", "sensor", "drift", "line", "blinks")

_LEVELS = {
    "eeg": dict(brain=10e-6, sensor=0.1e-6, line=5e-6, drift=15e-6, blink=120e-6),
    "mag": dict(brain=250e-15, sensor=4e-15, line=300e-15, drift=500e-15, blink=1.5e-12),
    "grad": dict(brain=None, sensor=4e-13, line=30e-13, drift=20e-13, blink=None),
    "seeg": dict(brain=40e-6, sensor=0.2e-6, line=3e-6, drift=20e-6, blink=15e-6),
}
_ALPHA_GAIN = 4.0  # RMS of an alpha source relative to one background source
_DRIFT_CORNER_HZ = 0.05
_LINE_HARMONICS = (1.0, 0.3, 0.15)
_BLINK_MIN_INTERVAL_S = 1.0
_BLINK_MEAN_EXTRA_S = 3.0
_WARMUP_S = 20.0
#: Band in which the background's RMS defines the SNR.
SNR_BAND = (0.1, 20.0)


def pink_sos(sfreq: float, f_min: float = 0.02) -> np.ndarray:
    """Return second-order sections of a filter whose power response falls as 1/f above f_min."""
    poles, zeros = [], []
    f = f_min
    while f < sfreq / 2.0:
        poles.append(-2.0 * np.pi * f)
        zeros.append(-2.0 * np.pi * f * np.sqrt(10.0))
        f *= 10.0
    z, p, k = signal.bilinear_zpk(np.array(zeros), np.array(poles), 1.0, sfreq)
    sos = signal.zpk2sos(z, p, k)
    _, response = signal.sosfreqz(sos, worN=[sfreq / 4.0], fs=sfreq)
    sos[0, :3] /= np.abs(response[0])  # unit gain at sfreq / 4
    return sos


def band_sos(sfreq: float, band: tuple[float, float] = SNR_BAND) -> np.ndarray:
    """Return the Butterworth (order 2 per edge) band-pass that defines "in band" for the SNR."""
    return signal.butter(2, band, btype="bandpass", fs=sfreq, output="sos")


def _energy(sos_chain: list[np.ndarray], x: np.ndarray) -> float:
    """Energy (sum of squares) of ``x`` filtered through every sos in the chain."""
    for sos in sos_chain:
        x = signal.sosfilt(sos, x)
    return float(np.sum(x**2))


def _impulse(n: int) -> np.ndarray:
    x = np.zeros(n)
    x[0] = 1.0
    return x


class Background:
    """Background generator for one session: call :meth:`render` on consecutive blocks.

    Parameters
    ----------
    channels : ChannelSpec
        The montage (types pick the levels of the table in the module docstring).
    sfreq, line_freq : float
        Sampling rate and power-line frequency (Hz).
    brain_patterns, alpha_patterns, eye_pattern : array
        Fixed-orientation patterns ``(n_channels, n_sources)`` (eye: ``(n_channels,)``).
    seeds : sequence of numpy.random.SeedSequence
        One per component of :data:`COMPONENTS`.
    components : collection of str
        The components to render (the others contribute zeros).
    """

    def __init__(
        self,
        channels: ChannelSpec,
        sfreq: float,
        line_freq: float,
        brain_patterns: np.ndarray,
        alpha_patterns: np.ndarray,
        eye_pattern: np.ndarray,
        seeds: Sequence[np.random.SeedSequence],
        components: Collection[str] = COMPONENTS,
    ) -> None:
        self.sfreq = float(sfreq)
        self.components = frozenset(components)
        rngs = dict(zip(COMPONENTS, (np.random.default_rng(s) for s in seeds)))
        self._rng = rngs
        types = np.array(channels.types)
        level = {
            key: np.array([_LEVELS[t][key] or np.nan for t in types]) for key in _LEVELS["eeg"]
        }
        ref_type = "mag" if "mag" in types else str(types[0])  # the table's reference type
        ref = types == ref_type
        self._pink = pink_sos(self.sfreq)
        self._alpha = signal.butter(2, (8.0, 12.0), btype="bandpass", fs=self.sfreq, output="sos")
        # brain: scale so the broadband RMS over the reference type's channels is the table's
        gain_pink = _energy([self._pink], _impulse(int(60 * self.sfreq)))
        gain_alpha = _energy([self._alpha], _impulse(int(10 * self.sfreq)))
        mixing = np.concatenate([brain_patterns, _ALPHA_GAIN * alpha_patterns], axis=1)
        source_var = np.r_[
            np.full(brain_patterns.shape[1], gain_pink),
            np.full(alpha_patterns.shape[1], gain_alpha),
        ]
        channel_var = (mixing**2) @ source_var
        scale = _LEVELS[ref_type]["brain"] / np.sqrt(channel_var[ref].mean())
        self._brain_mixing = (scale * mixing).T  # (n_sources, n_channels)
        # The projection runs in float32 through einsum rather than BLAS: noise needs no more
        # precision, and multithreaded BLAS on small products stalls when cores are busy.
        self._brain_mixing32 = self._brain_mixing.astype(np.float32)
        self._n_pink, self._n_alpha = brain_patterns.shape[1], alpha_patterns.shape[1]
        self._sensor_std = level["sensor"] * np.sqrt(self.sfreq / 2.0)
        self._drift_pole = np.exp(-2.0 * np.pi * _DRIFT_CORNER_HZ / self.sfreq)
        self._drift_std = level["drift"]
        eye = eye_pattern / np.abs(eye_pattern[ref]).max() * _LEVELS[ref_type]["blink"]
        self._eye = eye[None, :]
        self._line_freqs = [
            h * line_freq
            for h in range(1, len(_LINE_HARMONICS) + 1)
            if h * line_freq < 0.45 * self.sfreq
        ]
        self._init_state(types, level, rngs)

    def _init_state(self, types: np.ndarray, level: dict, rngs: dict) -> None:
        n_channels = types.shape[0]
        n_sources = self._n_pink + self._n_alpha
        warm = rngs["brain"].standard_normal((int(_WARMUP_S * self.sfreq), n_sources))
        zi = np.zeros((self._pink.shape[0], 2, self._n_pink))
        _, self._pink_zi = signal.sosfilt(self._pink, warm[:, : self._n_pink], axis=0, zi=zi)
        zi = np.zeros((self._alpha.shape[0], 2, self._n_alpha))
        _, self._alpha_zi = signal.sosfilt(self._alpha, warm[:, self._n_pink :], axis=0, zi=zi)
        self._drift_state = self._drift_std * rngs["drift"].standard_normal(n_channels)
        line_rng = rngs["line"]
        amplitude = level["line"] * np.exp(0.5 * line_rng.standard_normal(n_channels))
        coeffs = []
        for harmonic in range(len(self._line_freqs)):
            phase = line_rng.uniform(0.0, 2.0 * np.pi, n_channels)
            amp = _LINE_HARMONICS[harmonic] * amplitude
            coeffs += [amp * np.cos(phase), amp * np.sin(phase)]  # of sin(wt), cos(wt)
        self._line_coeffs = np.array(coeffs).reshape(-1, n_channels)
        self._blinks = EventQueue()
        self._next_blink = int(self._blink_interval() * self.sfreq)

    def _blink_interval(self) -> float:
        return _BLINK_MIN_INTERVAL_S + self._rng["blinks"].exponential(_BLINK_MEAN_EXTRA_S)

    def render(self, start: int, n: int) -> np.ndarray:
        """Return the next ``n`` samples (``start`` = absolute index of the first), shape (n, C)."""
        out = np.zeros((n, self._eye.shape[1]))
        if "brain" in self.components:
            n_sources = self._n_pink + self._n_alpha
            white = self._rng["brain"].standard_normal((n, n_sources), dtype=np.float32)
            pink, self._pink_zi = signal.sosfilt(
                self._pink, white[:, : self._n_pink], axis=0, zi=self._pink_zi
            )
            alpha, self._alpha_zi = signal.sosfilt(
                self._alpha, white[:, self._n_pink :], axis=0, zi=self._alpha_zi
            )
            sources = np.concatenate([pink, alpha], axis=1).astype(np.float32)
            out += np.einsum("ts,sc->tc", sources, self._brain_mixing32)
        if "sensor" in self.components:
            white = self._rng["sensor"].standard_normal(out.shape, dtype=np.float32)
            out += self._sensor_std * white
        if "drift" in self.components:
            out += self._render_drift(n)
        if "line" in self.components and self._line_freqs:
            out += self._render_line(start, n)
        if "blinks" in self.components:
            self._schedule_blinks(start + n)
            self._blinks.render(out, start)
        return out

    def _render_drift(self, n: int) -> np.ndarray:
        # The AR(1) drift steps once per rendered block and is interpolated linearly in between:
        # it has no power near the block rate, and this costs one draw per channel per block.
        pole = np.exp(-2.0 * np.pi * _DRIFT_CORNER_HZ * n / self.sfreq)
        step = self._drift_std * np.sqrt(1.0 - pole**2)
        new = pole * self._drift_state + step * self._rng["drift"].standard_normal(
            self._drift_state.shape[0]
        )
        ramp = (np.arange(1, n + 1) / n)[:, None]
        drift = self._drift_state + (new - self._drift_state) * ramp
        self._drift_state = new
        return drift

    def _render_line(self, start: int, n: int) -> np.ndarray:
        index = np.arange(start, start + n, dtype=np.float64)
        basis = []
        for freq in self._line_freqs:
            phase = 2.0 * np.pi * np.mod(index * (freq / self.sfreq), 1.0)
            basis += [np.sin(phase), np.cos(phase)]
        return np.stack(basis, axis=1) @ self._line_coeffs

    def _schedule_blinks(self, until: int) -> None:
        events = []
        while self._next_blink < until:
            duration = self._rng["blinks"].uniform(0.25, 0.45)
            amplitude = self._rng["blinks"].uniform(0.8, 1.2)
            t = np.arange(int(duration * self.sfreq)) / (duration * self.sfreq)
            events.append(
                Event(self._next_blink, (amplitude * np.sin(np.pi * t) ** 2)[:, None], self._eye)
            )
            self._next_blink += int(self._blink_interval() * self.sfreq)
        self._blinks.extend(events)

    def band_variance(self, band: tuple[float, float] = SNR_BAND) -> np.ndarray:
        """Expected per-channel variance of the full background in ``band`` (all components).

        The band is the order-2-per-edge Butterworth band-pass of :func:`band_sos` applied
        causally; each component is filtered white noise (or deterministic), so its in-band
        variance follows from impulse responses rather than from a simulation (the drift's
        as an AR(1) process at the sampling rate, which its block-wise interpolation follows
        closely below 1 Hz).
        """
        bp = band_sos(self.sfreq, band)
        n = int(120 * self.sfreq)
        pulse = _impulse(n)
        gain_pink = _energy([self._pink, bp], pulse)
        gain_alpha = _energy([self._alpha, bp], pulse)
        source_gain = np.r_[np.full(self._n_pink, gain_pink), np.full(self._n_alpha, gain_alpha)]
        variance = source_gain @ self._brain_mixing**2
        variance += self._sensor_std**2 * _energy([bp], pulse)
        innovation_var = self._drift_std**2 * (1.0 - self._drift_pole**2)
        drift_gain = _energy([np.array([[1.0, 0.0, 0.0, 1.0, -self._drift_pole, 0.0]]), bp], pulse)
        variance += innovation_var * drift_gain
        for harmonic, freq in enumerate(self._line_freqs):
            _, response = signal.sosfreqz(bp, worN=[freq], fs=self.sfreq)
            amp_sq = self._line_coeffs[2 * harmonic] ** 2 + self._line_coeffs[2 * harmonic + 1] ** 2
            variance += 0.5 * amp_sq * np.abs(response[0]) ** 2
        t = np.arange(int(0.35 * self.sfreq)) / (0.35 * self.sfreq)
        blink = np.zeros(n)
        blink[: t.shape[0]] = np.sin(np.pi * t) ** 2
        rate = 1.0 / ((_BLINK_MIN_INTERVAL_S + _BLINK_MEAN_EXTRA_S) * self.sfreq)
        variance += rate * _energy([bp], blink) * self._eye[0] ** 2
        return variance
