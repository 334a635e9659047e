"""Benchmark of the simulator: generation speed and how decodable the keys are.

Run ``python -m scripts.bench_simulator [--duration S] [--decode-duration S]``. It prints

- generation speed per modality and task as a multiple of real time (wall and CPU time of one
  :meth:`Simulator.generate` call in this process; CPU time counts every thread);
- nearest-centroid accuracy of the 10 most frequent typed characters from keystroke-locked
  windows (0.1-20 Hz, 50 Hz, -0.2..+0.3 s, baseline, robust scaling, clamp +-5; even keys train,
  odd keys test) per modality and SNR, against chance: a sanity check that key information grows
  with SNR and is easier to read from MEG than EEG, not a decoder.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import signal

from acquisition.recording import Recording, parse_marker
from acquisition.simulator.simulator import Simulator


def generation_speed(modality: str, task: str, duration_s: float) -> tuple[float, float]:
    """Return (wall, CPU) speed of generating ``duration_s`` seconds, as multiples of real time."""
    sim = Simulator(modality, task, seed=0)
    sim.generate(2.0)  # warm caches (speech synthesis, forward model)
    wall, cpu = time.perf_counter(), time.process_time()
    sim.generate(duration_s)
    return duration_s / (time.perf_counter() - wall), duration_s / (time.process_time() - cpu)


def keystroke_windows(recording: Recording) -> tuple[np.ndarray, np.ndarray]:
    """Return flattened Brain2Qwerty-style windows around key markers and their characters."""
    sos = signal.butter(2, (0.1, 20.0), "bandpass", fs=recording.sfreq, output="sos")
    data = signal.sosfilt(sos, recording.data.astype(np.float64), axis=0)
    data = signal.resample_poly(data, 50, round(recording.sfreq), axis=0)
    q25, q50, q75 = np.percentile(data, [25, 50, 75], axis=0)
    data = (data - q50) / (q75 - q25)
    windows, labels = [], []
    for marker in recording.markers_of("key"):
        i = round(marker.timestamp * 50)
        if i >= 10 and i + 15 <= data.shape[0]:
            window = data[i - 10 : i + 15]
            windows.append(np.clip(window - window[:10].mean(axis=0), -5, 5).ravel())
            labels.append(parse_marker(marker.value)[1].lower())
    return np.array(windows), np.array(labels)


def nearest_centroid_accuracy(
    windows: np.ndarray, labels: np.ndarray, n_classes: int = 10
) -> tuple[float, float]:
    """Return (accuracy, chance) of a nearest-centroid classifier on the most frequent classes."""
    chars, counts = np.unique(labels, return_counts=True)
    classes = chars[np.argsort(-counts, kind="stable")[:n_classes]]
    keep = np.isin(labels, classes)
    windows, labels = windows[keep], labels[keep]
    train = np.arange(labels.shape[0]) % 2 == 0
    centroids = np.stack([windows[train & (labels == c)].mean(axis=0) for c in classes])
    distances = ((windows[~train, None, :] - centroids[None]) ** 2).sum(axis=-1)
    accuracy = float(np.mean(classes[distances.argmin(axis=1)] == labels[~train]))
    return accuracy, 1.0 / len(classes)


def main(argv: list[str] | None = None) -> None:
    """Print the speed and decodability tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per speed run")
    parser.add_argument("--decode-duration", type=float, default=300.0, help="typing session s")
    parser.add_argument("--snr", type=float, nargs="+", default=[0.3, 1.0, 3.0])
    args = parser.parse_args(argv)
    print(f"generation speed ({args.duration:g} s per run), x real time:")
    for task in ("typing", "listening"):
        for modality in ("meg", "eeg", "ieeg"):
            wall, cpu = generation_speed(modality, task, args.duration)
            print(f"  {modality:5s} {task:9s} wall x{wall:6.1f}   cpu x{cpu:6.1f}")
    print(f"nearest-centroid key accuracy, top-10 characters, {args.decode_duration:g} s typing:")
    for modality in ("meg", "eeg", "ieeg"):
        cells = []
        for snr in args.snr:
            recording = Simulator(modality, "typing", snr=snr, seed=1).generate(
                args.decode_duration
            )
            accuracy, chance = nearest_centroid_accuracy(*keystroke_windows(recording))
            cells.append(f"snr {snr:g}: {accuracy:.2f}")
        print(f"  {modality:5s} " + "   ".join(cells) + f"   (chance {chance:.2f})")


if __name__ == "__main__":
    main()
