r"""The calibration curve: CER against minutes of calibration, from scratch vs fine-tuned.

    .venv/bin/python scripts/bench_calibration.py                  # the full curve (hours on CPU)
    .venv/bin/python scripts/bench_calibration.py --quick          # a short version (minutes)
    .venv/bin/python scripts/bench_calibration.py --minutes 2 5 10 --pretrain-minutes 4 \\
        --epochs 12 --seeds 2000 2001 2002 2003 --png docs/calibration_curve.png --json out.json

What a new user pays is calibration time. For a new simulated subject (``--subject``, its own
anatomy and key responses) at the ``--difficulty`` preset (default ``paper``: where conv-only CER
after 20 min of MEG lands near Brain2Qwerty's), the small v1 decoder is trained on the first
``M`` minutes of one calibration session (``M`` in ``--minutes``; the sessions are prefixes of
one another) in two ways:

- **scratch**: from a random initialisation;
- **pretrained**: fine-tuned (the ``init`` setting, ``bci-app train typing --init``) from a
  decoder trained first on ``--pretrain-minutes`` of each of ``--pretrain-subjects`` (one subject
  layer and spatial-attention head each; the new subject's start from their mean).

Every bundle is scored on the same held-out sessions of the new subject (``--seeds``, default
2000-2007, which no training script uses), typing sentences of the test part of the bank (no
calibration session types them): the mean CER over sessions with its 95 % t interval
(:mod:`bci_app.stats`) for conv only, + transformer and + LM. The minutes each way needs to
reach ``--target`` CER (+ LM) are read off the curve by linear interpolation between measured
points (None when the curve never gets there). Writes a JSON of every figure and a PNG.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bci_app.stats import mean_interval

#: Calibration sessions use training seeds; the held-out sessions, seeds no training script uses.
TRAIN_SEED = 100
HELD_OUT_SEEDS = tuple(range(2000, 2008))
VARIANTS = ("conv", "transformer", "lm")
LABELS = {"conv": "conv only", "transformer": "+ transformer", "lm": "+ LM"}
WAYS = ("scratch", "pretrained")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--modality", default="meg", choices=["meg", "eeg"])
    p.add_argument("--difficulty", default="paper", help="simulator preset (or give --snr)")
    p.add_argument("--snr", type=float, help="simulator SNR instead of --difficulty")
    p.add_argument("--subject", type=int, default=5, help="the new simulated subject")
    p.add_argument("--pretrain-subjects", type=int, nargs="+", default=[1, 2, 3, 4])
    p.add_argument("--pretrain-minutes", type=float, default=20.0, help="per pretraining subject")
    p.add_argument("--minutes", type=float, nargs="+", default=[2.0, 5.0, 10.0, 20.0])
    p.add_argument("--epochs", type=int, default=25, help="epochs of every run")
    p.add_argument("--seeds", type=int, nargs="+", default=list(HELD_OUT_SEEDS))
    p.add_argument("--test-seconds", type=float, default=90.0, help="per held-out session")
    p.add_argument("--target", type=float, default=0.3, help="CER (+ LM) to reach")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--json", type=Path, help="write every figure to this JSON file")
    p.add_argument("--png", type=Path, help="draw the curve to this PNG file")
    p.add_argument("--workdir", type=Path, help="keep the bundles here (default: a temp folder)")
    p.add_argument("--quick", action="store_true", help="a short version (minutes)")
    args = p.parse_args(argv)
    if args.quick:
        args.pretrain_subjects, args.pretrain_minutes = args.pretrain_subjects[:2], 1.5
        args.minutes, args.epochs = [1.0, 2.0], 3
        args.seeds, args.test_seconds = args.seeds[:2], 40.0
    if args.snr is not None:
        args.difficulty = None
    return args


def simulate(args: argparse.Namespace, subject: int, seed: int, seconds: float, split: str):
    """One simulated typing session of ``subject`` at the bench's difficulty."""
    from acquisition.simulator import Simulator

    level = {"snr": args.snr} if args.difficulty is None else {"difficulty": args.difficulty}
    sim = Simulator(
        args.modality, "typing", seed=seed, subject=subject, sentence_split=split, **level
    )
    return sim.generate(seconds)


def train(recordings, labels, out: Path, args, init: Path | None = None, export=True) -> dict:
    """Train the small v1 decoder (fine-tuned from ``init`` when given)."""
    from models.training import train_typing

    return train_typing(
        recordings,
        out,
        config="small",
        arch="v1",
        epochs=args.epochs,
        subject_ids=labels,
        init=init,
        export=export,
        progress=False,
        device="cpu",
    )


def score(bundle: Path, sessions) -> dict:
    """Mean CER per variant over the held-out sessions, with its 95 % t interval."""
    from bci_app.typing.evaluate import evaluate_bundle

    report = evaluate_bundle(bundle, sessions, provider="cpu")
    if report["overlap"]["n_seen"]:
        raise RuntimeError(f"held-out sentences were trained on: {report['overlap']['seen']}")
    out = {}
    for variant in VARIANTS:
        values = report["sessions"]["cer"][variant]["values"]
        mean, low, high = mean_interval(values)
        out[variant] = {"mean": mean, "low": low, "high": high, "values": values}
    return out


def minutes_to_reach(minutes: list[float], cers: list[float], target: float) -> float | None:
    """The first minutes at which the curve crosses ``target`` (linear between points)."""
    if cers[0] <= target:
        return minutes[0]
    for (m0, c0), (m1, c1) in zip(zip(minutes, cers), zip(minutes[1:], cers[1:]), strict=False):
        if c1 <= target < c0:
            return m0 + (c0 - target) / (c0 - c1) * (m1 - m0)
    return None


def run(args: argparse.Namespace, workdir: Path) -> dict:
    """Pretrain, then train both ways per calibration length; score everything."""
    started = time.perf_counter()
    log = lambda message: print(f"[calibration] {message}", file=sys.stderr, flush=True)  # noqa: E731
    seconds = args.pretrain_minutes * 60.0
    log(f"pretraining on subjects {args.pretrain_subjects}, {args.pretrain_minutes:g} min each")
    pretrain = [
        simulate(args, subject, TRAIN_SEED, seconds, "calibration")
        for subject in args.pretrain_subjects
    ]
    labels = [str(s) for s in args.pretrain_subjects]
    pre = train(pretrain, labels, workdir / "pretrained", args, export=False)
    checkpoint = Path(pre["paths"]["checkpoint"])
    del pretrain
    sessions = [
        simulate(args, args.subject, seed, args.test_seconds, "test") for seed in args.seeds
    ]
    rows = []
    for minutes in sorted(args.minutes):
        calibration = simulate(args, args.subject, TRAIN_SEED, minutes * 60.0, "calibration")
        for way in WAYS:
            log(f"{minutes:g} min, {way}")
            out = workdir / f"{way}-{minutes:g}min"
            tic = time.perf_counter()
            init = checkpoint if way == "pretrained" else None
            metrics = train([calibration], [str(args.subject)], out, args, init=init)
            row = {
                "minutes": minutes,
                "way": way,
                "train_keys": metrics["n_windows"],
                "epochs_run": metrics["epochs_run"],
                "best_epoch": metrics["best_epoch"],
                "train_s": round(time.perf_counter() - tic, 1),
                "cer": score(out, sessions),
            }
            log(f"  CER + LM {row['cer']['lm']['mean']:.3f}, conv {row['cer']['conv']['mean']:.3f}")
            rows.append(row)
    reach = {}
    for way in WAYS:
        curve = [r for r in rows if r["way"] == way]
        reach[way] = minutes_to_reach(
            [r["minutes"] for r in curve], [r["cer"]["lm"]["mean"] for r in curve], args.target
        )
    return {
        "settings": {
            "modality": args.modality,
            "difficulty": args.difficulty,
            "snr": sessions[0].meta["simulator"]["snr"],
            "subject": args.subject,
            "pretrain_subjects": args.pretrain_subjects,
            "pretrain_minutes": args.pretrain_minutes,
            "pretrain_val_cer": pre["val_cer"],
            "epochs": args.epochs,
            "config": "small",
            "arch": "v1",
            "held_out_seeds": args.seeds,
            "test_seconds": args.test_seconds,
            "test_sentences": "test part of the bank (none in any calibration session)",
            "target": args.target,
        },
        "rows": rows,
        "minutes_to_target": reach,
        "seconds": round(time.perf_counter() - started, 1),
    }


def format_results(result: dict) -> str:
    """The curve as a table, then the minutes each way needs to reach the target."""
    s = result["settings"]
    level = f"difficulty {s['difficulty']}" if s["difficulty"] else "custom snr"
    lines = [
        f"Calibration curve: {s['modality'].upper()} subject {s['subject']}, {level} "
        f"(snr {s['snr']:g}), small v1, {s['epochs']} epochs; pretrained on subjects "
        f"{s['pretrain_subjects']} x {s['pretrain_minutes']:g} min; CER mean [95 % t interval] "
        f"over {len(s['held_out_seeds'])} held-out sessions of {s['test_seconds']:g} s",
        f"{'minutes':>7} {'way':<10} " + " ".join(f"{LABELS[v]:>26}" for v in VARIANTS),
    ]
    for row in result["rows"]:
        cells = []
        for v in VARIANTS:
            c = row["cer"][v]
            cells.append(f"{c['mean']:.3f} [{c['low']:.3f}, {c['high']:.3f}]")
        lines.append(
            f"{row['minutes']:>7g} {row['way']:<10} " + " ".join(f"{x:>26}" for x in cells)
        )
    for way, minutes in result["minutes_to_target"].items():
        shown = "not reached" if minutes is None else f"{minutes:.1f} min"
        lines.append(f"minutes to CER (+ LM) {s['target']:g}, {way}: {shown}")
    lines.append(f"({result['seconds']:.0f} s in all)")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> Path:
    """CER (+ LM, and conv only dashed) against minutes, both ways, with 95 % intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["settings"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for way, color in zip(WAYS, ("#546e7a", "#c62828"), strict=True):
        curve = [r for r in result["rows"] if r["way"] == way]
        minutes = np.array([r["minutes"] for r in curve])
        for variant, style in (("lm", "-o"), ("conv", "--")):
            mean = np.array([r["cer"][variant]["mean"] for r in curve])
            low = np.array([r["cer"][variant]["low"] for r in curve])
            high = np.array([r["cer"][variant]["high"] for r in curve])
            label = f"{way} ({LABELS[variant]})"
            ax.plot(
                minutes, mean, style, color=color, label=label, alpha=1 if variant == "lm" else 0.6
            )
            if variant == "lm" and np.all(np.isfinite(low)):
                ax.fill_between(minutes, low, high, color=color, alpha=0.15, linewidth=0)
    ax.axhline(s["target"], color="0.5", linewidth=0.8, linestyle=":")
    ax.set_xlabel("calibration (minutes)")
    ax.set_ylabel("CER on held-out sessions")
    ax.set_ylim(0, 1.05)
    ax.set_xticks(sorted({r["minutes"] for r in result["rows"]}))
    n = len(s["held_out_seeds"])
    level = s["difficulty"] or f"snr {s['snr']:g}"
    ax.set_title(
        f"New subject ({s['modality'].upper()}, {level}): scratch vs pretrained on "
        f"{len(s['pretrain_subjects'])} subjects\nmean and 95 % t interval over {n} sessions",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    """Run the curve; print the table; write the JSON and PNG asked for."""
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        result = run(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="bci-bench-calibration-") as tmp:
            result = run(args, Path(tmp))
    print(format_results(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2, allow_nan=True))
    if args.png is not None:
        plot(result, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
