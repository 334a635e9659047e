"""Calibration-time curve of the speech decoder for a new simulated subject.

Top-10 retrieval against minutes of calibration for a subject no model has seen (``--subject``,
its own anatomy), trained from scratch vs fine-tuned from a model pretrained on 4 other simulated
subjects (``--pretrain-subjects``; the week-long iEEG work of Evanson et al. 2025 pretrains
across sessions and subjects the same way). Fine-tuning starts from the pretrained weights; the
new subject's own parameters (its subject layer and spatial-attention head) start as the mean of
the pretrained subjects' (:func:`models.training.train_speech`'s ``init``).

Every session plays the shipped speech bundle's session (``speech-meg-small``: simulated
306-channel MEG, magnetometers, its 30-sentence vocabulary and snr), the recipe of
``scripts/make_speech_bundle.py``. The calibration sessions of one subject are nested (one seed:
the first 2 minutes of the 4-minute session are the 2-minute session). Each model is scored on
the same held-out sessions of the new subject (``--seeds``, default 2000-2004, which no training
script uses): each word window's own 3 s audio segment among the session's (``segments``, the
paper's protocol) and the model's candidate words (``candidates``: its words heard in
calibration, so short calibrations also miss words; ``coverage`` says how many).

Prints mean [95 % t interval] over the held-out sessions per minutes and start, and the paired
difference fine-tuned - scratch; writes ``calibration_curve.json`` and ``calibration_curve.png``
to ``--out``. Usage::

    python scripts/bench_speech_calibration.py                    # ~30 min on 2 busy cores
    python scripts/bench_speech_calibration.py --minutes 1 2 --epochs 3 --seeds 2000 2001
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from acquisition.simulator import Simulator
from bci_app.decoders.bundle import load_bundle
from bci_app.speech.evaluate import evaluate_speech_bundle
from bci_app.speech.vocabulary import listening_vocabulary
from bci_app.stats import format_interval, mean_interval
from models.export import quiet_exporter
from models.training import train_speech

STARTS = ("scratch", "pretrained")
SCORES = ("segments_top10", "candidates_top10", "segments_top1", "candidates_top1")
#: Session seeds of the pretraining subjects (training seeds of the project's scripts).
PRETRAIN_SEEDS = (0, 1, 555, 1000)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    p.add_argument("--subject", type=int, default=5, help="the new simulated subject")
    p.add_argument("--pretrain-subjects", type=int, nargs="+", default=[1, 2, 3, 4])
    p.add_argument("--pretrain-seconds", type=float, default=180.0, help="per pretraining subject")
    p.add_argument("--calibration-seed", type=int, default=100, help="new subject's session seed")
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(2000, 2005)))
    p.add_argument("--test-seconds", type=float, default=60.0, help="per held-out session")
    p.add_argument("--epochs", type=int, default=20, help="maximum epochs of every training")
    p.add_argument("--out", type=Path, default=Path("bench-speech-calibration"))
    return p.parse_args(argv)


def _train(recordings, out: Path, subject_ids=None, init=None, epochs: int = 20, export=True):
    started = time.perf_counter()
    with quiet_exporter():
        metrics = train_speech(
            recordings,
            out,
            config="small",
            epochs=epochs,
            seed=0,
            picks=["mag"],
            subject_ids=subject_ids,
            init=init,
            export=export,
            progress=False,
            device="cpu",
        )
    return metrics, time.perf_counter() - started


def _scores(bundle, session) -> dict[str, float]:
    entry = evaluate_speech_bundle(bundle, [session], provider="cpu")["recordings"][0]
    row = {f"{m}_top{k}": entry[m][f"top{k}"] for m in ("candidates", "segments") for k in (1, 10)}
    row["coverage"] = entry["candidates"]["coverage"]
    row["chance_segments_top10"] = entry["segments"]["chance_top10"]
    row["chance_candidates_top10"] = entry["candidates"]["chance_top10"]
    return row


def run(args: argparse.Namespace, tmp: Path) -> dict:
    """Pretrain, then train each (minutes, start) and score it on the held-out sessions."""
    vocabulary = listening_vocabulary()  # the shipped bundle's session
    sim = {"sentences": vocabulary.sentences, "snr": vocabulary.settings.get("snr", 3.0)}
    print(f"Pretraining on subjects {args.pretrain_subjects}", flush=True)
    pretrain = [
        Simulator("meg", "listening", seed=seed, subject=subject, **sim).generate(
            args.pretrain_seconds
        )
        for subject, seed in zip(args.pretrain_subjects, PRETRAIN_SEEDS, strict=False)
    ]
    metrics, seconds = _train(
        pretrain, tmp / "pretrained", args.pretrain_subjects, epochs=args.epochs, export=False
    )
    print(
        f"  {seconds:.0f} s, {metrics['epochs_run']} epochs, validation top-10 "
        f"{metrics['val_top10']:.3f}",
        flush=True,
    )
    del pretrain
    checkpoint = tmp / "pretrained" / "checkpoint.pt"
    new = {"subject": args.subject, **sim}
    sessions = [
        Simulator("meg", "listening", seed=s, **new).generate(args.test_seconds) for s in args.seeds
    ]
    rows, runs = [], []
    for minutes in args.minutes:
        # one seed: the shorter sessions are the start of the longer ones (the simulator is causal)
        part = Simulator("meg", "listening", seed=args.calibration_seed, **new).generate(
            60.0 * minutes
        )
        for start in STARTS:
            out = tmp / f"{minutes:g}-{start}"
            init = checkpoint if start == "pretrained" else None
            metrics, seconds = _train([part], out, init=init, epochs=args.epochs)
            runs.append(
                {"minutes": minutes, "start": start, "seconds": round(seconds, 1)}
                | {"epochs_run": metrics["epochs_run"], "best_epoch": metrics["best_epoch"]}
            )
            print(f"  {minutes:g} min, {start}: {seconds:.0f} s", flush=True)
            bundle = load_bundle(out)
            for seed, session in zip(args.seeds, sessions, strict=True):
                row = {"minutes": minutes, "start": start, "session_seed": seed}
                rows.append(row | _scores(bundle, session))
    return {
        "subject": args.subject,
        "pretrain_subjects": args.pretrain_subjects,
        "pretrain_seconds": args.pretrain_seconds,
        "snr": sim["snr"],
        "vocabulary": vocabulary.label,
        "seeds": args.seeds,
        "test_seconds": args.test_seconds,
        "epochs": args.epochs,
        "runs": runs,
        "rows": rows,
    }


def _column(result: dict, minutes: float, start: str, score: str) -> list[float]:
    return [r[score] for r in result["rows"] if r["minutes"] == minutes and r["start"] == start]


def format_curve(result: dict) -> str:
    """The table: per minutes and start, mean [95 % t interval]; then the paired difference."""
    minutes = sorted({r["minutes"] for r in result["rows"]})
    lines = [
        f"Speech calibration curve, new simulated subject {result['subject']} (MEG, snr "
        f"{result['snr']:g}, {result['vocabulary']}); pretrained on subjects "
        f"{result['pretrain_subjects']} x {result['pretrain_seconds']:g} s; held-out sessions "
        f"{result['seeds']} ({result['test_seconds']:g} s each): mean [95 % t interval] (n)",
    ]
    for score in SCORES[:2]:
        lines.append(f"{score}:")
        for m in minutes:
            for start in STARTS:
                values = _column(result, m, start, score)
                cov = np.mean(_column(result, m, start, "coverage"))
                chance = np.mean(_column(result, m, start, f"chance_{score}"))
                extra = f"  chance {chance:.3f}"
                extra += f", coverage {cov:.2f}" if score.startswith("candidates") else ""
                lines.append(f"  {m:4g} min {start:<10} {format_interval(values)}{extra}")
            diff = np.subtract(*(_column(result, m, s, score) for s in reversed(STARTS)))
            lines.append(f"  {m:4g} min pretrained - scratch (paired): {format_interval(diff)}")
    return "\n".join(lines)


def plot_curve(result: dict, path: Path) -> Path:
    """Top-10 (segments, candidates) against minutes, scratch vs pretrained, 95 % intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = sorted({r["minutes"] for r in result["rows"]})
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharex=True)
    for ax, score in zip(axes, SCORES[:2], strict=True):
        for start, colour in zip(STARTS, ("tab:grey", "tab:blue"), strict=True):
            stats = np.array([mean_interval(_column(result, m, start, score)) for m in minutes])
            yerr = np.abs(stats[:, 1:].T - stats[:, 0])
            ax.errorbar(minutes, stats[:, 0], yerr=yerr, marker="o", capsize=3, color=colour)
            ax.plot([], [], color=colour, marker="o", label=start)
        # the candidate set (words heard in calibration) and so its chance grows with minutes
        chance = [
            np.mean([r[f"chance_{score}"] for r in result["rows"] if r["minutes"] == m])
            for m in minutes
        ]
        ax.plot(minutes, chance, color="k", ls=":", lw=1, label="chance")
        ax.set(xlabel="calibration (minutes)", ylabel="top-10", title=score.split("_")[0])
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"New simulated subject {result['subject']}: from scratch vs pretrained on "
        f"{len(result['pretrain_subjects'])} subjects (mean, 95 % interval, "
        f"n={len(result['seeds'])} held-out sessions)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    """Run the curve, print it, write the JSON and PNG."""
    args = parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-speech-calibration-") as tmp:
        result = run(args, Path(tmp))
    print(format_curve(result))
    (args.out / "calibration_curve.json").write_text(json.dumps(result, indent=1))
    print(f"Wrote {plot_curve(result, args.out / 'calibration_curve.png')}")


if __name__ == "__main__":
    main()
