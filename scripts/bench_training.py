"""Training throughput of Brain2Qwerty v1 in keystrokes per second, small and paper sizes.

    .venv/bin/python scripts/bench_training.py                      # small + paper, auto device
    .venv/bin/python scripts/bench_training.py --configs small --steps 3 --json
    .venv/bin/python scripts/bench_training.py --device cuda --precision bf16 --compile
    torchrun --nproc_per_node=N scripts/bench_training.py ...       # DDP (NCCL on CUDA)

The real training step is timed: :class:`models.training.runner.Trainer` (AdamW, one-cycle
schedule, gradient clipping, autocast, optional ``torch.compile``, pinned-memory loader, DDP
under torchrun) runs :class:`models.typing.steps.LossModule` (cross-entropy on the conv and
transformer heads) over sentences of keystroke windows (306 channels x 25 samples). The windows
are random: throughput does not depend on what the data hold, and a simulated session of 64
sentences per batch would take longer to simulate than to train. One epoch of ``--steps``
batches warms up (and compiles), the next is timed; keystrokes/s counts every window of every
process. On the CPU the paper size runs a few steps only (``--steps``).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from torch.utils.data import Dataset

from models.registry import build_model
from models.training import distributed
from models.training.runner import Trainer
from models.training.settings import Acceleration
from models.training.task import TaskSetup
from models.training.typing_task import TypingTask
from models.typing.datasets import collate_keystrokes
from models.typing.steps import LossModule

N_CHANNELS = 306


class RandomSentences(Dataset):
    """``n`` sentences of ``keys`` random keystroke windows ``(keys, channels, n_times)``."""

    def __init__(self, n: int, keys: int, n_times: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.windows = torch.randn(n, keys, N_CHANNELS, n_times, generator=generator)
        self.labels = torch.randint(0, 29, (n, keys), generator=generator)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int):
        return self.windows[i], self.labels[i], 0


def bench(config: str, args, ctx) -> dict:
    """Warm-up epoch, then one timed epoch of ``args.steps`` batches; keystrokes per second."""
    torch.manual_seed(0)
    positions = np.random.default_rng(0).uniform(size=(N_CHANNELS, 2)).astype(np.float32)
    model = build_model("brain2qwerty_v1", config, N_CHANNELS, positions, 1).to(ctx.device)
    n_sentences = args.steps * args.batch_size * ctx.world_size
    data = RandomSentences(n_sentences, args.keys, model.n_times)
    setup = TaskSetup(
        meta={},
        model=model,
        loss=LossModule(model, "brain2qwerty_v1"),
        train_set=data,
        batch_size=args.batch_size,
        collate=collate_keystrokes,
        drop_last=True,
        examples="sentences",
    )
    settings = {"seed": 0, "lr": 1e-3, "weight_decay": 0.0, "epochs": 2}
    accel = Acceleration(
        precision=args.precision,
        compile=args.compile,
        compile_mode=args.compile_mode,
        pin_memory=None,
    )
    trainer = Trainer(TypingTask([]), setup, settings, ctx, progress=False, acceleration=accel)
    started = time.perf_counter()
    trainer.train_epoch(0)
    warmup = time.perf_counter() - started
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    trainer.train_epoch(1)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    keystrokes = n_sentences * args.keys
    return {
        "config": config,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "device": str(ctx.device),
        "world_size": ctx.world_size,
        "backend": ctx.backend,
        "precision": args.precision,
        "autocast": str(getattr(trainer.autocast, "keywords", {}).get("dtype")),
        "compile": args.compile,
        "batch_sentences": args.batch_size,
        "keys_per_sentence": args.keys,
        "steps": args.steps,
        "warmup_s": round(warmup, 2),
        "seconds": round(seconds, 3),
        "keystrokes_per_s": round(keystrokes / seconds, 1),
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if ctx.device.type == "cuda"
        else None,
    }


def main(argv=None) -> int:
    """Run the benchmark; print one line per size (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=["small", "paper"])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=None, help="sentences per batch")
    parser.add_argument("--keys", type=int, default=None, help="keystrokes per sentence")
    parser.add_argument("--steps", type=int, default=None, help="timed batches per size")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the step")
    parser.add_argument("--compile-mode", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    ctx = distributed.setup(args.device)
    cuda = ctx.device.type == "cuda"
    # CPU defaults keep the paper size to a few steps (a paper step is seconds on 2 cores)
    args.batch_size = args.batch_size or (64 if cuda else 4)
    args.keys = args.keys or (40 if cuda else 8)
    args.steps = args.steps or (20 if cuda else 2)
    results = []
    try:
        for config in args.configs:
            results.append(bench(config, args, ctx))
    finally:
        distributed.cleanup(ctx)
    if ctx.is_main:
        if args.json:
            print(json.dumps({"host_cpus": os.cpu_count(), "results": results}, indent=2))
        for r in results if not args.json else ():
            print(
                f"{r['config']:>5} ({r['parameters'] / 1e6:.1f} M params) on {r['device']} x"
                f"{r['world_size']}, autocast {r['autocast']}, compile {r['compile']}: "
                f"{r['keystrokes_per_s']:.0f} keystrokes/s ({r['steps']} steps of "
                f"{r['batch_sentences']} sentences x {r['keys_per_sentence']} keys in "
                f"{r['seconds']:.2f} s; warm-up {r['warmup_s']:.1f} s)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
