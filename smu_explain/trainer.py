"""The training engine: one generic loop for pre-training and fine-tuning.

Shape (after minGPT's trainer: a plain loop that fires callbacks; nanoGPT's
train.py for torchrun + DistributedDataParallel):

    trainer = Trainer(model, objective, train_set, val_set, TrainConfig(...),
                      callbacks=[ProgressFile("progress.jsonl"), TqdmProgress()])
    result = trainer.fit(resume=False)

Rules this module guarantees (docs/ARCHITECTURE.md "Training loop"):

- ``objective.loss(model, batch, step_state) -> (loss, stats)`` is the only thing the
  loop knows about the task: a masker strategy (pre-training) or a fine-tuning
  objective. ``batch`` is ``collate_fn(items)`` plus ``sample_index`` (B,), the index of
  every sample in its dataset.
- Data order is a pure function of (seed, epoch): epoch ``e`` visits
  ``randperm(len(train_set), seed=f(seed, e))`` in consecutive GLOBAL batches of
  ``config.batch_size`` (the last incomplete batch is dropped); with ``W`` ranks,
  rank ``r`` takes the ``r``-th contiguous slice of ``batch_size / W`` samples of
  every global batch. Resuming therefore needs only (epoch, batch index in epoch).
- Every ``checkpoint_every`` steps, on SIGTERM/SIGINT (``request_stop``) and at the
  end, rank 0 writes ``out_dir/checkpoint.pt`` atomically (temporary file, fsync,
  ``os.replace``). It holds only tensors / numbers / strings / lists / dicts and is read
  back with ``torch.load(weights_only=True)``: model state dict, optimizer, scheduler,
  the RNG states of every rank (python, numpy, torch, cuda), the objective's
  ``state_dict()`` (freeze book), step / epoch / batch-in-epoch. A resumed run with the
  same config and world size reproduces an uninterrupted one (tested bit-for-bit
  up to float tolerance).
- A non-finite loss (or gradient norm) stops the run with ``SMUTrainingError`` naming
  the step; nothing is written after the last good checkpoint; a ``failed`` status
  line is written to the progress file.
- Multi-process: when ``RANK`` is set (torchrun), the trainer joins the process group
  (``nccl`` on CUDA, ``gloo`` on CPU) and wraps the model (or the objective's
  ``train_module(model)``, the module of its one gradient call per step) in
  ``DistributedDataParallel``; gradients are averaged over ranks, so with
  sharding-invariant objectives ``W`` ranks x ``B/W`` equals 1 rank x ``B``. When
  ``RANK`` is unset it is a single plain process.
- Randomness: ``seed`` seeds python / numpy / torch (+ rank, so dropout differs per
  rank); per-sample draws in objectives use ``sample_generator(seed, step, index)``
  so they do not depend on how a batch is sharded.

The loop's parts live in their own modules: ``train_config`` (``TrainConfig``, the lr
schedule), ``callbacks`` (``Callback``, ``ProgressFile``, ``TqdmProgress``, ``EarlyStopping``),
``resume`` (the ``checkpoint.pt`` format, RNG states, sanity limits), ``distributed``
(devices, the process group) and ``seeding`` (``sample_generator``, the epoch order). This
module imports them and, lazily, ``datasets.collate`` (the default ``collate_fn``); it never
imports a task (``masker``, ``finetune``): objectives come in as arguments.
"""

from __future__ import annotations

import math
import os
import signal
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from . import checkpoint
from .callbacks import Callback
from .distributed import DistInfo, setup_distributed
from .errors import SMUCheckpointError, SMUInputError, SMUTrainingError, SMUWriteError
from .resume import (
    CHECKPOINT_NAME,
    LOSS_EXPLODE_FACTOR,
    LOSS_MIN_STEPS,
    STATE_FORMAT,
    STATE_VERSION,
    WEIGHT_LIMIT,
    atomic_torch_save,
    decode_plain,
    encode_plain,
    load_train_state,
    preserve_rng,
    rng_state,
    set_rng_state,
    write_error_reason,
)
from .seeding import epoch_permutation, sample_seed, seed_everything
from .train_config import TRAIN_CONFIG_NAME, TrainConfig, lr_factor

# ============================================================================ data

class _Indexed(torch.utils.data.Dataset):
    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        return i, self.ds[i]


class _WithIndex:
    """collate wrapper that adds ``sample_index`` to the batch dict."""

    def __init__(self, collate_fn: Callable):
        self.collate_fn = collate_fn

    def __call__(self, items):
        idx = [i for i, _ in items]
        batch = self.collate_fn([it for _, it in items])
        if not isinstance(batch, dict):
            raise TypeError("collate_fn must return a dict of tensors")
        batch["sample_index"] = torch.tensor(idx, dtype=torch.long)
        return batch


def _default_collate():
    from . import datasets  # late import: datasets.py is another module of the package

    return datasets.collate


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    nb = device.type == "cuda"
    return {k: (v.to(device, non_blocking=nb) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _count_tokens(batch: dict[str, Any]) -> int:
    am = batch.get("attention_mask")
    if isinstance(am, torch.Tensor):
        return int(am.sum())
    tok = batch.get("tokens")
    if isinstance(tok, torch.Tensor):
        return int(tok.shape[0] * tok.shape[1])
    return 0


# ============================================================================ trainer

class Trainer:
    """Runs ``objective`` on ``model`` over ``train_set``; see the module docstring for the rules."""

    def __init__(self, model: nn.Module, objective: Any, train_set, val_set=None,
                 config: TrainConfig | None = None, callbacks: Iterable[Callback] = (),
                 collate_fn: Callable | None = None, save_extra: dict[str, Any] | None = None):
        """``save_extra``: extra keys for the model folder (e.g. "strategy" for config.json, and
        "tokenizer", which ``checkpoint.save_checkpoint`` writes as tokenizer.json), written with
        ``checkpoint.save_checkpoint`` at every checkpoint."""
        self.config = (config or TrainConfig()).validate()
        self.save_extra = dict(save_extra or {})
        self.model = model
        self.objective = objective
        self.train_set = train_set
        self.val_set = val_set
        self.callbacks = list(callbacks)
        self.collate_fn = collate_fn
        self.out_dir = Path(self.config.out_dir)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.resumed = False
        self.warnings: list[str] = []
        self.last_metrics: dict[str, float] = {}
        self.last_checkpoint_step: int | None = None
        self._stop: tuple[str, str] | None = None  # (status, message)
        self._loss_ema: float | None = None  # moving average of the training loss (sanity of checkpoints)
        self._loss_best: float | None = None
        self._loss_n = 0
        self._last_eval_step: int | None = None
        self.dist = DistInfo()
        self.device = torch.device("cpu")
        self.n_params = sum(p.numel() for p in model.parameters())
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler = None
        self.train_model: nn.Module = model

    # ------------------------------------------------------------------ control
    def request_stop(self, message: str = "cancelled", status: str = "cancelled") -> None:
        """Ask the loop to stop after the current step (signal-handler safe).

        ``status='cancelled'`` writes a checkpoint first; ``'done'`` is a normal end.
        """
        if self._stop is None:
            self._stop = (status, message)

    @property
    def stop_requested(self) -> bool:
        return self._stop is not None

    # ------------------------------------------------------------------ sizes
    @property
    def batches_per_epoch(self) -> int:
        return len(self.train_set) // self.config.batch_size

    @property
    def total_steps(self) -> int:
        if self.config.steps is not None:
            return int(self.config.steps)
        return int(self.config.epochs) * self.batches_per_epoch

    @property
    def local_batch_size(self) -> int:
        return self.config.batch_size // self.dist.world_size

    def lr_at(self, step: int) -> float:
        c = self.config
        return c.lr * lr_factor(step, self.total_steps, c.warmup_steps, c.schedule, c.min_lr_ratio)

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        c = self.config
        self.dist, self.device = setup_distributed(c.device)
        if c.batch_size % self.dist.world_size:
            raise SMUInputError("train config", f"batch_size {c.batch_size} is not divisible by the "
                                                f"{self.dist.world_size} ranks")
        n = len(self.train_set)
        if n == 0:
            raise SMUInputError("training data", "the training set is empty")
        if n < c.batch_size:
            raise SMUInputError("training data", f"{n} training samples are fewer than batch_size "
                                                 f"{c.batch_size}; lower --batch-size")
        if self.collate_fn is None:
            self.collate_fn = _default_collate()
        seed_everything(c.seed + self.dist.rank)
        self.model.to(self.device)
        decay = [p for p in self.model.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.requires_grad and p.dim() < 2]
        groups = [{"params": decay, "weight_decay": c.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        # fused kernel on CUDA; the plain per-parameter loop on CPU (bit-reproducible, small models)
        opt_kw = {"fused": True} if self.device.type == "cuda" else {"foreach": False}
        self.optimizer = torch.optim.AdamW(groups, lr=c.lr, betas=tuple(c.betas), **opt_kw)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, self.total_steps, c.warmup_steps, c.schedule, c.min_lr_ratio))
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)

    def _wrap(self) -> None:
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            # the module of the objective's one gradient call per step (the adversarial strategy's
            # two passes around the model; the model itself for the others) is what DDP wraps
            module = self.objective.train_module(self.model) if hasattr(self.objective, "train_module") \
                else self.model
            self.train_model = DDP(module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                   find_unused_parameters=True)
        else:
            self.train_model = self.model

    def _autocast(self):
        if not self.config.bf16:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    # ------------------------------------------------------------------ data
    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches (lists of dataset indices) for ``epoch``."""
        perm = epoch_permutation(len(self.train_set), self.config.seed, epoch)
        B, b, r = self.config.batch_size, self.local_batch_size, self.dist.rank
        return [perm[k * B + r * b:k * B + (r + 1) * b] for k in range(self.batches_per_epoch)]

    def _loader(self, dataset, batches: Sequence[Sequence[int]]):
        gen = torch.Generator()
        gen.manual_seed(self.config.seed)
        return torch.utils.data.DataLoader(
            _Indexed(dataset), batch_sampler=list(batches), collate_fn=_WithIndex(self.collate_fn),
            num_workers=self.config.num_workers, generator=gen, pin_memory=self.device.type == "cuda")

    def ordered_loader(self, dataset, batch_size: int | None = None, limit_batches: int | None = None):
        """Unshuffled, unsharded loader over ``dataset`` (validation, freeze-book updates)."""
        bs = batch_size or self.config.eval_batch_size or self.local_batch_size
        n = len(dataset)
        batches = [list(range(i, min(i + bs, n))) for i in range(0, n, bs)]
        if limit_batches is not None:
            batches = batches[:limit_batches]
        return self._loader(dataset, batches)

    def _set_epoch(self, epoch: int) -> None:
        for ds in (self.train_set,):
            if hasattr(ds, "set_epoch"):
                ds.set_epoch(epoch)

    def step_state(self, train: bool = True) -> dict[str, Any]:
        """The dict every ``objective.loss`` call gets (docs/ARCHITECTURE.md "Training loop").

        ``generator`` is a CPU ``torch.Generator`` for batch-level draws, seeded from
        (seed, step, rank): reproducible and resumable, but a batch-level draw depends
        on how the global batch is sharded. Per-sample draws that must not depend on it
        use ``sample_generator(seed, step, batch["sample_index"][b])``.
        """
        step = self.step if train else 0
        g = torch.Generator()
        g.manual_seed(sample_seed(self.config.seed, step, -2 - self.dist.rank if train else -1))
        return {"step": step, "epoch": self.epoch, "seed": self.config.seed, "generator": g,
                "train": train, "rank": self.dist.rank, "world_size": self.dist.world_size}

    # ------------------------------------------------------------------ events
    def _fire(self, name: str, *args) -> None:
        for cb in self.callbacks:
            if self.dist.is_main or getattr(cb, "all_ranks", False):
                getattr(cb, name)(self, *args)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME

    def _gather_rng(self) -> list[dict[str, Any]]:
        mine = rng_state(self.device)
        if not self.dist.enabled:
            return [mine]
        import torch.distributed as dist

        everyone: list[Any] = [None] * self.dist.world_size
        dist.all_gather_object(everyone, mine)
        return everyone

    def state_dict(self) -> dict[str, Any]:
        obj_state = None
        if hasattr(self.objective, "state_dict"):
            obj_state = encode_plain(self.objective.state_dict())
        return {
            "format": STATE_FORMAT, "version": STATE_VERSION,
            "model": {k: v.detach().to("cpu").contiguous() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": self._gather_rng(),
            "objective": obj_state,
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "total_steps": self.total_steps, "world_size": self.dist.world_size,
            "n_train": len(self.train_set),
            "config": self.config.to_dict(),
            "last_metrics": {k: float(v) for k, v in self.last_metrics.items()
                             if isinstance(v, (int, float))},
        }

    def checkpoint_problem(self) -> str | None:
        """Why the current weights / loss are not worth keeping as a checkpoint, or None.

        Not sane: a non-finite weight, a weight larger than ``WEIGHT_LIMIT`` in magnitude
        (a diverging learning rate), or a loss (moving average) more than
        ``LOSS_EXPLODE_FACTOR`` times (and more than 1.0 above) the lowest moving average of
        this run so far (a loss near 0 that wobbles is not an explosion).
        """
        big = 0.0
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if not bool(torch.isfinite(p).all()):
                    return f"non-finite values in the weights ({name})"
                big = max(big, float(p.detach().abs().max())) if p.numel() else big
        if big > WEIGHT_LIMIT:
            return f"the weights have diverged (largest magnitude {big:.3g} > {WEIGHT_LIMIT:.0e})"
        ema, best = self._loss_ema, self._loss_best
        if ema is not None and best is not None and self._loss_n >= LOSS_MIN_STEPS and \
                ema > LOSS_EXPLODE_FACTOR * best and ema - best > 1.0:
            return (f"the loss is exploding (moving average {ema:.4g} > {LOSS_EXPLODE_FACTOR:g} x its lowest "
                    f"{best:.4g})")
        return None

    def _track_loss(self, lval: float) -> None:
        self._loss_n += 1
        self._loss_ema = lval if self._loss_ema is None else 0.9 * self._loss_ema + 0.1 * lval
        if self._loss_n >= LOSS_MIN_STEPS:
            self._loss_best = self._loss_ema if self._loss_best is None else min(self._loss_best, self._loss_ema)

    def _kept_message(self) -> str:
        if self.last_checkpoint_step is None:
            return "no checkpoint was written yet"
        return f"the last good checkpoint (step {self.last_checkpoint_step}) is kept in {self.checkpoint_path()}"

    def save_checkpoint(self) -> Path:
        """Write the training state (and the model folder, if the model can save itself).

        Only sane states are kept (``checkpoint_problem``): otherwise ``SMUTrainingError``
        names the step and the last good checkpoint, which stays as it was. A failed write
        (disk full) raises ``SMUWriteError`` and leaves the previous checkpoint intact.
        """
        problem = self.checkpoint_problem()  # same answer on every rank (same weights, reduced loss)
        if problem is not None:
            raise SMUTrainingError(f"step {self.step}: {problem}; not saving this checkpoint, "
                                   f"{self._kept_message()}")
        state = self.state_dict()  # collective (RNG gather) on every rank
        path = self.checkpoint_path()
        if self.dist.is_main:
            atomic_torch_save(state, path)
            if checkpoint.savable(self.model):
                extra = {"training": {"step": self.step, "epoch": self.epoch,
                                      "objective": type(self.objective).__name__}}
                extra.update(self.save_extra)
                try:
                    checkpoint.save_checkpoint(self.out_dir, self.model, extra=extra)
                except (OSError, RuntimeError) as e:
                    raise SMUWriteError(self.out_dir, f"could not write the model files "
                                                      f"({write_error_reason(e)})") from None
                except Exception as e:  # safetensors reports a full disk as SafetensorError
                    if type(e).__name__ != "SafetensorError":
                        raise
                    raise SMUWriteError(self.out_dir, f"could not write the model files ({e})") from None
            self.last_checkpoint_step = self.step
            self._fire("on_checkpoint", path)
        self._barrier()
        return path

    def load_checkpoint(self, path: str | os.PathLike | None = None) -> None:
        state = load_train_state(path or self.checkpoint_path())
        src = Path(path or self.checkpoint_path())
        try:
            self.model.load_state_dict(state["model"], strict=True)
        except RuntimeError as e:
            raise SMUCheckpointError(src, f"model weights do not fit this model ({str(e).splitlines()[0]})") from None
        self.model.to(self.device)
        problem = self.checkpoint_problem()
        if problem is not None:
            raise SMUCheckpointError(src, f"not a sane checkpoint to resume from: {problem}")
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise SMUCheckpointError(src, f"optimizer state does not fit this model ({e})") from None
        if state.get("objective") is not None:
            if not hasattr(self.objective, "load_state_dict"):
                raise SMUCheckpointError(src, "checkpoint has objective state but the objective cannot load it")
            self.objective.load_state_dict(decode_plain(state["objective"]))
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.last_metrics = dict(state.get("last_metrics") or {})
        self.last_checkpoint_step = self.step
        rngs = state["rng"]
        if len(rngs) != self.dist.world_size:
            self.warnings.append(f"checkpoint was written by {len(rngs)} ranks, now {self.dist.world_size}: "
                                 "RNG streams are not restored exactly")
        try:
            set_rng_state(rngs[self.dist.rank % len(rngs)], self.device)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
            raise SMUCheckpointError(src, f"its random-number state is damaged ({e.__class__.__name__}: "
                                          f"{str(e)[:120]})") from None
        old = state.get("config", {})
        for key in ("seed", "batch_size"):
            if old.get(key) != getattr(self.config, key):
                self.warnings.append(f"resumed with {key}={getattr(self.config, key)} but the checkpoint used "
                                     f"{old.get(key)}: the data order differs from the original run")
        if state.get("n_train") is not None and int(state["n_train"]) != len(self.train_set):
            self.warnings.append(f"the checkpoint was trained on {state['n_train']} samples, the training set "
                                 f"now has {len(self.train_set)}: the data order differs from the original run")
        if self.batches_per_epoch and self.batch_in_epoch >= self.batches_per_epoch:
            self.epoch += 1
            self.batch_in_epoch = 0
        self.resumed = True

    # ------------------------------------------------------------------ collectives
    def _barrier(self) -> None:
        if self.dist.enabled:
            import torch.distributed as dist

            dist.barrier()

    def _all_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.dist.enabled:
            import torch.distributed as dist

            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def _sync_stop(self) -> bool:
        flag = torch.tensor([1.0 if self._stop is not None else 0.0], device=self.device)
        self._all_sum(flag)
        if flag.item() > 0 and self._stop is None:
            self._stop = ("cancelled", "stopped by another rank")
        return flag.item() > 0

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation metrics; every rank evaluates the whole validation set (same result everywhere)."""
        if self.val_set is None or len(self.val_set) == 0:
            return {}
        loader = self.ordered_loader(self.val_set, limit_batches=self.config.eval_batches)
        state = self.step_state(train=False)
        was_training = self.model.training
        self.model.eval()
        try:
            with preserve_rng(self.device), self._autocast():
                dl = _DeviceLoader(loader, self.device)
                if hasattr(self.objective, "evaluate"):
                    metrics = dict(self.objective.evaluate(self.model, dl, state))
                elif hasattr(self.objective, "validate"):  # masker strategies: fixed-seed random masks
                    metrics = {k if k.startswith("val_") else f"val_{k}": v
                               for k, v in self.objective.validate(self.model, dl, seed=self.config.seed).items()}
                else:
                    metrics = self._mean_loss(loader, state)
        finally:
            self.model.train(was_training)
        metrics = {k: float(v) for k, v in metrics.items()}
        self.last_metrics = metrics
        self._last_eval_step = self.step
        return metrics

    def _mean_loss(self, loader, state) -> dict[str, float]:
        tot: dict[str, float] = {}
        n = 0
        for batch in loader:
            batch = _to_device(batch, self.device)
            bs = int(batch["sample_index"].shape[0])
            loss, stats = self.objective.loss(self.model, batch, state)
            tot["val_loss"] = tot.get("val_loss", 0.0) + float(loss) * bs
            for k, v in (stats or {}).items():
                if isinstance(v, (int, float)):
                    tot[f"val_{k}"] = tot.get(f"val_{k}", 0.0) + float(v) * bs
            n += bs
        return {k: v / max(n, 1) for k, v in tot.items()}

    # ------------------------------------------------------------------ loop
    def fit(self, resume: bool | str | os.PathLike = False) -> dict[str, Any]:
        """Train to ``total_steps`` (or until stopped). Returns the final status dict.

        ``resume``: False, True (``out_dir/checkpoint.pt``) or a checkpoint path.
        Raises ``SMUTrainingError`` on a non-finite loss; other errors propagate. In
        every case a final status line reaches the callbacks.
        """
        self._setup()
        try:
            if resume:
                self.load_checkpoint(None if resume is True else resume)
            if self.dist.is_main:
                self.config.save(self.out_dir / TRAIN_CONFIG_NAME)
            self._wrap()
            for w in self.warnings:
                warnings.warn(w, stacklevel=2)
            self._fire("on_train_start")
            self._loop()
            if self._stop is not None and self._stop[0] == "cancelled":
                if self.last_checkpoint_step != self.step:
                    self.save_checkpoint()
                status, message = "cancelled", self._stop[1]
            else:
                if self.val_set is not None and self._last_eval_step != self.step:
                    self._fire("on_eval", self.evaluate())
                if self.last_checkpoint_step != self.step:
                    self.save_checkpoint()
                status = "done"
                message = self._stop[1] if self._stop else f"finished {self.step} steps"
        except BaseException as e:
            status = "cancelled" if isinstance(e, KeyboardInterrupt) else "failed"
            msg = str(e) or type(e).__name__
            try:
                self._fire("on_train_end", status, msg)
            finally:
                self._teardown()
            raise
        self._fire("on_train_end", status, message)
        self._teardown()
        return {"status": status, "message": message, "step": self.step, "epoch": self.epoch,
                "metrics": dict(self.last_metrics), "out_dir": str(self.out_dir)}

    def _teardown(self) -> None:
        if self.dist.initialized_here:
            import torch.distributed as dist

            try:
                dist.barrier()
                dist.destroy_process_group()
            except Exception:
                pass
            self.dist.initialized_here = False

    def _loop(self) -> None:
        c = self.config
        total = self.total_steps
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.model.train()
        while self.step < total:
            if self._sync_stop():
                return
            self._set_epoch(self.epoch)  # also when resuming in the middle of an epoch
            batches = self._epoch_batches(self.epoch)[self.batch_in_epoch:]
            batches = batches[:total - self.step]
            for batch in self._loader(self.train_set, batches):
                t0 = time.perf_counter()
                batch = _to_device(batch, self.device)
                state = self.step_state(train=True)
                with self._autocast():
                    loss, stats = self.objective.loss(self.train_model, batch, state)
                lval = self._all_sum(loss.detach().float().reshape(1).clone()) / self.dist.world_size
                lval = float(lval.item())
                if not math.isfinite(lval):
                    raise SMUTrainingError(self._nan_message("loss", lval))
                self._track_loss(lval)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if c.grad_clip > 0:
                    gn = float(torch.nn.utils.clip_grad_norm_(params, c.grad_clip))
                else:
                    gn = float(torch.linalg.vector_norm(torch.stack(
                        [p.grad.detach().float().norm() for p in params if p.grad is not None])))
                if not math.isfinite(gn):
                    raise SMUTrainingError(self._nan_message("gradient norm", gn))
                lr = self.optimizer.param_groups[0]["lr"]
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                self.batch_in_epoch += 1
                info = {"step": self.step, "epoch": self.epoch, "loss": lval, "lr": lr, "grad_norm": gn,
                        "tokens": _count_tokens(batch) * self.dist.world_size,
                        "stats": {k: float(v) for k, v in (stats or {}).items() if isinstance(v, (int, float))},
                        "step_time": time.perf_counter() - t0}
                self._fire("on_step_end", info)
                if self.batch_in_epoch >= self.batches_per_epoch:
                    self._end_epoch()
                if self.val_set is not None and c.eval_every and self.step % c.eval_every == 0:
                    self._fire("on_eval", self.evaluate())
                if c.checkpoint_every and self.step % c.checkpoint_every == 0 and self.step < total:
                    self.save_checkpoint()
                if self._sync_stop():
                    return
                if self.step >= total:
                    return

    def _end_epoch(self) -> None:
        finished = self.epoch
        if hasattr(self.objective, "end_epoch"):
            # the objective sees the training pieces as they are: augmentation off for this pass
            aug = getattr(self.train_set, "augment", None)
            if aug:
                self.train_set.augment = False
            loader = self.ordered_loader(self.train_set)
            was = self.model.training
            self.model.eval()
            try:
                self.objective.end_epoch(finished, self.model, _DeviceLoader(loader, self.device))
            finally:
                self.model.train(was)
                if aug:
                    self.train_set.augment = aug
        self.epoch += 1
        self.batch_in_epoch = 0
        self._fire("on_epoch_end", finished)

    def _nan_message(self, what: str, value: float) -> str:
        return f"non-finite {what} ({value}) at step {self.step + 1}; training stopped, {self._kept_message()}"


class _DeviceLoader:
    """Iterate a loader, moving every batch to ``device`` (for objective.evaluate / end_epoch)."""

    def __init__(self, loader, device):
        self.loader, self.device = loader, device

    def __iter__(self):
        for b in self.loader:
            yield _to_device(b, self.device)

    def __len__(self):
        return len(self.loader)


# ============================================================================ signals

def install_stop_signals(trainer: Trainer, signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)) -> Callable[[], None]:
    """SIGTERM / SIGINT -> ``trainer.request_stop`` (checkpoint, 'cancelled' status, clean exit).

    A second SIGINT raises KeyboardInterrupt at once. Returns a function restoring the
    previous handlers.
    """
    previous = {}

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if trainer.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        trainer.request_stop(f"cancelled by {name}", status="cancelled")

    for s in signals:
        previous[s] = signal.signal(s, handler)

    def restore():
        for s, h in previous.items():
            signal.signal(s, h)

    return restore


def step_seconds(model: nn.Module, objectives: dict[str, Any], batch: dict[str, Any], *, rounds: int = 5,
                 warmup: int = 1, steps: int = 2, bf16: bool = False, lr: float = 1e-4) -> dict[str, list[float]]:
    """Seconds per training step (forward, backward, clipped AdamW step, as :class:`Trainer`
    does) of ``model`` on ``batch`` under each objective (a masking strategy), measured side by
    side: every round runs each objective ``steps`` times in turn, so load from other processes
    falls on all of them alike. Compare the objectives within one call (their minima or
    medians), not absolute times across machines or calls. ``warmup`` rounds are not recorded.
    The model's weights change (a copy is the caller's choice)."""
    device = next(model.parameters()).device
    batch = _to_device(batch, device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    ctx = (lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)) if bf16 else nullcontext
    times: dict[str, list[float]] = {name: [] for name in objectives}
    modules = {name: o.train_module(model) if hasattr(o, "train_module") else model for name, o in objectives.items()}
    model.train()
    for r in range(warmup + rounds):
        for name, objective in objectives.items():
            module = modules[name]
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                with ctx():
                    loss, _ = objective.loss(module, batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if r >= warmup:
                times[name].append((time.perf_counter() - t0) / steps)
    return times
