r"""Pretrain the residual sentence transformer's context on text once, for every subject.

    .venv/bin/python scripts/pretrain_sentence_prior.py                 # the shipped prior
    .venv/bin/python scripts/pretrain_sentence_prior.py --steps 200 --out /tmp/prior.npz
    .venv/bin/python scripts/pretrain_sentence_prior.py --evaluate-only  # score the shipped one

Spelling is the same for every user, and a calibration's few thousand steps of text
pretraining (:func:`models.typing.pretrain.sentence_stage`) are too few to learn it. This
script trains the ``small`` config's residual transformer on the LM corpus
(``bci_app/data/text/corpus.txt``, never the simulator's sentence bank) with posteriors from
made-up conv heads of every accuracy (:func:`models.typing.pretrain.synthetic_banks`,
calibrated like real ones), and writes its context weights to
``models/typing/data/sentence_prior_small.npz`` with how they were made. ``sentence_stage``
starts from that prior and adapts it to the subject's own confusions.

It then scores the prior (``--evaluate-only``: the prior at ``--out``, no training) on the
sentence bank's *test* sentences, none of which the corpus holds, read by made-up heads it was
not trained on (another seed) at a few margins: CER of conv only, + transformer (argmax of
``conv + delta``) and + LM (the live beam with the default character LM, weight 0.8) on
conv only and on the transformer. What the prior can add before any subject's data.
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
    load_prior,
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
    p.add_argument("--evaluate-only", action="store_true", help="score the prior at --out")
    p.add_argument("--eval-margins", type=float, nargs="+", default=[4.0, 6.0, 8.0])
    p.add_argument("--eval-sentences", type=int, default=80)
    return p.parse_args(argv)


def evaluate_prior(
    sentence: nn.Module, margins: list[float], n_sentences: int, seed: int = 123
) -> list[dict]:
    """CER on test sentences read by unseen made-up heads: conv, + transformer, + LM (both)."""
    import numpy as np

    from acquisition.simulator.sentences import load_sentences
    from bci_app.lm.beam import KeystrokeBeamDecoder
    from bci_app.lm.model import default_lm
    from bci_app.stats import mean_interval
    from bci_app.typing.alphabet import cer, classes_to_text, text_to_classes

    sentences = [text_to_classes(s) for s in load_sentences(None, "test")][:n_sentences]
    beam = KeystrokeBeamDecoder(default_lm(), top_k=5, beam_width=30, lm_weight=0.8)
    rng = np.random.default_rng(seed)
    sentence.eval()
    rows = []
    for margin, bank in zip(margins, synthetic_banks(tuple(margins), seed=seed)):
        scores = {"conv": [], "transformer": [], "lm_conv": [], "lm_transformer": []}
        for classes in sentences:
            logits = bank.sample(classes, rng, 0.0)
            text = classes_to_text(classes)
            with torch.no_grad():
                x = torch.from_numpy(logits)[None]
                mask = torch.ones(1, len(classes), dtype=torch.bool)
                out = (x + sentence.context(x, mask))[0].numpy()
            scores["conv"].append(cer(classes_to_text(logits.argmax(1)), text))
            scores["transformer"].append(cer(classes_to_text(out.argmax(1)), text))
            for name, values in (("lm_conv", logits), ("lm_transformer", out)):
                scores[name].append(cer(beam.decode(values), text))  # logits: it normalises
        row = {"margin": margin, "n_sentences": len(sentences)}
        for name, values in scores.items():
            mean, low, high = mean_interval(values)
            row[name] = {"mean": round(mean, 4), "ci95_sentences": [round(low, 4), round(high, 4)]}
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Train the prior and write it; print what was written."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = Brain2QwertyV1Config.named("small")
    # the conv head is the subject's; the prior holds the context weights only
    sentence = SentenceTransformer(config, conv_head=nn.Linear(config.hidden, N_CLASSES))
    reset_context(sentence, args.seed)
    if args.evaluate_only:
        meta = load_prior(sentence, args.out)
        if meta is None:
            print(f"{args.out} does not fit the small transformer", file=sys.stderr)
            return 1
        rows = evaluate_prior(sentence, args.eval_margins, args.eval_sentences)
        print(json.dumps({"prior": str(args.out), **meta, "evaluation": rows}, indent=1))
        return 0
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
    rows = evaluate_prior(sentence, args.eval_margins, args.eval_sentences)
    print(json.dumps({"written": str(path), **meta, "evaluation": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
