r"""Pretrain the residual sentence transformer's context on text once, for every subject.

    .venv/bin/python scripts/pretrain_sentence_prior.py                 # the shipped prior
    .venv/bin/python scripts/pretrain_sentence_prior.py --steps 200 --out /tmp/prior.npz

Spelling is the same for every user, and a calibration's few thousand steps of text
pretraining (:func:`models.typing.pretrain.sentence_stage`) are too few to learn it. This
script trains the ``small`` config's residual transformer on the LM corpus
(``bci_app/data/text/corpus.txt``, never the simulator's sentence bank) with posteriors from
made-up conv heads of every accuracy (:func:`models.typing.pretrain.synthetic_banks`,
calibrated like real ones), and writes its context weights to
``models/typing/data/sentence_prior_small.npz`` with how they were made. ``sentence_stage``
starts from that prior and adapts it to the subject's own confusions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

from bci_app.lm.model import DEFAULT_CORPUS
from bci_app.typing.alphabet import N_CLASSES
from models.typing.config import Brain2QwertyV1Config
from models.typing.model import SentenceTransformer
from models.typing.pretrain import (
    DEFAULT_PRIOR,
    SYNTHETIC_MARGINS,
    corpus_texts,
    pretrain_sentence,
    reset_context,
    save_prior,
    synthetic_banks,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", type=Path, default=DEFAULT_PRIOR)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Train the prior and write it; print what was written."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = Brain2QwertyV1Config.named("small")
    # the conv head is the subject's; the prior holds the context weights only
    sentence = SentenceTransformer(config, conv_head=nn.Linear(config.hidden, N_CLASSES))
    reset_context(sentence, args.seed)
    banks = synthetic_banks(SYNTHETIC_MARGINS, seed=args.seed)
    tic = time.perf_counter()
    losses = pretrain_sentence(
        sentence,
        banks,
        corpus_texts(),
        steps=args.steps,
        lengths=(30, 40, 50, 60, 70),
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
    )
    meta = {
        "config": "small",
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "margins": list(SYNTHETIC_MARGINS),
        "corpus_sha256": hashlib.sha256(Path(DEFAULT_CORPUS).read_bytes()).hexdigest(),
        "loss_first": round(losses["first"], 4),
        "loss_last": round(losses["last"], 4),
        "train_s": round(time.perf_counter() - tic, 1),
    }
    path = save_prior(sentence, args.out, meta)
    print(json.dumps({"written": str(path), **meta}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
