"""Benchmark the Brain2Qwerty typing decoder on simulated sessions: CER ablation and latency.

    .venv/bin/python scripts/bench_typing.py            # full grid (about an hour on 2 CPU cores)
    .venv/bin/python scripts/bench_typing.py --quick    # MEG and EEG, one short condition
    .venv/bin/python scripts/bench_typing.py --json
    .venv/bin/python scripts/bench_typing.py --compare OLD_BUNDLE NEW_BUNDLE   # before/after
    .venv/bin/python scripts/bench_typing.py --ablation --quick   # sentence transformer variants

For every condition (modality x calibration length x SNR) a calibration session is simulated
(subject 0, seed 100, sentences of the bank's calibration part), the ``small`` v1 decoder is
trained on it with ``models.training.train_typing`` (split by sentence, early stopping), exported
to a bundle, and evaluated with :func:`bci_app.typing.evaluate.evaluate_bundle` on held-out
sessions of the same simulated subject (``--seeds``, default 2000-2007, typing sentences of the
bank's test part, so none was trained on; the bench checks it): CER of conv only / + transformer
/ + LM, as in the paper's ablation table, as the mean over sessions with its 95 % t interval.

Latency (CPU, onnxruntime threads as the live path sets them, torch with as many threads): the
per-keystroke graphs of the first trained model, onnxruntime vs torch eager on the same input
(p50/p99 and the ratio of p50s; torch runs the exported module, whose spatial attention is
precomputed, and, for reference, the training module, which recomputes it), and the decoder
step (both graphs + one LM beam step, as ``KeystrokeDecoder.add_window`` does live) over the
held-out sessions. Numbers come from one run on a shared machine: compare ratios, not absolute
times across runs.

``--compare`` trains nothing: it scores existing typing bundles on the same held-out simulated
sessions (``--seeds``, default 2000-2007, which no training script uses; the simulator settings
come from the first bundle's training provenance) and prints, per bundle, the mean CER of each
variant over the sessions with its 95 % t interval, then the paired difference of each bundle
from the first (same sessions, so the noise of the sessions cancels).

``--ablation`` measures what the sentence transformer's design brings, per condition (the grid's
or ``--quick``'s): the ``small`` v1 trained with the paper's transformer over embeddings (``old
transformer``), with the residual transformer over the conv posteriors trained jointly
(``residual``, the default since issue 14) and with that transformer then pretrained on English
text and fine-tuned (``residual + text``, ``--text-pretrain`` steps); both residual runs end with
the correction's gate fitted on the validation sentences. Each is scored on the held-out
sessions of ``--seeds`` (2000-2007): conv only / + transformer / + LM, mean [95 % t interval]
over the sessions (:func:`bci_app.stats.format_interval`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bci_app.stats import format_interval, mean_interval

TRAIN_SEED = 100
#: Held-out sessions of ``--compare``: seeds no training script uses (they use 0, 1, 100, 555,
#: 1000, 1001).
COMPARE_SEEDS = tuple(range(2000, 2008))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--modalities", nargs="+", default=["meg", "eeg"], choices=["meg", "eeg"])
    p.add_argument("--durations", nargs="+", type=float, default=[300.0, 600.0])
    p.add_argument("--snrs", nargs="+", type=float, default=[0.5, 1.0])
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--test-duration", type=float, default=120.0, help="seconds per test session")
    p.add_argument("--repeats", type=int, default=300, help="runs per latency measurement")
    p.add_argument("--quick", action="store_true", help="one short condition per modality")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--compare", nargs="+", type=Path, metavar="BUNDLE", help="score bundles")
    p.add_argument("--seeds", nargs="+", type=int, default=list(COMPARE_SEEDS))
    p.add_argument("--ablation", action="store_true", help="sentence transformer variants")
    p.add_argument(
        "--text-pretrain",
        type=int,
        default=None,
        help="text pretraining steps of the residual transformer (default: train typing's)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.durations, args.snrs, args.epochs = [240.0], [2.0], 8
        args.test_duration, args.repeats = 60.0, 100
    return args


VARIANTS = ("conv", "transformer", "lm")


def simulate(modality: str, snr: float, seed: int, seconds: float, split: str):
    """A simulated typing session of subject 0 on one part of the sentence bank."""
    from acquisition.simulator import Simulator

    sim = Simulator(modality, "typing", snr=snr, seed=seed, subject=0, sentence_split=split)
    return sim.generate(seconds)


def held_out(report: dict) -> dict:
    """``report``, after checking that none of its sentences was trained on."""
    overlap = report["overlap"]
    if not overlap["known"] or overlap["n_seen"]:
        raise RuntimeError(
            f"held-out sentences were trained on (or unknown): {overlap['seen'] or overlap}"
        )
    return report


def run_condition(modality, duration, snr, args, workdir: Path) -> dict:
    """Simulate, train, export and evaluate one condition; return its row."""
    from bci_app.typing.evaluate import evaluate_bundle
    from models.training import train_typing

    tag = f"{modality}-{duration:g}s-snr{snr:g}"
    calibration = simulate(modality, snr, TRAIN_SEED, duration, "calibration")
    started = time.perf_counter()
    metrics = train_typing(
        [calibration],
        workdir / tag,
        config="small",
        arch="v1",
        epochs=args.epochs,
        text_pretrain=args.text_pretrain,
        name=tag,
        progress=False,
    )
    train_s = time.perf_counter() - started
    sessions = [simulate(modality, snr, seed, args.test_duration, "test") for seed in args.seeds]
    report = held_out(evaluate_bundle(workdir / tag, sessions, provider="cpu"))
    overall = report["overall"]
    return {
        "modality": modality,
        "calibration_s": duration,
        "snr": snr,
        "train_keys": metrics["n_windows"],
        "epochs_run": metrics["epochs_run"],
        "train_s": round(train_s, 1),
        "test_keys": overall["n_keys"],
        "test_sentences": overall["n_sentences"],
        "cer": overall["cer"],
        "cer_sessions": {v: report["sessions"]["cer"][v]["values"] for v in VARIANTS},
        "wer": overall["wer"],
        "top1": overall["topk"]["transformer"]["top1"],
        "top5": overall["topk"]["transformer"]["top5"],
        # what the validation sentences chose: the transformer's gate and the LM's weight
        "gate": (metrics.get("sentence_gate") or {}).get("gate"),
        "lm_weight": (metrics.get("lm_fit") or {}).get("weight"),
        "decoder_step_ms": report["latency_ms"],
        "bundle": str(workdir / tag),
        "checkpoint": metrics["paths"]["checkpoint"],
    }


#: The sentence transformers ``--ablation`` compares: (model config changes, text_pretrain).
ABLATION = {
    "old transformer": ({"sentence": "plain"}, 0),
    "residual": ({"sentence": "residual"}, 0),
    "residual + text": ({"sentence": "residual"}, None),  # None: --text-pretrain steps
}


def ablation_condition(modality, duration, snr, args, workdir: Path) -> dict:
    """Train the old and the residual transformers on one calibration; score the three variants.

    Each residual run ends with the gate fitted on the validation sentences
    (:func:`models.typing.pretrain.fit_gate`); the gate and the text stage's figures are
    returned under ``sentence_stage``.
    """
    from models.training import train_typing
    from models.typing.config import Brain2QwertyV1Config

    tag = f"{modality}-{duration:g}s-snr{snr:g}"
    calibration = simulate(modality, snr, TRAIN_SEED, duration, "calibration")
    bundles, stages = {}, {}
    for label, (changes, pretrain) in ABLATION.items():
        config = {**Brain2QwertyV1Config.named("small").to_dict(), **changes}
        out = workdir / f"{tag}-{label.replace(' ', '')}"
        print(f"[ablation] {tag}: training '{label}'", file=sys.stderr, flush=True)
        metrics = train_typing(
            [calibration],
            out,
            config=config,
            arch="v1",
            epochs=args.epochs,
            text_pretrain=args.text_pretrain if pretrain is None else pretrain,
            name=f"{tag}-{label}",
            progress=False,
        )
        bundles[label] = out
        stages[label] = {
            key: metrics[key] for key in ("sentence_stage", "sentence_gate") if key in metrics
        }
        print(f"[ablation] {label}: {stages[label]}", file=sys.stderr, flush=True)
    paths = [bundles[label] for label in ABLATION if label in bundles]
    result = compare_bundles(paths, args.seeds, args.test_duration)
    cer = {label: result["cer"][str(bundles[label])] for label in ABLATION if label in bundles}
    return {
        "modality": modality,
        "calibration_s": duration,
        "snr": snr,
        "seeds": list(args.seeds),
        "test_seconds": args.test_duration,
        "cer": cer,
        "sentence_stage": stages,
    }


def format_ablation(rows: list[dict]) -> str:
    """One line per condition and variant: conv only / + transformer / + LM with intervals."""
    first = rows[0]
    lines = [
        f"CER on held-out simulated sessions (seeds {first['seeds'][0]}-{first['seeds'][-1]}, "
        f"{first['test_seconds']:g} s each): mean [95 % t interval] (n sessions)",
        f"{'condition':<22} {'sentence transformer':<18} {'conv only':>28} {'+ transformer':>28} "
        f"{'+ LM':>28}",
    ]
    for row in rows:
        tag = f"{row['modality']} {row['calibration_s']:g} s snr {row['snr']:g}"
        for label, cer in row["cer"].items():
            cells = [format_interval(cer[v]) for v in ("conv", "transformer", "lm")]
            lines.append(f"{tag:<22} {label:<18} " + " ".join(f"{c:>28}" for c in cells))
    return "\n".join(lines)


def _percentiles(run, repeats: int) -> dict:
    for _ in range(10):
        run()
    times = np.empty(repeats)
    for i in range(repeats):
        t0 = time.perf_counter()
        run()
        times[i] = time.perf_counter() - t0
    p50, p99 = np.percentile(times * 1e3, [50, 99])
    return {"p50_ms": float(p50), "p99_ms": float(p99)}


def latency(row: dict, repeats: int, n_keys: int = 40) -> dict:
    """The onnxruntime vs torch eager comparison on the same trained model and the same inputs."""
    import torch

    from bci_app.decoders.bundle import load_bundle
    from bci_app.decoders.runtime import OnnxRuntime, default_threads
    from models.checkpoint import load_checkpoint
    from models.registry import model_from_checkpoint
    from models.typing.model import KeystrokeGraph

    threads = default_threads()
    torch.set_num_threads(threads)
    bundle = load_bundle(row["bundle"])
    model = model_from_checkpoint(load_checkpoint(row["checkpoint"]))
    rng = np.random.default_rng(0)
    window = rng.normal(size=(1, model.n_chans, model.n_times)).astype(np.float32)
    subject = np.zeros(1, np.int64)
    embeddings = rng.normal(size=(1, n_keys, model.embedding_dim)).astype(np.float32)
    mask = np.ones((1, n_keys), bool)
    keystroke = OnnxRuntime(bundle.graph_path("keystroke"), "cpu", threads=threads)
    sentence = OnnxRuntime(bundle.graph_path("sentence"), "cpu", threads=threads)
    tensors = [torch.from_numpy(a) for a in (window, subject, embeddings, mask)]
    exported = KeystrokeGraph(model, freeze_spatial=True).eval()

    def torch_keystroke():  # the module that was exported (spatial attention precomputed)
        with torch.no_grad():
            exported(tensors[0], tensors[1])

    def torch_training_module():  # as trained: spatial attention recomputed every call
        with torch.no_grad():
            model.conv_head(model.encode(tensors[0], tensors[1]))

    def torch_sentence():
        with torch.no_grad():
            model.sentence(tensors[2], tensors[3])

    out = {"threads": threads, "n_keys": n_keys, "n_chans": model.n_chans}
    pairs = {
        "keystroke": (lambda: keystroke.run({"x": window, "subject": subject}), torch_keystroke),
        "sentence": (
            lambda: sentence.run({"embeddings": embeddings, "key_mask": mask}),
            torch_sentence,
        ),
    }
    for name, (ort_run, torch_run) in pairs.items():
        ort_times, torch_times = _percentiles(ort_run, repeats), _percentiles(torch_run, repeats)
        out[name] = {
            "onnxruntime": ort_times,
            "torch_eager": torch_times,
            "torch_over_ort_p50": torch_times["p50_ms"] / ort_times["p50_ms"],
        }
    out["keystroke"]["torch_eager_training_module"] = _percentiles(
        torch_training_module, max(10, repeats // 10)
    )
    return out


def compare_bundles(paths: list[Path], seeds, seconds: float) -> dict:
    """Per-session CER of each bundle on the same held-out simulated sessions."""
    from acquisition.simulator import Simulator
    from bci_app.decoders.bundle import load_bundle
    from bci_app.typing.evaluate import evaluate_bundle

    bundles = [load_bundle(p) for p in paths]
    sim = bundles[0].manifest.provenance.first_simulator
    settings = {k: sim[k] for k in ("modality", "snr", "subject")}
    per_bundle = {str(p): {"conv": [], "transformer": [], "lm": []} for p in paths}
    for seed in seeds:
        print(f"[compare] session seed {seed}", file=sys.stderr, flush=True)
        session = Simulator(task="typing", seed=seed, sentence_split="test", **settings).generate(
            seconds
        )
        for path, bundle in zip(paths, bundles):
            report = evaluate_bundle(bundle, [session], provider="cpu")
            if report["overlap"]["n_seen"]:
                print(
                    f"[compare] WARNING: {path} was trained on {report['overlap']['n_seen']} "
                    f"of this session's sentences",
                    file=sys.stderr,
                )
            cer = report["overall"]["cer"]
            for variant, values in per_bundle[str(path)].items():
                values.append(cer[variant])
    return {"simulator": settings, "seeds": list(seeds), "seconds": seconds, "cer": per_bundle}


def format_comparison(result: dict) -> str:
    """Mean [95 % interval] per bundle and variant, then the paired difference from the first."""
    sim = result["simulator"]
    lines = [
        f"CER over {len(result['seeds'])} held-out simulated sessions ({sim['modality']}, snr "
        f"{sim['snr']:g}, subject {sim['subject']}, seeds {result['seeds'][0]}-"
        f"{result['seeds'][-1]}, {result['seconds']:g} s each): mean [95 % t interval]",
        f"{'bundle':<40} {'conv only':>22} {'+ transformer':>22} {'+ LM':>22}",
    ]
    items = list(result["cer"].items())
    first = items[0][1]
    for i, (name, cer) in enumerate(items):
        cells = []
        for variant in ("conv", "transformer", "lm"):
            mean, low, high = mean_interval(cer[variant])
            cells.append(f"{mean:.3f} [{low:.3f}, {high:.3f}]")
        lines.append(f"{name[-40:]:<40} " + " ".join(f"{c:>22}" for c in cells))
        if i:
            cells = []
            for variant in ("conv", "transformer", "lm"):
                diff = np.subtract(cer[variant], first[variant])
                mean, low, high = mean_interval(diff)
                cells.append(f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]")
            lines.append(
                f"{'  minus the first (paired)':<40} " + " ".join(f"{c:>22}" for c in cells)
            )
    return "\n".join(lines)


def format_results(rows: list[dict], lat: dict | None) -> str:
    """The ablation table per condition, then the latency lines."""
    head = (
        f"{'modality':<8} {'snr':>4} {'calib_s':>7} {'train_keys':>10} {'test_keys':>9} "
        f"{'conv only':>26} {'+ transformer':>26} {'+ LM':>26} {'top-1':>6} {'top-5':>6} "
        f"{'train_s':>8}"
    )
    lines = [
        "CER on held-out simulated sessions (small Brain2Qwerty v1; test sentences): mean "
        "[95 % t interval] (n sessions)",
        head,
    ]
    for r in rows:
        c = [
            format_interval(r["cer_sessions"][v]) if r["cer_sessions"][v] else "no sentence ended"
            for v in VARIANTS
        ]
        lines.append(
            f"{r['modality']:<8} {r['snr']:>4g} {r['calibration_s']:>7g} {r['train_keys']:>10} "
            f"{r['test_keys']:>9} {c[0]:>26} {c[1]:>26} {c[2]:>26} "
            f"{r['top1']:>6.3f} {r['top5']:>6.3f} {r['train_s']:>8.0f}"
        )
    lines += ["", "Paired over the same sessions (the ordering asks these): mean [95 % t interval]"]
    lines.append(f"{'modality':<8} {'snr':>4} {'calib_s':>7} {'transformer - conv':>26} "
                 f"{'LM - transformer':>26} {'gate':>5} {'LM weight':>9}")  # fmt: skip
    for r in rows:
        cells = []
        for after, before in (("transformer", "conv"), ("lm", "transformer")):
            a, b = r["cer_sessions"][after], r["cer_sessions"][before]
            if len(a) >= 2 and len(a) == len(b):
                mean, low, high = mean_interval(np.subtract(a, b))
                cells.append(f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]")
            else:
                cells.append("n/a")
        fitted = ["-" if r.get(key) is None else f"{r[key]:g}" for key in ("gate", "lm_weight")]
        lines.append(
            f"{r['modality']:<8} {r['snr']:>4g} {r['calibration_s']:>7g} {cells[0]:>26} "
            f"{cells[1]:>26} {fitted[0]:>5} {fitted[1]:>9}"
        )
    if lat:
        lines.append(
            f"\nPer-keystroke inference, {lat['n_chans']} channels, {lat['threads']} threads "
            f"(sentence graph over {lat['n_keys']} keystrokes):"
        )
        for name in ("keystroke", "sentence"):
            o, t = lat[name]["onnxruntime"], lat[name]["torch_eager"]
            lines.append(
                f"  {name:<9} onnxruntime p50 {o['p50_ms']:.3f} ms p99 {o['p99_ms']:.3f} ms | "
                f"torch eager p50 {t['p50_ms']:.3f} ms p99 {t['p99_ms']:.3f} ms | "
                f"torch/ORT {lat[name]['torch_over_ort_p50']:.2f}x"
            )
        train = lat["keystroke"]["torch_eager_training_module"]
        lines.append(
            f"  (torch eager of the training module, spatial attention recomputed per call: "
            f"p50 {train['p50_ms']:.3f} ms)"
        )
    for r in rows:
        step = r["decoder_step_ms"]
        lines.append(
            f"Decoder step ({r['modality']}, snr {r['snr']:g}, {r['calibration_s']:g} s; graphs + "
            f"beam step): p50 {step['p50']:.2f} ms, p99 {step['p99']:.2f} ms over {step['n']} keys"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the grid, then the latency comparison; print a table or JSON."""
    args = parse_args(argv)
    if args.ablation:
        with tempfile.TemporaryDirectory(prefix="bci-bench-ablation-") as tmp:
            grid = itertools.product(args.modalities, args.durations, args.snrs)
            rows = [ablation_condition(*cond, args, Path(tmp)) for cond in grid]
        print(json.dumps(rows, indent=2) if args.json else format_ablation(rows))
        return 0
    if args.compare:
        result = compare_bundles(args.compare, args.seeds, args.test_duration)
        print(json.dumps(result, indent=2) if args.json else format_comparison(result))
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="bci-bench-typing-") as tmp:
        grid = itertools.product(args.modalities, args.durations, args.snrs)
        for modality, duration, snr in grid:
            print(f"[bench] {modality} {duration:g} s snr {snr:g}", file=sys.stderr, flush=True)
            rows.append(run_condition(modality, duration, snr, args, Path(tmp)))
        lat = latency(rows[0], args.repeats) if rows else None
    for row in rows:
        row.pop("bundle"), row.pop("checkpoint")
    results = {"conditions": rows, "latency": lat}
    print(json.dumps(results, indent=2) if args.json else format_results(rows, lat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
