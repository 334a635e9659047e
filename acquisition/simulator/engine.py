"""One pass through a simulated session: trials scheduled and fixed blocks rendered on demand.

Blocks have a fixed length, so the samples never depend on how a caller cuts the output: any
sequence of :meth:`SessionEngine.read_into` calls gives the same samples as one long call.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from acquisition.simulator.events import EventQueue, Trial
from acquisition.simulator.listening import ListeningTask
from acquisition.simulator.noise import Background
from acquisition.simulator.typing import TypingTask


@dataclass(frozen=True)
class SimulatedChunk:
    """Consecutive samples of a simulated session.

    Parameters
    ----------
    data : array, shape (n_samples, n_channels)
        float32 samples in SI units.
    first_sample : int
        Index of the first sample in the session (0 = the session's first sample).
    markers : list of (int, str)
        ``(sample index, marker)`` of the markers that fall on these samples.
    """

    data: np.ndarray
    first_sample: int
    markers: list[tuple[int, str]]


class SessionEngine:
    """Schedules a task's trials and renders background plus scaled evoked events block by block.

    Parameters
    ----------
    task : TypingTask | ListeningTask
        Fresh task (its random stream at the session start).
    background : Background
        Fresh background generator.
    block : int
        Samples per rendered block.
    evoked_scale : float | None
        Factor of the evoked events; None leaves them out.
    keep_truth : bool
        Keep every scheduled trial in :attr:`trials` (for the ground truth of a recording).
    """

    def __init__(
        self,
        task: TypingTask | ListeningTask,
        background: Background,
        *,
        block: int,
        evoked_scale: float | None,
        keep_truth: bool,
    ) -> None:
        self.task = task
        self.background = background
        self.queue = EventQueue()
        self.evoked_scale = evoked_scale
        self.keep_truth = keep_truth
        self.trials: list[Trial] = []
        self.markers: deque[tuple[int, str]] = deque()
        self.block = block
        self.next_trial = 0
        self.rendered = 0
        self.position = 0
        self.buffer: np.ndarray | None = None

    def _render_block(self) -> np.ndarray:
        first, n = self.rendered, self.block
        while self.next_trial < first + n:
            trial = self.task.trial(self.next_trial)
            self.queue.extend(trial.events)
            self.markers.extend(trial.markers)
            if self.keep_truth:
                self.trials.append(trial)
            self.next_trial = trial.stop
        out = self.background.render(first, n)
        if self.evoked_scale is not None:
            self.queue.render(out, first, self.evoked_scale)
        else:
            self.queue.discard_until(first + n)
        self.rendered += n
        return out.astype(np.float32)

    def read_into(self, out: np.ndarray, progress: bool = False) -> list[tuple[int, str]]:
        """Fill ``out`` with the next samples; return the markers that fall on them."""
        n, filled = out.shape[0], 0
        bar = None
        if progress:
            bar = tqdm(total=n / self.task.sfreq, unit="s", desc="simulating")
        while filled < n:
            if self.buffer is None or self.buffer.shape[0] == 0:
                self.buffer = self._render_block()
                if bar is not None:
                    bar.update(self.block / self.task.sfreq)
            take = min(n - filled, self.buffer.shape[0])
            out[filled : filled + take] = self.buffer[:take]
            self.buffer = self.buffer[take:]
            filled += take
        if bar is not None:
            bar.close()
        stop = self.position + n
        markers = []
        while self.markers and self.markers[0][0] < stop:
            markers.append(self.markers.popleft())
        self.position = stop
        return markers
