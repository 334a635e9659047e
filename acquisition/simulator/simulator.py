"""The simulator: synthetic EEG/MEG/sEEG sessions with ground truth, deterministic given a seed.

Data are rendered in fixed blocks of :data:`BLOCK_S` seconds, each the sum of the background
(:mod:`~acquisition.simulator.noise`, with carried filter state) and the task's evoked events
(:mod:`~acquisition.simulator.typing`, :mod:`~acquisition.simulator.listening`) scaled to the
requested SNR. Since the blocks never depend on how the output is cut, :meth:`Simulator.generate`
and any sequence of :meth:`Simulator.next_chunk` calls give bit-identical samples.

Randomness: ``subject`` fixes the anatomy and every key/speech response (sessions of one subject
share them, so a decoder trained on one session applies to another); ``seed`` fixes the session:
sentence order, timing, typos, background noise and artefacts (one random stream per component).

**SNR** (``snr``): ``sqrt(mean over channels of E_c / B_c)``, where ``E_c`` is the mean square of
channel c's evoked (task) signal over the task windows (typing: -0.2..+0.3 s around each key press;
listening: from each sentence's first word onset to its last word's end), measured on the first
:data:`CALIBRATION_TRIALS` trials of the session, and ``B_c`` the expected variance of channel
c's full background (brain, sensor, drift, line, blinks) after a causal 0.1-20 Hz Butterworth
band-pass (order 2 per edge). A per-channel power ratio keeps the definition unit-free across
magnetometers and gradiometers.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

import numpy as np

from acquisition.channels import MODALITY_STREAM_TYPES, ChannelSpec
from acquisition.recording import Marker, Recording
from acquisition.simulator.anatomy import make_anatomy
from acquisition.simulator.engine import SessionEngine, SimulatedChunk
from acquisition.simulator.events import EventQueue, Trial
from acquisition.simulator.forward import leadfield, patterns
from acquisition.simulator.listening import ListeningTask, SpeechResponses
from acquisition.simulator.montages import check_modality, make_channels
from acquisition.simulator.noise import COMPONENTS as NOISE_COMPONENTS
from acquisition.simulator.noise import Background
from acquisition.simulator.sentences import check_split, load_sentences
from acquisition.simulator.speech import AUDIO_SFREQ, resolve_engine
from acquisition.simulator.typing import KeyResponses, TypingTask

#: Default sampling rate per modality (Hz): EEG amplifiers commonly record at 500 Hz.
DEFAULT_SFREQ = {"meg": 1000.0, "ieeg": 1000.0, "eeg": 500.0}
TASKS = ("typing", "listening")
#: Signal components that can be switched on or off.
COMPONENTS = ("evoked", *NOISE_COMPONENTS)
#: SNR of a session when neither ``snr`` nor ``difficulty`` is given.
DEFAULT_SNR = 1.0
#: Named difficulty presets: the SNR per modality. ``paper``: puts the small v1 decoder's conv-only
#: CER on held-out sessions after 20 min of calibration near Brain2Qwerty's (MEG 50 %, EEG 76 %).
#: Measured on 2026-12-05 (new subject 5, 20 min of calibration sentences, 20 epochs, 4 held-out
#: sessions of test sentences, mean [95 % t]): MEG snr 0.12 -> 0.564 [0.504, 0.624], 0.15 -> 0.362
#: [0.310, 0.413], 0.25 -> 0.113 [0.095, 0.132]; EEG snr 0.15 -> 0.741 [0.700, 0.782], 0.2 ->
#: 0.597 [0.543, 0.651], 0.3 -> 0.315 [0.235, 0.395]; the presets interpolate between them.
#: sEEG has no paper figure and takes the MEG value.
DIFFICULTIES: dict[str, dict[str, float]] = {"paper": {"meg": 0.13, "eeg": 0.14, "ieeg": 0.13}}
#: Rendering block (seconds).
BLOCK_S = 0.25
#: Trials whose evoked signal defines the evoked RMS of the SNR.
CALIBRATION_TRIALS = 3
_SEED_SALT = 0x51A7


class Simulator:
    """Synthetic live source: EEG, MEG or sEEG of a typing or listening session.

    Parameters
    ----------
    modality : "meg" | "eeg" | "ieeg"
        306-channel Vectorview-like MEG, 64-channel EEG or 106-contact sEEG.
    task : "typing" | "listening"
        Brain2Qwerty typing or listening to synthesized speech.
    snr : float | None
        Evoked-to-background ratio (module docstring); > 0. None: the ``difficulty`` preset's,
        else :data:`DEFAULT_SNR`.
    seed : int
        Session seed (timing, sentence order, noise).
    subject : int
        Subject number (anatomy and responses).
    sfreq : float | None
        Sampling rate in Hz (>= 100); None for :data:`DEFAULT_SFREQ`.
    line_freq : float
        Power-line frequency (Hz).
    sentences : list of str | path | None
        Sentences to type or hear; None for the bundled bank.
    sentence_split : "all" | "calibration" | "test"
        The fixed part of ``sentences`` to draw from (:mod:`~acquisition.simulator.sentences`):
        ``"calibration"`` for training sessions, ``"test"`` for evaluation sessions, so that no
        test sentence is ever trained on; ``"all"`` (default) for every sentence.
    typo_rate : float
        Typing only: probability that a letter is mistyped as a neighbouring key.
    speech_engine : "auto" | "espeak-ng" | "noise"
        Listening only: audio source (:mod:`~acquisition.simulator.speech`).
    components : collection of str
        Parts to render (:data:`COMPONENTS`); e.g. ``("evoked",)`` for the clean task signal.
    difficulty : str | None
        A named preset of :data:`DIFFICULTIES` (``"paper"``) that sets the SNR of the modality;
        not with ``snr``.

    Attributes
    ----------
    channels : ChannelSpec
        The montage (:func:`~acquisition.simulator.montages.make_channels`).
    sfreq : float
        Sampling rate (Hz).
    evoked_scale : float
        Source strength (A*m per unit response) that realises ``snr``.
    """

    def __init__(
        self,
        modality: str = "meg",
        task: str = "typing",
        *,
        snr: float | None = None,
        seed: int = 0,
        subject: int = 0,
        sfreq: float | None = None,
        line_freq: float = 50.0,
        sentences: Sequence[str] | str | Path | None = None,
        sentence_split: str = "all",
        typo_rate: float = 0.0,
        speech_engine: str = "auto",
        components: Collection[str] = COMPONENTS,
        difficulty: str | None = None,
    ) -> None:
        self.modality = check_modality(modality)
        if task not in TASKS:
            raise ValueError(f"Invalid value for 'task': {task!r}. Use one of {', '.join(TASKS)}.")
        self.task = task
        self.difficulty = difficulty
        snr = _preset_snr(difficulty, self.modality, snr)
        self.snr = _positive(snr, "snr", "e.g. 1.0 (evoked RMS equal to the background RMS)")
        self.line_freq = _positive(line_freq, "line_freq", "50.0 or 60.0")
        self.sfreq = (
            DEFAULT_SFREQ[self.modality] if sfreq is None else _positive(sfreq, "sfreq", "")
        )
        if self.sfreq < 100.0:
            raise ValueError(
                f"Invalid value for 'sfreq': {sfreq!r} Hz; the simulator needs >= 100 Hz for its "
                "0.1-20 Hz responses and 30 Hz auditory envelopes. Use e.g. 500 or 1000."
            )
        self.seed, self.subject = _integer(seed, "seed"), _integer(subject, "subject")
        if not 0.0 <= float(typo_rate) <= 1.0:
            raise ValueError(f"Invalid value for 'typo_rate': {typo_rate!r}; use 0.0 to 1.0.")
        self.typo_rate = float(typo_rate)
        unknown = set(components) - set(COMPONENTS)
        if unknown or isinstance(components, str):
            raise ValueError(
                f"Invalid value for 'components': {components!r}; give a collection of "
                f"{', '.join(COMPONENTS)}."
            )
        self.components = frozenset(components)
        self.sentence_split = check_split(sentence_split)
        self.sentences = load_sentences(sentences, sentence_split)
        self.speech_engine = resolve_engine(speech_engine) if task == "listening" else None
        self.channels: ChannelSpec = make_channels(self.modality)
        self._prepare_sources()
        seeds = np.random.SeedSequence([_SEED_SALT, self.seed]).spawn(1 + len(NOISE_COMPONENTS))
        self._task_seed, self._noise_seeds = seeds[0], seeds[1:]
        self.evoked_scale = self._calibrate()
        self._engine = self._new_engine(keep_truth=False)

    def _prepare_sources(self) -> None:
        anatomy = make_anatomy(self.subject)
        names = list(anatomy.groups)
        sizes = [anatomy[name].n_sources for name in names]
        free = leadfield(self.modality, np.concatenate([anatomy[n].positions for n in names]))
        split = dict(zip(names, np.split(free, np.cumsum(sizes)[:-1], axis=1)))
        self._patterns = {n: patterns(split[n], anatomy[n].orientations) for n in names}
        if self.task == "typing":
            self._responses = KeyResponses(
                anatomy, split["finger"], self._patterns["letter"], self.sfreq
            )
        else:
            self._responses = SpeechResponses(self._patterns["auditory"], self.sfreq)

    def _make_task(self) -> TypingTask | ListeningTask:
        rng = np.random.default_rng(self._task_seed)
        if self.task == "typing":
            return TypingTask(self.sentences, self._responses, rng, self.typo_rate)
        return ListeningTask(self.sentences, self._responses, rng, self.speech_engine)

    def _make_background(self, components: Collection[str]) -> Background:
        return Background(
            self.channels,
            self.sfreq,
            self.line_freq,
            self._patterns["background"],
            self._patterns["alpha"],
            self._patterns["eye"].sum(axis=1),
            self._noise_seeds,
            components=[c for c in NOISE_COMPONENTS if c in components],
        )

    def _new_engine(self, keep_truth: bool) -> SessionEngine:
        return SessionEngine(
            self._make_task(),
            self._make_background(self.components),
            block=max(1, round(BLOCK_S * self.sfreq)),
            evoked_scale=self.evoked_scale if "evoked" in self.components else None,
            keep_truth=keep_truth,
        )

    def _calibrate(self) -> float:
        """Return the evoked scale that makes the session's SNR equal ``snr``."""
        band_var = self._make_background(()).band_variance()
        task, queue, start, spans = self._make_task(), EventQueue(), 0, []
        for _ in range(CALIBRATION_TRIALS):
            trial = task.trial(start)
            queue.extend(trial.events)
            spans += trial.spans
            start = trial.stop
        mask = np.zeros(start, dtype=bool)
        for first, last in spans:
            mask[max(first, 0) : last] = True
        block = round(BLOCK_S * self.sfreq)
        power = np.zeros(self.channels.n_channels)
        for first in range(0, start, block):
            out = np.zeros((min(block, start - first), self.channels.n_channels))
            queue.render(out, first)
            power += np.sum(out[mask[first : first + out.shape[0]]] ** 2, axis=0)
        evoked_power = power / max(int(mask.sum()), 1)
        ratio = float(np.mean(evoked_power / band_var))
        if not ratio > 0:
            raise RuntimeError("The simulated task produced no evoked signal to scale.")
        return self.snr / np.sqrt(ratio)

    # ------------------------------------------------------------------ public API
    @property
    def stream_type(self) -> str:
        """LSL stream type of this modality (``EEG``, ``MEG`` or ``iEEG``)."""
        return MODALITY_STREAM_TYPES[self.modality]

    def generate(self, duration_s: float, *, progress: bool = False) -> Recording:
        """Simulate a session from its start and return it as a :class:`Recording`.

        Parameters
        ----------
        duration_s : float
            Length in seconds (> 0).
        progress : bool
            Show a tqdm progress bar.

        Returns
        -------
        recording : Recording
            float32 data in SI units, timestamps ``i / sfreq``, markers, and ``meta`` with
            ``"simulator"`` (parameters) and ``"ground_truth"`` (:meth:`ground_truth`).
        """
        n_samples = round(_positive(duration_s, "duration_s", "e.g. 60.0") * self.sfreq)
        engine = self._new_engine(keep_truth=True)
        data = np.empty((n_samples, self.channels.n_channels), dtype=np.float32)
        markers = engine.read_into(data, progress=progress)
        return Recording(
            data=data,
            timestamps=np.arange(n_samples) / self.sfreq,
            sfreq=self.sfreq,
            channels=self.channels,
            markers=[Marker(sample / self.sfreq, value) for sample, value in markers],
            name=f"bci-sim-{self.modality}",
            source_id=f"bci-sim-{self.modality}-{self.task}-{self.seed}",
            meta={
                "stream_type": self.stream_type,
                "simulator": self.parameters(),
                "ground_truth": self.ground_truth(engine.trials, n_samples),
            },
        )

    def parameters(self) -> dict:
        """Return the simulator's parameters (JSON-serialisable)."""
        return {
            "modality": self.modality,
            "task": self.task,
            "snr": self.snr,
            "difficulty": self.difficulty,
            "seed": self.seed,
            "subject": self.subject,
            "sfreq": self.sfreq,
            "line_freq": self.line_freq,
            "typo_rate": self.typo_rate,
            "sentence_split": self.sentence_split,
            "speech_engine": self.speech_engine,
            "components": sorted(self.components),
            "evoked_scale": self.evoked_scale,
        }

    def ground_truth(self, trials: Sequence[Trial], n_samples: int) -> dict:
        """Return the ground truth of ``trials`` cut at ``n_samples`` (times in seconds).

        Typing: one entry per sentence with ``text``, ``typed``, ``onset`` (display),
        ``typing_onset``, ``offset`` (``sentence_end`` marker), ``keys`` (``char``, ``time``)
        and ``complete``. Listening: ``text``, ``onset``, ``offset``, ``words`` (``word``,
        ``onset``, ``offset``), ``audio`` (float32 at ``audio_sfreq``, from the onset to the
        offset) and ``complete``. Only sentences shown/heard before the end are listed, each
        with the keys/words that fall before it.
        """
        duration = n_samples / self.sfreq
        sentences = []
        for trial in trials:
            if not trial.markers or trial.markers[0][0] >= n_samples:
                continue
            entry = dict(trial.truth)
            item = "keys" if self.task == "typing" else "words"
            field = "time" if item == "keys" else "onset"
            entry[item] = [x for x in entry[item] if x[field] < duration]
            entry["complete"] = entry["offset"] < duration
            sentences.append(entry)
        truth = {"task": self.task, "time_origin": "first sample", "sentences": sentences}
        if self.task == "listening":
            truth.update(audio_sfreq=AUDIO_SFREQ, speech_engine=self.speech_engine)
        return truth

    def next_chunk(self, n_samples: int) -> SimulatedChunk:
        """Return the next ``n_samples`` of the live session (continuing from the last call)."""
        n = _integer(n_samples, "n_samples")
        if n < 1:
            raise ValueError(f"Invalid value for 'n_samples': {n_samples!r}; it must be >= 1.")
        first = self._engine.position
        data = np.empty((n, self.channels.n_channels), dtype=np.float32)
        markers = self._engine.read_into(data)
        return SimulatedChunk(data, first, markers)

    def iter_chunks(
        self, chunk_s: float, duration_s: float | None = None
    ) -> Iterator[SimulatedChunk]:
        """Yield consecutive chunks of ``chunk_s`` seconds (the last may be shorter).

        Continues the live session like :meth:`next_chunk`; stops after ``duration_s`` seconds
        (counted from the first chunk yielded here) or never when None.
        """
        size = max(1, round(_positive(chunk_s, "chunk_s", "e.g. 0.02") * self.sfreq))
        remaining = None if duration_s is None else round(duration_s * self.sfreq)
        while remaining is None or remaining > 0:
            n = size if remaining is None else min(size, remaining)
            yield self.next_chunk(n)
            if remaining is not None:
                remaining -= n

    def reset(self) -> None:
        """Restart the live session from its first sample (same samples as before)."""
        self._engine = self._new_engine(keep_truth=False)

    @property
    def position(self) -> int:
        """Index of the next sample :meth:`next_chunk` returns."""
        return self._engine.position

    def __repr__(self) -> str:
        return (
            f"<Simulator {self.modality} {self.task} {self.channels.n_channels} ch "
            f"{self.sfreq:g} Hz snr={self.snr:g} seed={self.seed} subject={self.subject}>"
        )


def _preset_snr(difficulty: str | None, modality: str, snr: float | None) -> float:
    """The SNR a session runs at: ``snr``, else the ``difficulty`` preset's, else the default."""
    if difficulty is None:
        return DEFAULT_SNR if snr is None else snr
    if difficulty not in DIFFICULTIES:
        raise ValueError(
            f"Invalid value for 'difficulty': {difficulty!r}; use one of "
            f"{', '.join(DIFFICULTIES)} (or give snr instead)."
        )
    preset = DIFFICULTIES[difficulty][modality]
    if snr is not None and snr != preset:  # the same value: parameters() read back
        raise ValueError(
            f"Invalid arguments: snr={snr!r} and difficulty={difficulty!r} both set the SNR; "
            "give one of them."
        )
    return preset


def _positive(value: float, name: str, hint: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not (np.isfinite(number) and number > 0):
        raise ValueError(
            f"Invalid value for {name!r}: {value!r}; it must be a finite number > 0"
            + (f" ({hint})." if hint else ".")
        )
    return number


def _integer(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"Invalid value for {name!r}: {value!r}; it must be an int >= 0.")
    return int(value)
