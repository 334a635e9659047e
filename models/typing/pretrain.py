"""Context from text: pretrain v1's residual sentence transformer on English, then fine-tune.

The residual sentence transformer (:class:`models.typing.model.SentenceTransformer`,
``sentence="residual"``) reads the conv head's log-posteriors of a sentence's keystrokes and
corrects them from context. A few dozen calibration sentences are too few to learn spelling from,
but spelling is in text: here the transformer learns it from the LM's corpus
(``bci_app/data/text/corpus.txt``; never the simulator's sentence bank, which holds the test
sentences), reading keystroke posteriors *simulated* from the conv module's own confusions.

1. :class:`ConfusionBank`: a generative model of the conv module's logits per true class: the
   class's mean logit vector (its confusions, from the training split, rescaled to the
   **validation** split's margin: keystrokes the conv module was not trained on, so as noisy as
   on a new session; rare classes' margins shrunk by their count) plus fresh Gaussian noise of
   the validation spread, at a random temperature; each keystroke takes a simulated vector
   whose truth, drawn from the vector's calibrated softmax, is its class.
   No real vector is reused (resampling them let the transformer learn the bank).
   Before it, :func:`sentence_stage` loads the shipped context prior (:func:`load_prior`,
   spelling learned once on made-up heads, :func:`synthetic_banks`).
2. :func:`pretrain_sentence`: denoising on text. A corpus line (a random run of it, as long as a
   typed sentence) becomes classes (:func:`bci_app.typing.alphabet.text_to_classes`), then
   simulated conv logits; the transformer is trained with cross-entropy on ``logits + delta``
   (:meth:`~models.typing.model.SentenceTransformer.context`, without embeddings).
3. :func:`finetune_sentence`: an optional fine-tuning on the calibration sentences with the conv
   module frozen, on its real posteriors (off by default: see :func:`sentence_stage`).

:func:`sentence_stage` runs them after the conv module is trained;
:mod:`models.training.typing_task` calls it, then :func:`fit_gate`, which scales the
transformer's correction (0: conv only) by what the validation CER says, with or without text,
and :func:`fit_lm_weight`, which picks the character LM's weight in the beam search the same way.

No library simulates a classifier's confusions for text denoising, so this module does.
"""

from __future__ import annotations

import copy
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from bci_app.lm.beam import DEFAULT_LM_WEIGHT, KeystrokeBeamDecoder
from bci_app.lm.model import DEFAULT_CORPUS
from bci_app.typing.alphabet import N_CLASSES, cer, classes_to_text, text_to_classes

#: Fewest validation keystrokes for text pretraining: fewer say too little about the confusions
#: (the stage is then skipped, and the jointly trained transformer kept).
MIN_BANK_KEYS = 40
#: Pseudo-count pulling a class's mean logit vector towards the generic one (true class high,
#: the others low): a class seen a few times gets a mean shaped mostly by the generic vector.
SHRINK = 3.0
#: Simulated vectors from which :meth:`ConfusionBank.sample` draws its keystrokes.
POOL_SIZE = 8192
#: Range of the random temperature applied to a simulated logit vector (log-uniform).
TEMPERATURE_RANGE = (0.7, 1.4)
#: A class seen less often than the median class in the training split gets its simulated
#: margin (mean logit gap to the other classes) times ``(count / median) ** RARE_EXPONENT``,
#: at least ``RARE_FLOOR``. The conv module learns a rare letter less well, and a new session
#: shows it: at MEG 600 s snr 1 held-out margins were ~2 nats for 'b' and 'y' and 6-7.5 for
#: 'e', 'a', ' ', while an unweighted bank made every class as sure (5-7 nats); trained on it,
#: the transformer read weak rare letters as common ones (docs/BENCHMARKS.md).
RARE_EXPONENT = 0.5
RARE_FLOOR = 0.3
#: Scales of the residual transformer's correction that :func:`fit_gate` tries.
GATES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
#: Margins of the made-up conv heads the context prior is pretrained on (:func:`synthetic_banks`).
SYNTHETIC_MARGINS = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0)
#: The shipped context prior of the ``small`` residual transformer
#: (``scripts/pretrain_sentence_prior.py``).
DEFAULT_PRIOR = Path(__file__).resolve().parent / "data" / "sentence_prior_small.npz"
#: Character-LM weights of the beam search (shallow fusion) that :func:`fit_lm_weight` tries.
LM_WEIGHTS = (0.3, 0.5, 0.8, 1.0, 1.3, 1.6)


def _true_and_other(logits: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """Mean logit of the true class and mean logit of the other classes."""
    rows = np.arange(len(targets))
    true = logits[rows, targets]
    return float(true.mean()), float((logits.sum() - true.sum()) / (logits.size - len(true)))


def _weaken_rare(means: np.ndarray, counts_of: np.ndarray) -> np.ndarray:
    """Shrink each class's mean logit gap by how rare it is in ``counts_of`` (RARE_EXPONENT).

    Row ``c`` of ``means`` moves towards its own off-class level (the mean of its other
    logits), so the confusions' shape is kept and only the margin drops. The spread (measured
    before) is unchanged: a rare letter comes out weaker, not noisier.
    """
    counts = np.bincount(counts_of, minlength=N_CLASSES).astype(np.float64)
    median = np.median(counts[counts > 0])
    factor = np.clip((np.maximum(counts, 1.0) / median) ** RARE_EXPONENT, RARE_FLOOR, 1.0)
    other = (means.sum(1) - np.diag(means)) / (N_CLASSES - 1)
    return other[:, None] + (means - other[:, None]) * factor[:, None]


def _calibration_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The temperature that makes ``softmax(logits / T)`` best predict ``targets`` (least NLL).

    Temperature scaling (Guo et al. 2017), fitted on the held-out keystrokes the bank measures.
    """
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    logits = logits.astype(np.float64)
    rows = np.arange(len(targets))

    def nll(log_t: float) -> float:
        return float(-log_softmax(logits / np.exp(log_t), axis=1)[rows, targets].mean())

    fit = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(fit.x))


@dataclass(frozen=True)
class ConfusionBank:
    """A generative model of the conv module's logits for a keystroke of a given class.

    A simulated vector around class ``r`` is ``means[r]`` plus fresh Gaussian noise (per logit,
    the spread measured on the held-out keystrokes around their class means), times a random
    temperature; a keystroke of class ``c`` takes one whose truth, drawn from its softmax at
    the held-out ``calibration`` temperature, is ``c`` (:meth:`sample`). No real logit vector
    is reused: resampling the ~100 held-out vectors of a
    5 min calibration let the transformer learn those vectors (validation CER halved, held-out
    sessions no better), which is what this replaced.

    ``means[c]`` is the conv module's mean logit vector for class ``c``, shrunk towards the
    generic one (``SHRINK``). Its shape (which classes the conv module confuses with ``c``) comes
    from ``train_logits`` when given, where every class has many keystrokes; the conv module
    was trained on those and is over-sure of them, so the means are rescaled to the held-out
    keystrokes' gap between the true class and the others. Classes rarer than the median one
    (in the split the shape came from) then get a smaller gap (``RARE_EXPONENT``): a new session
    reads rare letters less surely than common ones.

    Parameters
    ----------
    logits : array, shape (n, 29)
        Conv-only logits of held-out keystrokes (the validation split).
    targets : array of int, shape (n,)
        Their true classes.
    train_logits, train_targets : arrays | None
        Conv-only logits and classes of the training split (the confusions' shape).
    temperature : float | None
        The temperature at which the simulated logits are calibrated (``calibration``); None
        fits it on ``logits`` (:func:`_calibration_temperature`).
    """

    logits: np.ndarray
    targets: np.ndarray
    train_logits: np.ndarray | None = None
    train_targets: np.ndarray | None = None
    temperature: float | None = None

    def __post_init__(self) -> None:
        logits, targets = self._checked(self.logits, self.targets)
        if len(targets) == 0:
            raise ValueError(
                "Invalid confusion data: no held-out keystroke. Record more calibration "
                "sentences (the validation split is empty)."
            )
        object.__setattr__(self, "logits", logits)
        object.__setattr__(self, "targets", targets)
        shape_logits, shape_targets = logits, targets
        if self.train_logits is not None and self.train_targets is not None:
            shape_logits, shape_targets = self._checked(self.train_logits, self.train_targets)
            if len(shape_targets) == 0:
                shape_logits, shape_targets = logits, targets
        true_h, other_h = _true_and_other(logits, targets)
        true_s, other_s = _true_and_other(shape_logits, shape_targets)
        means = np.empty((N_CLASSES, N_CLASSES), np.float64)
        for c in range(N_CLASSES):
            prior = np.full(N_CLASSES, other_s)
            prior[c] = true_s
            rows = shape_logits[shape_targets == c]
            means[c] = (rows.sum(0) + SHRINK * prior) / (len(rows) + SHRINK)
        scale = (true_h - other_h) / (true_s - other_s) if true_s != other_s else 1.0
        means = other_h + (means - other_s) * scale
        spread = (logits - means[targets]).std(0)
        means = _weaken_rare(means, shape_targets)
        object.__setattr__(self, "means", means.astype(np.float32))
        calibration = self.temperature or _calibration_temperature(logits, targets)
        object.__setattr__(self, "calibration", float(calibration))
        counts = np.bincount(shape_targets, minlength=N_CLASSES)[:N_CLASSES] + 1.0
        object.__setattr__(self, "frequency", counts / counts.sum())
        object.__setattr__(self, "spread", np.maximum(spread, 1e-3).astype(np.float32))

    @staticmethod
    def _checked(logits, targets) -> tuple[np.ndarray, np.ndarray]:
        logits = np.asarray(logits, np.float32)
        targets = np.asarray(targets, np.int64)
        if logits.ndim != 2 or logits.shape[1] != N_CLASSES or len(logits) != len(targets):
            raise ValueError(
                f"Invalid confusion data: expected logits (n, {N_CLASSES}) and n targets, got "
                f"{logits.shape} and {targets.shape}."
            )
        return logits, targets

    def sample(
        self, classes: np.ndarray, rng: np.random.Generator, difficulty: float = 0.0
    ) -> np.ndarray:
        """Simulated conv logits ``(len(classes), 29)`` of keystrokes of the given classes.

        Vectors are made the way a calibrated conv module meets them, then matched to the
        classes asked for: ``POOL_SIZE`` vectors, each drawn around the mean vector of a class
        ``r`` (fresh noise, random temperature), and each is given a true class drawn
        from its own softmax at the held-out keystrokes' calibration temperature. A keystroke
        of class ``c`` gets a vector whose drawn truth is ``c``. So a vector that reads 0.6 is
        right 60 % of the time, as the conv module's are on new sessions (docs/BENCHMARKS.md:
        per-bin accuracy within a few points of confidence on held-out sessions, MEG 600 s
        snr 1 and EEG 300 s snr 0.5), its errors are the ambiguous vectors, and nothing in a
        vector tells its truth beyond its softmax: the transformer can only add context. The
        pool's classes are drawn as often as the training split typed them (``frequency``),
        the prior the conv module's posteriors carry.

        Two earlier designs taught the transformer what real data does not hold: noise around
        the true class's mean (right ~94 % of the time where it read 0.5, so the transformer
        learned to sharpen whatever conv read), and swapping the true class's logit with
        another's (the rest of the vector still showed the true class's pattern).

        ``difficulty`` in [0, 1] makes the keystrokes harder than the held-out ones: the noise
        grows to ``1 + difficulty`` times the measured spread and the vectors are divided by
        ``1 + difficulty`` (less sure, hence, calibrated, more often wrong). A new session is
        usually harder than the held-out part of the calibration one.
        """
        classes = np.asarray(classes, np.int64)
        read = rng.choice(N_CLASSES, POOL_SIZE, p=self.frequency)
        noise = rng.normal(0.0, 1.0, (len(read), N_CLASSES)) * self.spread
        pool = self.means[read] + noise * (1.0 + difficulty)
        low, high = np.log(TEMPERATURE_RANGE)
        pool *= np.exp(rng.uniform(low, high, (len(read), 1))) / (1.0 + difficulty)
        scaled = pool / self.calibration
        probs = np.exp(scaled - scaled.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        truth = (probs.cumsum(1) < rng.random((len(read), 1))).sum(1).clip(max=N_CLASSES - 1)
        order = np.argsort(truth, kind="stable")
        starts = np.searchsorted(truth[order], np.arange(N_CLASSES + 1))
        counts = np.diff(starts)
        out = np.empty((len(classes), N_CLASSES))
        for c in np.unique(classes):
            at = np.flatnonzero(classes == c)
            if counts[c]:
                picked = order[starts[c] + rng.integers(0, counts[c], len(at))]
                out[at] = pool[picked]
            else:  # no vector of the pool was a c: one around c's own mean (rare)
                out[at] = self.means[c] + rng.normal(0.0, 1.0, (len(at), N_CLASSES)) * self.spread
        return out.astype(np.float32)

    def conv_accuracy(self) -> float:
        """Top-1 accuracy of the held-out conv logits it was measured on."""
        return float((self.logits.argmax(1) == self.targets).mean())


def synthetic_banks(
    margins: Sequence[float] = SYNTHETIC_MARGINS, *, seed: int = 0, n_keys: int = 2900
) -> list[ConfusionBank]:
    """Banks of made-up conv heads, one per margin: the context prior's training evidence.

    Each head's logit for a keystroke of class ``c`` is a random confusion row of ``c`` (fixed
    per head, standard normal) plus fresh standard-normal noise, with ``margin`` added to the
    true class: with the bank's calibrated draw, right about 30 % of the time at margin 2, 45 %
    at 4, 93 % at 8 and 99 % at 10 (29 classes). Spelling is the same for
    every subject, so :func:`pretrain_sentence` on these (``scripts/pretrain_sentence_prior.py``)
    learns it once, for evidence from near chance to near perfect; :func:`sentence_stage` then
    adapts it to a subject's own bank.
    """
    rng = np.random.default_rng(seed)
    targets = np.arange(n_keys) % N_CLASSES
    banks = []
    for margin in margins:
        confusion = rng.normal(0.0, 1.0, (N_CLASSES, N_CLASSES))
        logits = confusion[targets] + rng.normal(0.0, 1.0, (n_keys, N_CLASSES))
        logits[np.arange(n_keys), targets] += float(margin)
        # calibrated at temperature 1, as the conv module is on new sessions
        banks.append(ConfusionBank(logits, targets, temperature=1.0))
    return banks


def prior_parameters(sentence: torch.nn.Module) -> dict[str, Tensor]:
    """The residual transformer's context weights: what text pretraining trains, by name."""
    return {
        name: p
        for name, p in sentence.named_parameters()
        if not name.startswith(("conv_head.", "input."))
    }


def save_prior(sentence: torch.nn.Module, path: str | Path, meta: dict) -> Path:
    """Write the context weights of ``sentence`` and ``meta`` (how they were made) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: v.detach().cpu().numpy() for k, v in prior_parameters(sentence).items()}
    np.savez_compressed(path, __meta__=np.array(json.dumps(meta, sort_keys=True)), **arrays)
    return path


def load_prior(sentence: torch.nn.Module, path: str | Path = DEFAULT_PRIOR) -> dict | None:
    """Load a context prior into ``sentence`` in place; its ``meta``, or None if it does not fit.

    A prior fits a residual transformer whose context weights have the same names and shapes
    (the size it was trained for, e.g. the ``small`` config); for any other size (``paper``)
    None is returned and nothing changes, so the caller starts from scratch.
    """
    path = Path(path)
    try:
        with open(path, "rb") as file, np.load(file, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(
            f"Cannot read the sentence-transformer prior {str(path)!r}: {err}. Regenerate it with "
            "scripts/pretrain_sentence_prior.py, or pass prior=None to start from scratch."
        ) from err
    meta = json.loads(str(arrays.pop("__meta__", "{}")))
    own = prior_parameters(sentence)
    if set(own) != set(arrays) or any(own[k].shape != arrays[k].shape for k in own):
        return None
    with torch.no_grad():
        for name, param in own.items():
            param.copy_(torch.from_numpy(arrays[name]))
    return meta


def corpus_texts(path: str | Path = DEFAULT_CORPUS, *, max_lines: int | None = None) -> list:
    """Class sequences ``list[np.ndarray]`` of the corpus lines (empty lines left out)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"Invalid value for 'corpus': no file at {str(path)!r}. Pass a UTF-8 text file, one "
            "sentence per line."
        )
    texts = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            classes = text_to_classes(line.strip())
            if len(classes):
                texts.append(classes)
            if max_lines is not None and len(texts) >= max_lines:
                break
    return texts


def _batch(texts, lengths, bank, rng, batch_size: int, device) -> dict[str, Tensor]:
    """A batch of simulated sentences: random runs of corpus lines as long as typed ones."""
    picked = rng.integers(0, len(texts), batch_size)
    runs = []
    for i in picked:
        line = texts[int(i)]
        length = min(len(line), int(rng.choice(lengths)))
        start = int(rng.integers(0, len(line) - length + 1))
        runs.append(line[start : start + length])
    n_keys = max(len(r) for r in runs)
    logits = np.zeros((batch_size, n_keys, N_CLASSES), np.float32)
    targets = np.full((batch_size, n_keys), -100, np.int64)
    banks = bank if isinstance(bank, Sequence) else [bank]
    # one draw of the bank per batch (its pool of vectors is the costly part)
    drawn = banks[int(rng.integers(len(banks)))]
    sampled = drawn.sample(np.concatenate(runs), rng, float(rng.random()))
    ends = np.cumsum([len(r) for r in runs])
    for b, run in enumerate(runs):
        logits[b, : len(run)] = sampled[ends[b] - len(run) : ends[b]]
        targets[b, : len(run)] = run
    targets_t = torch.from_numpy(targets).to(device)
    return {
        "logits": torch.from_numpy(logits).to(device),
        "targets": targets_t,
        "key_mask": targets_t != -100,
    }


def denoising_loss(sentence: torch.nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """Cross-entropy of ``logits + delta`` on a simulated batch (the pretraining objective)."""
    out = batch["logits"] + sentence.context(batch["logits"], batch["key_mask"])
    return F.cross_entropy(out.flatten(0, 1), batch["targets"].flatten())


def pretrain_sentence(
    sentence: torch.nn.Module,
    bank: ConfusionBank | Sequence[ConfusionBank],
    texts: Sequence[np.ndarray],
    *,
    steps: int,
    lengths: Sequence[int] = (40, 60, 80),
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
) -> dict[str, float]:
    """Train the residual transformer's context on ``texts`` with simulated conv logits.

    Parameters
    ----------
    sentence : SentenceTransformer
        A residual sentence transformer (``sentence="residual"``), trained in place.
    bank : ConfusionBank | sequence of ConfusionBank
        The conv module's held-out logits; with several (:func:`synthetic_banks`), each
        simulated sentence draws one.
    texts : sequence of int arrays
        Class sequences (:func:`corpus_texts`).
    steps, batch_size, lr, seed
        Optimisation (AdamW, cosine decay) and randomness of the simulated batches.
    lengths : sequence of int
        Lengths of the runs cut from the lines (those of the typed calibration sentences).

    Returns
    -------
    losses : dict
        ``first`` and ``last``: mean denoising loss over the first and last tenth of the steps.
    """
    if not getattr(sentence, "residual", False):
        raise ValueError(
            "Invalid value for 'sentence': text pretraining needs a residual sentence transformer "
            "(config sentence='residual'), which reads conv posteriors."
        )
    if steps < 1:
        raise ValueError(f"Invalid value for 'steps': {steps!r}; use an integer >= 1.")
    device = next(sentence.parameters()).device
    rng = np.random.default_rng(seed)
    params = list(prior_parameters(sentence).values())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda i: min(1.0, (i + 1) / warmup) * 0.5 * (1.0 + np.cos(np.pi * min(i, steps) / steps)),
    )
    was_training = sentence.training
    sentence.train()
    losses = []
    try:
        for _ in range(steps):
            batch = _batch(texts, list(lengths), bank, rng, batch_size, device)
            loss = denoising_loss(sentence, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
    finally:
        sentence.train(was_training)
    tenth = max(1, steps // 10)
    return {"first": float(np.mean(losses[:tenth])), "last": float(np.mean(losses[-tenth:]))}


@torch.no_grad()
def sentence_outputs(model, sentences: Sequence, device) -> list[tuple[Tensor, Tensor]]:
    """``(embeddings (1, K, d), targets (K,))`` of each dataset sentence, conv module in eval."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for s in sentences:
            windows = torch.from_numpy(s.windows).to(device)
            subject = torch.full((len(windows),), int(s.subject), dtype=torch.long, device=device)
            out.append((model.encode(windows, subject)[None], torch.from_numpy(s.targets)))
    finally:
        model.train(was_training)
    return out


@torch.no_grad()
def sentence_cer(model, encoded: Sequence[tuple[Tensor, Tensor]]) -> tuple[float, float]:
    """Mean per-sentence CER of the sentence transformer and of conv only on encoded sentences."""
    cers, conv_cers, _ = _sentence_scores(model, encoded)
    return float(np.mean(cers)), float(np.mean(conv_cers))


@torch.no_grad()
def _sentence_scores(
    model, encoded: Sequence[tuple[Tensor, Tensor]]
) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-sentence transformer and conv-only CERs, and the transformer's NLL per keystroke."""
    was_training = model.training
    model.eval()
    try:
        cers, conv_cers, nll, n_keys = [], [], 0.0, 0
        for embeddings, targets in encoded:
            mask = torch.ones(embeddings.shape[:2], dtype=torch.bool, device=embeddings.device)
            target = classes_to_text(targets.numpy())
            logits = model.sentence(embeddings, mask)[0].float()
            nll += float(F.cross_entropy(logits.cpu(), targets, reduction="sum"))
            n_keys += len(targets)
            predicted = logits.argmax(-1).cpu().numpy()
            conv = model.conv_head(embeddings)[0].argmax(-1).cpu().numpy()
            cers.append(cer(classes_to_text(predicted), target))
            conv_cers.append(cer(classes_to_text(conv), target))
    finally:
        model.train(was_training)
    return np.array(cers), np.array(conv_cers), nll / max(n_keys, 1)


def finetune_sentence(
    model,
    encoded: Sequence[tuple[Tensor, Tensor]],
    *,
    epochs: int,
    lr: float = 3e-4,
    seed: int = 0,
) -> None:
    """Fine-tune the sentence transformer (conv module frozen) on encoded calibration sentences."""
    params = [
        p for name, p in model.sentence.named_parameters() if not name.startswith("conv_head.")
    ]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()  # conv head in eval (frozen); the transformer's dropout on
    model.sentence.train()
    try:
        for _ in range(epochs):
            for i in torch.randperm(len(encoded), generator=generator).tolist():
                embeddings, targets = encoded[i]
                mask = torch.ones(embeddings.shape[:2], dtype=torch.bool, device=embeddings.device)
                logits = model.sentence(embeddings, mask)[0]
                loss = F.cross_entropy(logits, targets.to(logits.device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
    finally:
        model.train(was_training)


@torch.no_grad()
def fit_gate(model, encoded: Sequence[tuple[Tensor, Tensor]], gates=GATES) -> dict:
    """Scale the residual transformer's correction by a gate fitted on validation sentences.

    The correction ``delta`` is the output of a linear head, so ``conv + g * delta`` is the same
    graph with the head's weight and bias times ``g``: the gate is folded into the weights and
    the exported graph does not change. ``g = 0`` is conv only, ``1`` the trained transformer.
    It is shallow fusion's weight, fitted on the held-out calibration sentences ``encoded``
    (:func:`sentence_outputs` of the validation split): a transformer whose context does not
    pay on keystrokes it was not trained on is turned down, or off, before it reaches a user.

    The one-standard-error rule picks it: of the gates whose validation CER is within one
    standard error of the best one's (the error of the per-sentence paired difference), the
    one nearest 1. The validation split of a 5-10 min calibration holds 2-4 sentences; by
    their plain minimum the gate followed one keystroke, and turned down transformers that
    were better held out (EEG 300 s snr 0.5: gate 0 fitted, gate 1 0.013 better than conv on
    8 held-out sessions), while the transformer itself learned from thousands of corpus
    sentences. The validation NLL per keystroke of each gate is recorded too; a tie-break by
    it was tried and dropped (docs/BENCHMARKS.md).

    Returns
    -------
    summary : dict
        ``gate`` (the scale kept), ``val_cer_by_gate`` and ``val_nll_by_gate`` (``str(g)`` ->
        validation CER, NLL per keystroke), ``val_cer_se`` (the standard error that made the
        tolerance around the best CER).
    """
    head = model.sentence.head
    weight, bias = head.weight.detach().clone(), head.bias.detach().clone()
    per_sentence, nlls = {}, {}
    for gate in gates:
        head.weight.copy_(weight * gate)
        head.bias.copy_(bias * gate)
        per_sentence[gate], _, nlls[gate] = _sentence_scores(model, encoded)
    scores = {g: float(np.mean(v)) for g, v in per_sentence.items()}
    best = min(gates, key=lambda g: (round(scores[g], 9), abs(g - 1.0)))
    tolerance = {g: _paired_se(per_sentence[g], per_sentence[best]) for g in gates}
    within = [g for g in gates if scores[g] - scores[best] <= tolerance[g] + 1e-9]
    kept = min(within, key=lambda g: abs(g - 1.0))
    head.weight.copy_(weight * kept)
    head.bias.copy_(bias * kept)
    return {
        "gate": float(kept),
        "val_cer_by_gate": {str(g): v for g, v in scores.items()},
        "val_nll_by_gate": {str(g): v for g, v in nlls.items()},
        "val_cer_se": {str(g): v for g, v in tolerance.items()},
    }


def _paired_se(a: np.ndarray, b: np.ndarray) -> float:
    """Standard error of the mean of ``a - b`` (0 with fewer than two pairs)."""
    from scipy import stats

    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return float(stats.sem(d)) if len(d) > 1 else 0.0


@torch.no_grad()
def fit_lm_weight(
    model,
    encoded: Sequence[tuple[Tensor, Tensor]],
    lm,
    *,
    weights: Sequence[float] = LM_WEIGHTS,
    top_k: int = 5,
    beam_width: int = 30,
) -> dict:
    """The character LM's weight in the beam search with the best validation CER (+ LM).

    The beam (:class:`bci_app.lm.beam.KeystrokeBeamDecoder`, the one live decoding runs) reads
    the sentence transformer's log-posteriors of each validation sentence ``encoded``
    (:func:`sentence_outputs`); ties go to the weight nearest the default. How much to trust the
    LM depends on how sure the brain decoder is: a text-pretrained transformer already carries
    some of the LM's knowledge, and a weak conv module leaves more for the LM to do, so one fixed
    weight fits no decoder well (on MEG 300 s snr 0.5, 0.8 instead of 0.5 took held-out CER
    + LM from 0.162 to 0.124).

    Returns
    -------
    summary : dict
        ``weight`` (the one kept) and ``val_cer_by_weight`` (``str(w)`` -> validation CER).
    """
    was_training = model.training
    model.eval()
    try:
        sentences = []
        for embeddings, targets in encoded:
            mask = torch.ones(embeddings.shape[:2], dtype=torch.bool, device=embeddings.device)
            log_probs = torch.log_softmax(model.sentence(embeddings, mask)[0].float(), -1)
            sentences.append((log_probs.cpu().numpy(), classes_to_text(targets.numpy())))
    finally:
        model.train(was_training)
    scores = {}
    for weight in weights:
        beam = KeystrokeBeamDecoder(lm, top_k=top_k, beam_width=beam_width, lm_weight=weight)
        cers = []
        for log_probs, target in sentences:
            beam.reset()
            for row in log_probs:
                beam.step(row)
            cers.append(cer(beam.finalize(), target))
        scores[weight] = float(np.mean(cers))
    best = min(weights, key=lambda w: (round(scores[w], 9), abs(w - DEFAULT_LM_WEIGHT)))
    return {"weight": float(best), "val_cer_by_weight": {str(w): v for w, v in scores.items()}}


def reset_context(sentence: torch.nn.Module, seed: int = 0) -> None:
    """Re-initialise the residual transformer (not the shared conv head): conv only again."""
    torch.manual_seed(seed)
    for name, module in sentence.named_children():
        if name == "conv_head":
            continue
        for sub in module.modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
    torch.nn.init.zeros_(sentence.head.weight)
    torch.nn.init.zeros_(sentence.head.bias)


def snapshot(module: torch.nn.Module) -> dict[str, Tensor]:
    """A deep copy of a module's state."""
    return copy.deepcopy(module.state_dict())


def sentence_stage(
    model,
    dataset,
    split,
    *,
    steps: int,
    finetune_epochs: int = 0,
    seed: int = 0,
    corpus: str | Path = DEFAULT_CORPUS,
    min_keys: int = MIN_BANK_KEYS,
    prior: str | Path | None = DEFAULT_PRIOR,
) -> dict[str, float]:
    """Text pretraining then fine-tuning of a trained v1 model's residual transformer, in place.

    The conv module (trained, best epoch) is frozen. The transformer starts from the context
    ``prior`` (spelling learned once for every subject, :func:`load_prior`; re-initialised to
    conv only when ``prior`` is None or made for another size) and is pretrained on the corpus
    with simulated posteriors (:func:`pretrain_sentence`; the bank's confusions from the
    training split, its margin, noise and calibration from the validation split).
    ``finetune_epochs`` > 0 then fine-tunes it on the training split
    (:func:`finetune_sentence`); off by default, because the conv module is near-perfect on the
    keystrokes it was trained on (top-1 ~1.0 against ~0.75 held out), so fine-tuning there
    teaches the transformer to trust it (it made held-out "+ transformer" CER worse in the
    sentence-stage comparison of docs/BENCHMARKS.md). With fewer than ``min_keys`` validation
    keystrokes nothing changes (``skipped`` says why).

    Returns
    -------
    summary : dict
        ``steps``, ``prior`` (the prior's steps and file, or None), ``bank_keys`` (validation
        keystrokes in the bank), ``bank_calibration`` (its temperature), ``bank_conv_accuracy``,
        ``loss_first``/``loss_last`` (denoising loss) and the validation CER before
        (``val_cer_joint``, the jointly trained transformer) and after (``val_cer``).
    """
    device = next(model.parameters()).device
    train = sentence_outputs(model, [dataset.sentences[i] for i in split["train"]], device)
    val = sentence_outputs(model, [dataset.sentences[i] for i in split["val"]], device)
    with torch.no_grad():
        was_training = model.training
        model.eval()
        logits = torch.cat([model.conv_head(e)[0] for e, _ in val]).cpu().numpy()
        train_logits = [model.conv_head(e)[0] for e, _ in train]
        train_logits = torch.cat(train_logits).cpu().numpy() if train_logits else None
        model.train(was_training)
    bank = ConfusionBank(
        logits,
        torch.cat([t for _, t in val]).numpy(),
        train_logits,
        torch.cat([t for _, t in train]).numpy() if train else None,
    )
    joint_cer, conv_cer = sentence_cer(model, val)
    if len(bank.targets) < min_keys:
        return {
            "skipped": f"{len(bank.targets)} validation keystrokes, fewer than {min_keys}",
            "val_cer_conv": conv_cer,
            "val_cer": joint_cer,
        }
    lengths = [len(t) for _, t in train] or [60]
    reset_context(model.sentence, seed)
    loaded = None if prior is None else load_prior(model.sentence, prior)
    losses = pretrain_sentence(
        model.sentence, bank, corpus_texts(corpus), steps=steps, lengths=lengths, seed=seed
    )
    if finetune_epochs:
        finetune_sentence(model, train, epochs=finetune_epochs, seed=seed)
    return {
        "steps": steps,
        "prior": None if loaded is None else {"file": Path(prior).name, "steps": loaded["steps"]},
        "finetune_epochs": finetune_epochs,
        "bank_keys": len(bank.targets),
        "bank_calibration": bank.calibration,
        "bank_conv_accuracy": bank.conv_accuracy(),
        "loss_first": losses["first"],
        "loss_last": losses["last"],
        "val_cer_conv": conv_cer,
        "val_cer_joint": joint_cer,
        "val_cer": sentence_cer(model, val)[0],
    }
