"""Fine-tuning: building a task model, mask fine-tuning, evaluation, the whole run (METHOD.md 6-7).

The model itself (``TASKS``, the heads, ``FineTuneModel``) is ``heads.py``'s; this module trains and
evaluates it (imports heads, model, checkpoint, trainer and, late, data).

Rules:

- Tasks (``heads.TASKS``): ``melody`` (note level, 3 classes), ``velocity`` (note level,
  6 bins), ``composer`` (sequence level, 8), ``emotion`` (sequence level, 4),
  ``folder`` (sequence level, the classes of a user's labels CSV). The class names
  come from the dataset (``TokenDataset.classes``).
- ``heads.FineTuneModel`` = a ``MidiBert`` encoder (``checkpoint.load_model``, or a fresh
  one: the "no pre-training" control) + a head:
  note level: dropout -> Linear(d_model, 256) -> ReLU -> dropout -> Linear(256, C) per token;
  sequence level: attention pooling (``pool_hops`` = 4 learned queries,
  a_h = softmax over real tokens of w_h . tanh(W h_i); padding never gets weight),
  the hops' pooled vectors concatenated -> MLP (Linear -> ReLU -> dropout -> Linear(C)).
  The pre-trained attribute heads and masker head are kept in the encoder but unused.
- Velocity is never an input of the velocity task: datasets.py refuses a tokenizer that
  encodes velocity for it, and ``FineTuneModel`` also refuses such an encoder.
- Mask fine-tuning (METHOD.md 6): during training ``mask_ratio`` (15%) of each sample's
  real tokens (exactly round(ratio * n), at least 1) have every attribute replaced by
  MASK. The draw is per sample from ``sample_generator(seed, step, sample_index)``
  (sharding-invariant, resumable). Eval-time masking is off by default; with
  ``eval_mask=True`` validation/test inputs are masked the same way with step 0, so
  every evaluation sees the same masks. Results state which was used.
- Evaluation: note tasks count each (piece, note) once; a note seen in several
  overlapping windows gets the mean of its windows' softmax probabilities.
  Sequence tasks give a window-level accuracy and a piece-level prediction = argmax
  of the mean of the softmax probabilities over all windows of the piece; the
  headline ``acc`` of a sequence task is the piece-level one (``window_acc`` beside it).
  ``macro_f1`` = mean F1 over the classes present in the truth or the predictions;
  ``confusion[i][j]`` = count of true class i predicted as j.
- Early stopping on the validation ``val_acc`` (patience in evaluations; equal
  accuracies are decided by the lower ``val_loss``); the best weights are kept and
  are what is saved and tested.
- Saving and loading are checkpoint.py's: ``config.json`` (format ``smu_explain.finetuned``:
  encoder config, task, classes, head settings, results) + ``model.safetensors`` +
  ``tokenizer.json``; loading reads only JSON and safetensors (``SMUCheckpointError``
  on anything else).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .callbacks import Callback, EarlyStopping
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .errors import SMUInputError
from .heads import FineTuneModel, task_spec
from .io import atomic_write_text
from .model import MidiBert, ModelConfig
from .seeding import sample_generator
from .train_config import TrainConfig
from .trainer import Trainer

try:
    from .tokenizer import MASK_ID
except ModuleNotFoundError:  # pragma: no cover - tokenizer.py is part of the package
    MASK_ID = 1

IGNORE_INDEX = -100


def _plain(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    return str(o)


def build_model(task: str, classes: Sequence[str], pretrained: str | os.PathLike | Checkpoint | None = None,
                vocab_sizes: Sequence[int] | None = None, attributes: Sequence[str] | None = None,
                size: str = "small", max_len: int = 512, seed: int = 0, **head_kw: Any) -> FineTuneModel:
    """Encoder from ``pretrained`` (a pre-trained checkpoint folder, or its loaded ``Checkpoint``)
    or fresh (``size``), plus the head.

    The head's initial weights come from ``torch.manual_seed(seed)``.
    """
    if pretrained is not None:
        ckpt = pretrained if isinstance(pretrained, Checkpoint) else load_checkpoint(
            pretrained, kind="pretrained", require_tokenizer=False)
        encoder = ckpt.encoder
        info = {"pretrained": str(ckpt.folder),
                "tokenizer": ckpt.tokenizer.config.to_dict() if ckpt.tokenizer is not None else None}
    else:
        if vocab_sizes is None or attributes is None:
            raise ValueError("a fresh encoder needs vocab_sizes and attributes")
        torch.manual_seed(seed)
        encoder = MidiBert(ModelConfig.named(size, list(vocab_sizes), list(attributes), max_len=max_len))
        info = {"pretrained": None}
    torch.manual_seed(seed + 1)
    return FineTuneModel(encoder, task, classes, info=info, **head_kw)


# ============================================================================ objective

def mask_inputs(tokens: torch.Tensor, attention_mask: torch.Tensor, ratio: float, seed: int, step: int,
                sample_index: torch.Tensor) -> torch.Tensor:
    """Replace round(ratio * n) (>= 1) random real tokens of each sample by MASK (all attributes).

    The positions of sample ``b`` come from ``sample_generator(seed, step, sample_index[b])``.
    """
    if ratio <= 0:
        return tokens
    picked = torch.zeros(attention_mask.shape, dtype=torch.bool)
    lens = attention_mask.sum(1).tolist()
    for b, n in enumerate(lens):
        n = int(n)
        if n == 0:
            continue
        k = min(n, max(1, int(round(ratio * n))))
        g = sample_generator(seed, step, int(sample_index[b]))
        real = attention_mask[b].nonzero().flatten().cpu()
        picked[b, real[torch.randperm(n, generator=g)[:k]]] = True
    return tokens.masked_fill(picked.to(tokens.device)[..., None], MASK_ID)


class FineTuneObjective:
    """Cross-entropy of the task head, with mask fine-tuning (see module docstring)."""

    def __init__(self, level: str, n_classes: int, mask_ratio: float = 0.15, eval_mask: bool = False):
        if level not in ("note", "sequence"):
            raise ValueError(f"level must be note or sequence, got {level!r}")
        if not 0.0 <= mask_ratio < 1.0:
            raise SMUInputError("mask ratio", f"must be in [0, 1), got {mask_ratio}")
        self.level, self.n_classes = level, n_classes
        self.mask_ratio, self.eval_mask = mask_ratio, eval_mask

    def inputs(self, batch: dict, step_state: dict) -> torch.Tensor:
        masking = step_state.get("train", True) or self.eval_mask
        if not masking:
            return batch["tokens"]
        idx = batch.get("sample_index")
        if idx is None:
            idx = torch.arange(batch["tokens"].shape[0])
        return mask_inputs(batch["tokens"], batch["attention_mask"], self.mask_ratio, step_state.get("seed", 0),
                           step_state.get("step", 0) if step_state.get("train", True) else 0, idx)

    def loss(self, model, batch: dict, step_state: dict) -> tuple[torch.Tensor, dict[str, float]]:
        out = model(self.inputs(batch, step_state), batch["attention_mask"])
        logits, labels = out["logits"].float(), batch["labels"]
        if self.level == "note":
            flat, y = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
            loss = F.cross_entropy(flat, y, ignore_index=IGNORE_INDEX)
            ok = y != IGNORE_INDEX
            acc = (flat.argmax(-1)[ok] == y[ok]).float().mean() if bool(ok.any()) else torch.tensor(0.0)
        else:
            loss = F.cross_entropy(logits, labels)
            acc = (logits.argmax(-1) == labels).float().mean()
        return loss, {"acc": float(acc)}

    @torch.no_grad()
    def evaluate(self, model, loader: Iterable[dict], step_state: dict) -> dict[str, float]:
        res = collect_predictions(model, loader, self, step_state)
        m = scores_from_predictions(res, self.level, self.n_classes)
        out = {"val_loss": m["loss"], "val_acc": m["acc"], "val_macro_f1": m["macro_f1"]}
        if self.level == "sequence":
            out["val_window_acc"] = m["window_acc"]
        return out


# ============================================================================ evaluation

@torch.no_grad()
def collect_predictions(model, loader: Iterable[dict], objective: FineTuneObjective,
                        step_state: dict | None = None) -> dict[str, np.ndarray]:
    """Softmax probabilities with their keys: note tasks per labelled token
    (piece_id, note_id, label, probs); sequence tasks per window (piece_id, label, probs).
    Also the summed cross-entropy for the loss."""
    state = dict(step_state or {"seed": 0})
    state["train"], state["step"] = False, 0
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    pids, nids, labels, probs = [], [], [], []
    ce_sum, n = 0.0, 0
    try:
        for batch in loader:
            batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
            logits = model(objective.inputs(batch, state), batch["attention_mask"])["logits"].float()
            y = batch["labels"]
            if objective.level == "note":
                ok = y != IGNORE_INDEX
                lg = logits[ok]
                ce_sum += float(F.cross_entropy(lg, y[ok], reduction="sum")) if lg.numel() else 0.0
                n += int(ok.sum())
                pids.append(batch["piece_id"][:, None].expand_as(y)[ok].cpu())
                nids.append(batch["note_ids"][ok].cpu())
                labels.append(y[ok].cpu())
                probs.append(torch.softmax(lg, -1).cpu())
            else:
                ce_sum += float(F.cross_entropy(logits, y, reduction="sum"))
                n += int(y.shape[0])
                pids.append(batch["piece_id"].cpu())
                labels.append(y.cpu())
                probs.append(torch.softmax(logits, -1).cpu())
    finally:
        model.train(was)
    C = objective.n_classes
    out = {"piece_id": torch.cat(pids).numpy() if pids else np.zeros(0, np.int64),
           "label": torch.cat(labels).numpy() if labels else np.zeros(0, np.int64),
           "probs": torch.cat(probs).numpy() if probs else np.zeros((0, C), np.float32),
           "loss": np.array(ce_sum / max(n, 1))}
    if objective.level == "note":
        out["note_id"] = torch.cat(nids).numpy() if nids else np.zeros(0, np.int64)
    return out


def _mean_by_key(keys: np.ndarray, probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean probability rows per unique key (rows of a key share its label)."""
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    sums = np.zeros((len(uniq), probs.shape[1]), dtype=np.float64)
    np.add.at(sums, inv, probs)
    counts = np.bincount(inv, minlength=len(uniq))[:, None]
    lab = np.zeros(len(uniq), dtype=np.int64)
    lab[inv] = labels
    return sums / counts, lab


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, Any]:
    """Accuracy, macro-F1 (over classes present in truth or predictions), confusion (true x pred)."""
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    conf = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(conf, (y_true, y_pred), 1)
    n = int(conf.sum())
    acc = float(np.trace(conf) / n) if n else float("nan")
    f1s = []
    for c in range(n_classes):
        tp = conf[c, c]
        support, predicted = conf[c].sum(), conf[:, c].sum()
        if support == 0 and predicted == 0:
            continue
        f1s.append(2 * tp / (support + predicted))
    return {"acc": acc, "macro_f1": float(np.mean(f1s)) if f1s else float("nan"),
            "confusion": conf.tolist(), "n": n}


def scores_from_predictions(pred: dict[str, np.ndarray], level: str, n_classes: int) -> dict[str, Any]:
    probs, labels = pred["probs"], pred["label"]
    if level == "note":
        keys = np.stack([pred["piece_id"], pred["note_id"]], 1) if len(labels) else np.zeros((0, 2), np.int64)
        p, y = _mean_by_key(keys, probs, labels) if len(labels) else (probs, labels)
        out = classification_scores(y, p.argmax(1) if len(y) else y, n_classes)
        out["unit"] = "note (mean probabilities over overlapping windows)"
    else:
        window = classification_scores(labels, probs.argmax(1) if len(labels) else labels, n_classes)
        p, y = _mean_by_key(pred["piece_id"][:, None], probs, labels) if len(labels) else (probs, labels)
        out = classification_scores(y, p.argmax(1) if len(y) else y, n_classes)
        out["unit"] = "piece (argmax of the mean window probabilities)"
        out["window_acc"] = window["acc"]
        out["window_macro_f1"] = window["macro_f1"]
        out["n_windows"] = window["n"]
    out["loss"] = float(pred["loss"])
    return out


def evaluate_model(model: FineTuneModel, dataset, batch_size: int = 16, eval_mask: bool = False,
                   mask_ratio: float = 0.15, seed: int = 0, collate_fn: Callable | None = None,
                   device: str | torch.device | None = None) -> dict[str, Any]:
    """Accuracy, macro-F1, confusion matrix of ``model`` on ``dataset`` (see module docstring)."""
    from .datasets import collate

    collate_fn = collate_fn or collate
    if device is not None:
        model.to(device)
    if len(dataset) == 0:
        raise SMUInputError("evaluation data", "the evaluation set is empty")
    objective = FineTuneObjective(model.level, len(model.classes), mask_ratio, eval_mask)

    def loader():
        for i in range(0, len(dataset), batch_size):
            idx = list(range(i, min(i + batch_size, len(dataset))))
            b = collate_fn([dataset[j] for j in idx])
            b["sample_index"] = torch.tensor(idx)
            yield b

    res = scores_from_predictions(collect_predictions(model, loader(), objective, {"seed": seed}),
                                  model.level, len(model.classes))
    res.update({"classes": list(model.classes), "eval_mask": bool(eval_mask),
                "mask_ratio_eval": mask_ratio if eval_mask else 0.0})
    return res


# ============================================================================ the whole run

class _KeepBest(Callback):
    """Copies the weights at every improvement (in memory) and saves them to ``best_dir``."""

    def __init__(self, best_dir: Path | None = None):
        self.state: dict[str, torch.Tensor] | None = None
        self.step: int | None = None
        self.metrics: dict[str, float] = {}
        self.best_dir = best_dir

    def __call__(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self.state = {k: v.detach().to("cpu").clone() for k, v in trainer.model.state_dict().items()}
        self.step, self.metrics = trainer.step, dict(metrics)


def finetune(task: str, model: FineTuneModel, train_set, val_set, config: TrainConfig,
             test_set=None, mask_ratio: float = 0.15, eval_mask: bool = False, patience: int = 5,
             callbacks: Sequence[Callback] = (), collate_fn: Callable | None = None,
             out_dir: str | os.PathLike | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``model`` on ``train_set`` with early stopping on ``val_set``'s ``val_acc``.

    ``out_dir`` (default ``config.out_dir``) receives the best model (``config.json`` +
    ``model.safetensors``) and ``results.json``; the training state (checkpoint.pt) goes
    to ``out_dir/train``. ``config.eval_every == 0`` means: evaluate once per epoch.
    Returns the results dict (val and test scores of the best weights).
    """
    spec = task_spec(task)
    if model.level != spec.level:
        raise SMUInputError("model", f"the model was built for {model.task}, not {task}")
    if val_set is None or len(val_set) == 0:
        raise SMUInputError("validation data", "fine-tuning needs a non-empty validation split "
                                               "(early stopping keeps the best epoch)")
    out = Path(out_dir or config.out_dir)
    cfg = TrainConfig.from_dict(config.to_dict())
    cfg.out_dir = str(out / "train")
    if cfg.eval_every == 0:
        cfg.eval_every = max(1, len(train_set) // cfg.batch_size)
    objective = FineTuneObjective(spec.level, len(model.classes), mask_ratio, eval_mask)
    keep = _KeepBest()
    stopper = EarlyStopping("val_acc", "max", patience, on_improve=keep, tie_break="val_loss")
    trainer = Trainer(model, objective, train_set, val_set, cfg, callbacks=[stopper, *callbacks],
                      collate_fn=collate_fn)
    run = trainer.fit()
    if keep.state is not None:
        model.load_state_dict(keep.state)
    dev = trainer.device
    common = dict(batch_size=cfg.eval_batch_size or cfg.batch_size, eval_mask=eval_mask, mask_ratio=mask_ratio,
                  seed=cfg.seed, collate_fn=collate_fn, device=dev)
    results: dict[str, Any] = {
        "task": task, "level": spec.level, "classes": list(model.classes),
        "pretrained": model.checkpoint_info.get("pretrained"),
        "mask_finetune_ratio": mask_ratio, "eval_mask": bool(eval_mask),
        "best_step": keep.step, "stopped": run["message"], "steps": run["step"],
        "val": evaluate_model(model, val_set, **common),
    }
    if test_set is not None and len(test_set) > 0:
        results["test"] = evaluate_model(model, test_set, **common)
    results.update(extra or {})
    if trainer.dist.rank != 0:  # one writer under torchrun
        return results
    save_checkpoint(out, model, extra={"finetune": {k: v for k, v in results.items() if k not in ("val", "test")},
                                      "results": {s: {k: results[s][k] for k in ("acc", "macro_f1", "n")}
                                                  for s in ("val", "test") if s in results}})
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=_plain))
    return results
