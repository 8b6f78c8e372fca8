"""Masking strategies for pre-training (random, adversarial, bar) and the freeze book.

Every strategy has the same interface (docs/ARCHITECTURE.md "Strategies"):

- ``select(model, batch) -> picked`` (B, L) bool: the tokens this strategy would
  corrupt for this batch (never padding, never frozen).
- ``loss(model, batch, step_state=None) -> (loss, stats)``: one training step's
  loss (a scalar tensor to backpropagate) and float statistics. ``step_state``
  is an optional dict. With ``seed`` and ``step`` in it and ``sample_index`` in the
  batch (the Trainer), every sample draws its masks from its own generator
  ``seeding.sample_generator(seed, step, sample_index)`` (independent of how the
  batch is sharded); otherwise ``step_state["generator"]`` or torch's global RNG.
  Exactly one grad-enabled ``model(...)`` call is made per step (DDP-safe).
- ``train_module(model)``: the module that call goes through, what the trainer wraps in
  DistributedDataParallel and gives to ``loss``: the model itself, or for the adversarial
  strategy its ``AdversarialPasses`` (clean pass, pick, corrupt and recoverer pass in one
  call; ``loss`` builds one around a bare MidiBert and refuses other wrappers of it).
- ``end_epoch(epoch, model, loader)``: called by the trainer after each epoch
  (``epoch`` = 0-based index of the epoch that just finished). Only the
  adversarial strategy does something (its freeze book).
- ``state_dict()`` / ``load_state_dict()``: JSON-serialisable training state
  (accuracy EMA, freeze book), to survive resume.

Validation is the same for every strategy so the numbers compare:
``validate(model, loader)`` picks a plain random 15% of the real tokens of each
sample with a ``torch.Generator`` seeded from (seed, batch index), replaces them
by MASK, and reports cross-entropy and accuracy per attribute.

The rules, in brief (docs/METHOD.md sections 3-5):

random (MidiBERT)
    ``ratio`` (15%) of each sample's real tokens picked uniformly (exact count,
    rounded, at least 1); picked tokens become MASK (80%), a random regular token
    (10%, drawn per attribute) or stay unchanged (10%). Loss = sum_j w_j CE_j on
    the picked tokens, with attribute weights ``attr_weighting``:
    'equal' (1/A), 'vocab' (proportional to vocabulary size, as MidiBERT) or
    'inverse_accuracy' (w_j = (1/a_j) / sum_i (1/a_i), a_j an EMA of the recent
    accuracy on attribute j; weights start equal).

adversarial (Zhao 2025)
    1. The masker head scores every token of the CLEAN sequence.
    2. Selectable = real token and not frozen in the freeze book. The top
       ``ratio`` of selectable tokens of each sample by score are picked (the
       ratio may be drawn per sample from ``ratio_range``; optional Gaussian
       ``score_noise`` is added to the scores before ranking). Option
       ``explore`` (default 0, the paper): that share of each sample's picks is
       drawn uniformly at random from the selectable tokens the masker did not
       pick, so the recoverer also sees random masks and the masker gets targets
       on tokens it scores low (without it, it only ever hears about its own top
       picks; see docs/PRETRAINING.md).
    3. 80/10/10 corruption as above; recoverer loss with 'inverse_accuracy'
       weights by default.
    4. Masker targets, per sample: of that sample's picked tokens, the top
       ``label_frac`` (30%) by (weighted) recovery loss get target 1 and the
       bottom 30% get 0 (at least one of each when a sample has >= 2 picked
       tokens); BCE on the masker logits against these targets. The recovery
       loss is a detached label, never a gradient path. No loss over other
       positions; padding is never selectable.
    5. ``masker_grad='head'`` (default): the clean pass runs under no_grad, in
       eval mode (no dropout), and only the masker head learns from the BCE
       (on the detached hidden states of the shared backbone). ``'full'``
       (the authors' code):
       clean pass and recoverer pass run in the model's mode, and the BCE also
       backpropagates into the shared backbone through the clean pass (about 2x
       the cost of a random step). Both modes run the whole step in one call of
       ``AdversarialPasses`` (the module DDP wraps).

bar (MusicBERT-style baseline)
    Whole bars of each sample are picked in random order until at least
    ``ratio`` of its real tokens are picked; 80/10/10 corruption per token.

The freeze book (METHOD.md 5) is ``freeze_book.FreezeBook``; the mask primitives and the
shared validation are in ``masks``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .freeze_book import FreezeBook
from .io import unknown_fields
from .masks import (
    BatchRandom,
    attention_mask_of,
    corrupt,
    n_to_pick,
    per_token_ce,
    per_token_correct,
    ranks_desc,
    top_k,
    top_ratio,
    validate,
)
from .model import MidiBert, unwrap
from .names import STRATEGIES
from .tokenizer import N_SPECIAL

WEIGHTINGS = ("equal", "vocab", "inverse_accuracy")
MASKER_GRAD = ("head", "full")


# ----------------------------------------------------------------------------- config

@dataclass
class StrategyConfig:
    """Every knob of the masking strategies (JSON-serialisable)."""

    name: str = "random"
    ratio: float = 0.15
    ratio_range: tuple[float, float] | None = None  # e.g. (0.1, 0.3): ratio drawn per batch
    mask_prob: float = 0.8      # picked -> MASK
    random_prob: float = 0.1    # picked -> random regular token (rest: unchanged)
    attr_weighting: str | None = None  # None: 'inverse_accuracy' for adversarial, else 'equal'
    acc_momentum: float = 0.9   # EMA momentum of the per-attribute accuracy
    min_acc: float = 0.01       # floor of a_j in the inverse-accuracy weights
    score_noise: float = 0.0    # std of Gaussian noise added to masker scores before ranking
    explore: float = 0.0        # adversarial: share of each sample's picks drawn uniformly at random
    label_frac: float = 0.3     # top/bottom fraction of picked tokens that get masker targets 1/0
    masker_weight: float = 1.0  # weight of the masker BCE in the total loss
    masker_grad: str = "head"   # 'head' | 'full'
    freeze: bool = True         # adversarial: keep a freeze book
    freeze_every: int = 15
    freeze_top: float = 0.3
    unfreeze_frac: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.name not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.name!r}; choose one of {STRATEGIES}")
        if self.attr_weighting is None:
            self.attr_weighting = "inverse_accuracy" if self.name == "adversarial" else "equal"
        if self.attr_weighting not in WEIGHTINGS:
            raise ValueError(f"attr_weighting must be one of {WEIGHTINGS}, got {self.attr_weighting!r}")
        if self.masker_grad not in MASKER_GRAD:
            raise ValueError(f"masker_grad must be one of {MASKER_GRAD}, got {self.masker_grad!r}")
        if not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"ratio must be in (0, 1], got {self.ratio}")
        if self.ratio_range is not None:
            lo, hi = (float(x) for x in self.ratio_range)
            if not 0.0 < lo <= hi <= 1.0:
                raise ValueError(f"ratio_range must satisfy 0 < lo <= hi <= 1, got {self.ratio_range}")
            self.ratio_range = (lo, hi)
        if self.mask_prob < 0 or self.random_prob < 0 or self.mask_prob + self.random_prob > 1.0 + 1e-9:
            raise ValueError("mask_prob and random_prob must be >= 0 and sum to <= 1")
        if not 0.0 < self.label_frac <= 0.5:
            raise ValueError(f"label_frac must be in (0, 0.5], got {self.label_frac}")
        if not 0.0 <= self.acc_momentum < 1.0:
            raise ValueError(f"acc_momentum must be in [0, 1), got {self.acc_momentum}")
        if self.freeze_every < 1:
            raise ValueError(f"freeze_every must be >= 1, got {self.freeze_every}")
        if not (0.0 <= self.freeze_top <= 1.0 and 0.0 <= self.unfreeze_frac <= 1.0):
            raise ValueError("freeze_top and unfreeze_frac must be in [0, 1]")
        if self.score_noise < 0:
            raise ValueError("score_noise must be >= 0")
        if not 0.0 <= self.explore <= 1.0:
            raise ValueError(f"explore must be in [0, 1], got {self.explore}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["ratio_range"] is not None:
            d["ratio_range"] = list(d["ratio_range"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StrategyConfig:
        unknown = unknown_fields(cls, d)
        if unknown:
            raise ValueError(f"unknown strategy config keys: {unknown}")
        d = dict(d)
        if d.get("ratio_range") is not None:
            d["ratio_range"] = tuple(d["ratio_range"])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> StrategyConfig:
        return cls.from_dict(json.loads(text))


# ----------------------------------------------------------------------------- strategies

class Strategy:
    """Shared parts: corruption, attribute weights, recovery loss, state."""

    name = "base"

    def __init__(self, config: StrategyConfig):
        self.config = config
        self.acc_ema: list[float] | None = None  # per attribute, None until the first step
        self.freeze_book: FreezeBook | None = None

    # ------------------------------------------------------------ weights
    def attr_weights(self, vocab_sizes: list[int], device: torch.device) -> torch.Tensor:
        """(A,) weights summing to 1, per ``config.attr_weighting``."""
        A = len(vocab_sizes)
        w = self.config.attr_weighting
        if w == "vocab":
            v = torch.tensor(vocab_sizes, dtype=torch.float32, device=device)
            return v / v.sum()
        if w == "inverse_accuracy" and self.acc_ema is not None:
            inv = 1.0 / torch.tensor(self.acc_ema, dtype=torch.float32, device=device).clamp_min(self.config.min_acc)
            return inv / inv.sum()
        return torch.full((A,), 1.0 / A, device=device)

    def _update_acc(self, acc: list[float]) -> None:
        if self.acc_ema is None:
            self.acc_ema = list(acc)
        else:
            m = self.config.acc_momentum
            self.acc_ema = [m * e + (1 - m) * a for e, a in zip(self.acc_ema, acc, strict=False)]

    def ratio_for(self, rng: BatchRandom) -> float | torch.Tensor:
        """``config.ratio``, or per-sample draws from ``config.ratio_range``."""
        rr = self.config.ratio_range
        if rr is None:
            return self.config.ratio
        return rr[0] + (rr[1] - rr[0]) * rng.per_sample()

    def frozen(self, batch: dict) -> torch.Tensor:
        if self.freeze_book is None:
            return torch.zeros(batch["tokens"].shape[:2], dtype=torch.bool, device=batch["tokens"].device)
        return self.freeze_book.frozen_mask(batch)

    # ------------------------------------------------------------ pieces of a step
    def corrupt(self, tokens: torch.Tensor, picked: torch.Tensor, vocab_sizes: list[int],
                rng: BatchRandom) -> torch.Tensor:
        return corrupt(tokens, picked, vocab_sizes, self.config.mask_prob, self.config.random_prob, rng)

    def recovery_loss(self, m: MidiBert, targets: torch.Tensor, logits: list[torch.Tensor] | None,
                      hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Weighted CE on the picked tokens. Returns (loss, per-token weighted CE (N,) detached,
        weights (A,), extras with 'acc' and 'ce_attr' (None when nothing was picked))."""
        w = self.attr_weights(m.config.vocab_sizes, targets.device)
        if targets.shape[0] == 0:  # nothing selectable in the whole batch
            return hidden.sum() * 0.0, torch.zeros(0, device=targets.device), w, {"acc": None}
        ce = per_token_ce(logits, targets)  # (N, A)
        loss = (ce.mean(0) * w).sum()
        with torch.no_grad():
            extras = {"acc": per_token_correct(logits, targets).float().mean(0), "ce_attr": ce.detach().mean(0)}
        return loss, (ce.detach() * w).sum(1), w, extras

    def _stats(self, m: MidiBert, loss: torch.Tensor, picked: torch.Tensor, extras: dict, w: torch.Tensor,
               extra: dict[str, torch.Tensor | float] | None = None) -> dict[str, float]:
        """One host sync for all numbers; also updates the accuracy EMA."""
        names = m.config.attributes
        A = len(names)
        dev = loss.device
        parts = [loss.detach().float().reshape(1), picked.sum().float().reshape(1), w.float()]
        has_acc = extras.get("acc") is not None
        if has_acc:
            parts += [extras["acc"].float(), extras["ce_attr"].float()]
        keys = list((extra or {}).keys())
        parts += [torch.as_tensor(extra[k], dtype=torch.float32, device=dev).detach().reshape(1) for k in keys]
        vals = torch.cat([p.to(dev) for p in parts]).tolist()
        stats = {"loss": vals[0], "n_picked": vals[1]}
        i = 2
        for a in names:
            stats[f"w_{a}"] = vals[i]
            i += 1
        if has_acc:
            acc = vals[i:i + A]
            i += A
            for a, v in zip(names, acc, strict=False):
                stats[f"acc_{a}"] = v
            for a in names:
                stats[f"ce_{a}"] = vals[i]
                i += 1
            self._update_acc(acc)
        for k in keys:
            stats[k] = vals[i]
            i += 1
        return stats

    # ------------------------------------------------------------ interface
    def train_module(self, model: nn.Module) -> nn.Module:
        """The module whose one call is a step's gradient pass (what the trainer wraps in DDP and
        gives to ``loss``): the model itself; the adversarial strategy's two passes wrap it."""
        return model

    def select(self, model, batch: dict, rng: BatchRandom | torch.Generator | None = None) -> torch.Tensor:
        """(B, L) bool: the tokens this strategy picks for the batch (never padding or frozen)."""
        raise NotImplementedError

    def loss(self, model, batch: dict, step_state: dict | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """random / bar: pick, corrupt 80/10/10, one recoverer pass, weighted CE."""
        m = unwrap(model)
        rng = BatchRandom(batch, step_state)
        tokens, am = batch["tokens"], attention_mask_of(batch)
        picked = self.select(model, batch, rng)
        # the recoverer's hidden states only at the picked rows (the last block runs there only)
        out = model(self.corrupt(tokens, picked, m.config.vocab_sizes, rng), am, heads_at=picked, only_heads_at=True)
        loss, _, w, extras = self.recovery_loss(m, tokens[picked], out.get("logits"), out["hidden"])
        return loss, self._stats(m, loss, picked, extras, w)

    def end_epoch(self, epoch: int, model, loader: Iterable[dict]) -> dict[str, float] | None:
        return None

    def validate(self, model, loader: Iterable[dict], ratio: float = 0.15, seed: int = 0,
                 max_batches: int | None = None) -> dict[str, float]:
        """Fixed-seed random-mask validation (identical for every strategy), see ``validate``."""
        return validate(model, loader, ratio, seed, max_batches)

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "config": self.config.to_dict(), "acc_ema": self.acc_ema,
                "freeze_book": None if self.freeze_book is None else self.freeze_book.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"state of strategy {state.get('name')!r} given to {self.name!r}")
        self.acc_ema = None if state.get("acc_ema") is None else [float(x) for x in state["acc_ema"]]
        if self.freeze_book is not None and state.get("freeze_book") is not None:
            self.freeze_book.load_state_dict(state["freeze_book"])


class RandomStrategy(Strategy):
    """MidiBERT: a uniformly random ``ratio`` of each sample's real tokens."""

    name = "random"

    def select(self, model, batch: dict, rng: BatchRandom | torch.Generator | None = None) -> torch.Tensor:
        rng = BatchRandom.of(batch, rng)
        am = attention_mask_of(batch)
        return top_ratio(rng.tokens(), am & ~self.frozen(batch), self.ratio_for(rng))


class BarStrategy(Strategy):
    """MusicBERT-style: whole bars, in random order, until >= ``ratio`` of the real tokens."""

    name = "bar"

    def select(self, model, batch: dict, rng: BatchRandom | torch.Generator | None = None) -> torch.Tensor:
        rng = BatchRandom.of(batch, rng)
        m = unwrap(model)
        if "bar" not in m.config.attributes:
            raise ValueError("the bar strategy needs a 'bar' attribute in the tokens")
        tokens = batch["tokens"]
        am = attention_mask_of(batch)
        selectable = am & ~self.frozen(batch)
        bar_step = (tokens[..., m.config.attributes.index("bar")] - N_SPECIAL).clamp_min(0) * am
        bar_idx = torch.cumsum(bar_step, dim=1)  # bar number of each token within the window
        per_sample_bars = (bar_idx.masked_fill(~am, 0).amax(dim=1) + 1).tolist()
        n_bars = max(per_sample_bars) if per_sample_bars else 1
        # a random priority per (sample, bar); tokens inherit their bar's priority
        prio = rng.rows([int(n) for n in per_sample_bars], n_bars)
        ratio = self.ratio_for(rng)
        sel_counts = torch.zeros((am.shape[0], n_bars), device=tokens.device).scatter_add_(
            1, bar_idx.clamp_max(n_bars - 1), selectable.float())
        order = torch.sort(prio, dim=1, descending=True, stable=True).indices
        counts_sorted = torch.gather(sel_counts, 1, order)
        before = torch.cumsum(counts_sorted, dim=1) - counts_sorted
        target = n_to_pick(selectable.sum(1), ratio)[:, None]
        # take bars (in priority order) while the count before adding them is below target
        take = torch.zeros_like(before, dtype=torch.bool).scatter_(1, order, before < target)
        return torch.gather(take, 1, bar_idx.clamp_max(n_bars - 1)) & selectable


class AdversarialStrategy(Strategy):
    """Zhao 2025: the masker picks the tokens it expects to be hardest (see module docstring)."""

    name = "adversarial"

    def __init__(self, config: StrategyConfig):
        super().__init__(config)
        if config.freeze:
            self.freeze_book = FreezeBook(config.freeze_every, config.freeze_top, config.unfreeze_frac,
                                          config.seed)

    def _pick(self, scores: torch.Tensor, batch: dict, rng: BatchRandom | torch.Generator | None,
              frozen: torch.Tensor | None = None) -> torch.Tensor:
        rng = BatchRandom.of(batch, rng)
        am = attention_mask_of(batch)
        selectable = am & ~(self.frozen(batch) if frozen is None else frozen)
        s = scores.detach().float()
        if self.config.score_noise > 0:
            s = s + self.config.score_noise * rng.tokens(normal=True)
        if self.config.explore <= 0:
            return top_ratio(s, selectable, self.ratio_for(rng))
        # explore: the masker picks round((1 - explore) * k) by score, the rest of the k are
        # drawn uniformly from the selectable tokens it did not pick.
        k = n_to_pick(selectable.sum(dim=1), self.ratio_for(rng))
        k_rand = torch.round(k.double() * self.config.explore).long()
        by_masker = top_k(s, selectable, k - k_rand)
        return by_masker | top_k(rng.tokens(), selectable & ~by_masker, k_rand)

    @torch.no_grad()
    def clean_scores(self, model, batch: dict) -> dict[str, torch.Tensor]:
        """The no-grad clean pass ('head' mode): the unwrapped model in eval mode (no dropout)."""
        m = unwrap(model)
        was = m.training
        m.eval()
        try:
            return m(batch["tokens"], attention_mask_of(batch), masker=True)
        finally:
            m.train(was)

    def select(self, model, batch: dict, rng: BatchRandom | torch.Generator | None = None) -> torch.Tensor:
        return self._pick(self.clean_scores(model, batch)["masker_logits"], batch, rng)

    def masker_targets(self, picked: torch.Tensor, token_loss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per sample, among its picked tokens: top ``label_frac`` by loss -> 1, bottom -> 0.

        ``token_loss`` (N,) is aligned with ``picked.nonzero()`` (row-major) order.
        Returns (labelled (B, L) bool, target (B, L) float); the target carries no graph.
        """
        token_loss = token_loss.detach()
        grid = torch.full(picked.shape, float("-inf"), device=picked.device)
        grid[picked] = token_loss.float()
        n = picked.sum(1)
        k = torch.where(n >= 2, torch.clamp(torch.round(n.double() * self.config.label_frac).long(), min=1),
                        torch.zeros_like(n))
        k = torch.minimum(k, n // 2)
        rank = ranks_desc(grid)  # picked tokens occupy ranks 0 .. n-1
        top = picked & (rank < k[:, None])
        bottom = picked & (rank >= (n - k)[:, None])
        return top | bottom, top.float()

    def train_module(self, model: nn.Module) -> AdversarialPasses:
        """The module the trainer wraps in DistributedDataParallel: this strategy's two passes
        around ``model`` (a MidiBert), so a step's gradient passes are all inside ONE call."""
        return AdversarialPasses(model, self)

    def _passes(self, model: nn.Module) -> nn.Module:
        """``model`` when it is (or wraps) this strategy's ``AdversarialPasses``; a new one around
        a bare MidiBert. A wrapper (DDP, ...) of the bare MidiBert is refused: the two passes of a
        step would be two calls of the wrapper (DDP cannot sync that)."""
        inner = model
        while inner is not None:
            if isinstance(inner, AdversarialPasses):
                if inner.strategy is not self:
                    raise ValueError("these adversarial passes belong to another strategy object")
                return model
            inner = getattr(inner, "module", None) or getattr(inner, "_orig_mod", None)
        if model is not unwrap(model):
            raise TypeError(f"the adversarial strategy got a {type(model).__name__} around the MidiBert; "
                            "wrap strategy.train_module(model) instead (its one call holds both passes)")
        return AdversarialPasses(model, self)

    def loss(self, model, batch: dict, step_state: dict | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Clean pass, pick, corrupt, recoverer pass (``AdversarialPasses``: one call), then the
        weighted recovery CE plus the masker BCE on per-sample loss-ranked targets."""
        m = unwrap(model)
        rng = BatchRandom(batch, step_state)
        tokens, am = batch["tokens"], attention_mask_of(batch)
        frozen = self.frozen(batch)
        out = self._passes(model)(batch, rng, frozen)
        picked = out["picked"]
        masker_logits = out["masker_logits"]
        rec_loss, tok_loss, w, extras = self.recovery_loss(m, tokens[picked], out.get("logits"), out["hidden"])
        labelled, target = self.masker_targets(picked, tok_loss)
        # mean BCE over the labelled tokens (0 with no graph-breaking when nothing is labelled)
        n_lab = labelled.sum()
        bce = F.binary_cross_entropy_with_logits(masker_logits.float(), target, reduction="none")
        masker_loss = (bce * labelled).sum() / n_lab.clamp_min(1)
        loss = rec_loss + self.config.masker_weight * masker_loss
        score_mean = (torch.sigmoid(masker_logits.detach().float()) * am).sum() / am.sum().clamp_min(1)
        stats = self._stats(m, loss, picked, extras, w, {
            "recovery_loss": rec_loss, "masker_loss": masker_loss, "n_labelled": n_lab,
            "score_mean": score_mean, "frozen_in_batch": frozen.sum()})
        return loss, stats

    def end_epoch(self, epoch: int, model, loader: Iterable[dict]) -> dict[str, float] | None:
        if self.freeze_book is None:
            return None
        return self.freeze_book.end_epoch(epoch, model, loader)


class AdversarialPasses(nn.Module):
    """One adversarial training step's gradient call: clean pass -> pick -> corrupt -> recoverer pass.

    Wraps the encoder (``self.module``, named like DDP's so ``model.unwrap`` finds the MidiBert)
    for one ``AdversarialStrategy`` (``strategy.train_module(model)``); under several ranks the
    trainer wraps THIS module in DistributedDataParallel, so every pass that carries gradient
    is inside the one call DDP sees. ``forward(batch, rng, frozen)`` with ``rng`` the step's
    ``BatchRandom`` and ``frozen`` the (B, L) frozen tokens returns ``hidden`` (recoverer pass, (N, D) at ``picked``),
    ``logits`` (per attribute, at ``picked``), ``masker_logits`` (B, L) of the clean tokens,
    ``picked`` and ``clean_hidden``. The strategy's ``masker_grad``:

    - ``'head'``: the clean pass runs without gradient in eval mode (``strategy.clean_scores``);
      the recoverer pass and the masker head on the (detached) clean hidden states carry the
      graph, so the masker BCE trains the masker head only.
    - ``'full'``: the clean pass runs in the model's mode with its graph; the masker BCE also
      reaches the shared backbone (about 2x the cost of a random step).
    """

    def __init__(self, model: nn.Module, strategy: AdversarialStrategy):
        super().__init__()
        self.module = model
        self.strategy = strategy

    def forward(self, batch: dict, rng: BatchRandom, frozen: torch.Tensor) -> dict[str, torch.Tensor]:
        s, model = self.strategy, self.module
        m = unwrap(model)
        tokens, am = batch["tokens"], attention_mask_of(batch)
        head_only = s.config.masker_grad == "head"
        # the clean pass: no gradient, eval mode ('head'), or with its graph in the model's mode ('full')
        clean = s.clean_scores(model, batch) if head_only else model(tokens, am, masker=True)
        picked = s._pick(clean["masker_logits"].detach(), batch, rng, frozen)
        out = model(s.corrupt(tokens, picked, m.config.vocab_sizes, rng), am, heads_at=picked, only_heads_at=True)
        # 'head': the masker head's graph starts at the clean pass's (detached) hidden states
        masker_logits = m.masker_logits(clean["hidden"]) if head_only else clean["masker_logits"]
        return {"hidden": out["hidden"], "logits": out["logits"], "masker_logits": masker_logits,
                "picked": picked, "clean_hidden": clean["hidden"]}


def make_strategy(name: str | StrategyConfig = "random", **cfg: Any) -> Strategy:
    """Build a strategy from a name (one of ``STRATEGIES``: 'random' | 'adversarial' | 'bar') and
    config values, or from a ``StrategyConfig``."""
    config = name if isinstance(name, StrategyConfig) else StrategyConfig(name=name, **cfg)
    return _CLASSES[config.name](config)


_CLASSES = {cls.name: cls for cls in (RandomStrategy, AdversarialStrategy, BarStrategy)}  # names.STRATEGIES
