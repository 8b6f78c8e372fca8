"""Mask primitives of the masking strategies, and the seeded validation masks.

Per-batch random draws (``BatchRandom``: one generator per sample from
``seeding.sample_generator`` under the Trainer), picking (``n_to_pick``, ``top_k``,
``top_ratio``), BERT corruption (``corrupt``), per-token CE / correctness, and the fixed-seed
validation masks (``validation_mask``) with the validation built on them (``validate``), which
``masker``, ``explain`` and ``baselines`` share. Imports numpy, torch, ``model`` (``unwrap``),
``tokenizer`` (the special ids) and ``seeding``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .model import unwrap
from .seeding import sample_generator
from .tokenizer import MASK_ID, N_SPECIAL, PAD_ID


class BatchRandom:
    """Random draws for one batch.

    Sharding-invariant mode (training under ``Trainer``): when ``step_state`` has
    ``seed`` and ``step`` and the batch has ``sample_index``, every sample gets its
    own generator ``seeding.sample_generator(seed, step, sample_index)`` and draws
    only as many numbers as it has real tokens (or bars), in a fixed order, so a
    sample's masks do not depend on which rank or batch it lands in.
    Otherwise: one ``generator`` (``step_state["generator"]`` or the argument) for
    the whole batch, or torch's global RNG when there is none.
    Numbers are drawn on the CPU for generators and moved to the batch's device.
    """

    def __init__(self, batch: dict, step_state: dict | None = None, generator: torch.Generator | None = None):
        self.am = attention_mask_of(batch)
        self.device = self.am.device
        self.generator = generator if generator is not None else _generator(step_state)
        self.gens: list[torch.Generator] | None = None
        self._am_host: torch.Tensor | None = None
        self._lengths: list[int] = []
        if (step_state is not None and batch.get("sample_index") is not None
                and step_state.get("seed") is not None and step_state.get("step") is not None):
            self.gens = [sample_generator(int(step_state["seed"]), int(step_state["step"]), int(i))
                         for i in batch["sample_index"].tolist()]

    @classmethod
    def of(cls, batch: dict, rng: BatchRandom | torch.Generator | None) -> BatchRandom:
        return rng if isinstance(rng, BatchRandom) else cls(batch, None, rng)

    def _draw(self, shape: tuple[int, ...], normal: bool, g: torch.Generator | None) -> torch.Tensor:
        fn = torch.randn if normal else torch.rand
        if g is None:
            return fn(shape, device=self.device)
        return fn(shape, generator=g, device=g.device).to(self.device)

    def tokens(self, *tail: int, normal: bool = False) -> torch.Tensor:
        """(B, L, *tail) numbers; per-sample mode fills only real positions (others 0)."""
        B, L = self.am.shape
        if self.gens is None:
            return self._draw((B, L) + tail, normal, self.generator)
        am = self._am_cpu()
        out = torch.zeros((B, L) + tail)
        for b, g in enumerate(self.gens):
            n = self._lengths[b]
            if n:
                out[b][am[b]] = self._draw((n,) + tail, normal, g).cpu()
        return out.to(self.device)

    def rows(self, counts: list[int], width: int) -> torch.Tensor:
        """(B, width) uniform numbers; per-sample mode draws counts[b] for row b (others 0)."""
        B = len(counts)
        if self.gens is None:
            return self._draw((B, width), False, self.generator)
        out = torch.zeros((B, width))
        for b, g in enumerate(self.gens):
            if counts[b]:
                out[b, : counts[b]] = self._draw((counts[b],), False, g).cpu()
        return out.to(self.device)

    def per_sample(self) -> torch.Tensor:
        """(B,) uniform numbers (batch mode: one number shared by the whole batch)."""
        B = self.am.shape[0]
        if self.gens is None:
            return self._draw((1,), False, self.generator).expand(B)
        return torch.cat([self._draw((1,), False, g).cpu() for g in self.gens]).to(self.device)

    def _am_cpu(self) -> torch.Tensor:
        if self._am_host is None:  # one device->host copy per batch
            self._am_host = self.am.cpu()
            self._lengths = self._am_host.sum(1).tolist()
        return self._am_host


def _generator(step_state: dict | None) -> torch.Generator | None:
    return None if step_state is None else step_state.get("generator")


def ranks_desc(values: torch.Tensor) -> torch.Tensor:
    """Rank of each entry in its row, 0 = largest (stable: ties keep the lower index first)."""
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(values.shape[1], device=values.device).expand_as(order))
    return ranks


def n_to_pick(n_selectable: torch.Tensor, ratio: float | torch.Tensor) -> torch.Tensor:
    """round(ratio * n) per sample (``ratio`` a float or a (B,) tensor), at least 1 where n >= 1."""
    if torch.is_tensor(ratio):
        ratio = ratio.to(device=n_selectable.device, dtype=torch.float64)
    k = torch.round(n_selectable.to(torch.float64) * ratio).long()
    return torch.minimum(torch.clamp(k, min=1), n_selectable) * (n_selectable > 0)


def top_k(scores: torch.Tensor, selectable: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(B, L) bool: per sample b, the ``k[b]`` highest-scoring selectable positions."""
    masked = scores.float().masked_fill(~selectable, float("-inf"))
    return (ranks_desc(masked) < k[:, None]) & selectable


def top_ratio(scores: torch.Tensor, selectable: torch.Tensor, ratio: float | torch.Tensor) -> torch.Tensor:
    """(B, L) bool: per sample, the ``n_to_pick`` highest-scoring selectable positions."""
    return top_k(scores, selectable, n_to_pick(selectable.sum(dim=1), ratio))


def corrupt(tokens: torch.Tensor, picked: torch.Tensor, vocab_sizes: list[int], mask_prob: float = 0.8,
            random_prob: float = 0.1, rng: BatchRandom | torch.Generator | None = None) -> torch.Tensor:
    """BERT corruption of the picked tokens: MASK (``mask_prob``), a random regular
    token drawn per attribute (``random_prob``), else unchanged. Returns a new tensor."""
    if not isinstance(rng, BatchRandom):  # batch-level draws: the mask does not matter
        rng = BatchRandom({"tokens": tokens}, None, rng)
    A = tokens.shape[-1]
    u = rng.tokens()
    to_mask = picked & (u < mask_prob)
    to_rand = picked & (u >= mask_prob) & (u < mask_prob + random_prob)
    out = tokens.masked_fill(to_mask[..., None], MASK_ID)
    if random_prob > 0:
        span = torch.tensor([v - N_SPECIAL for v in vocab_sizes], device=tokens.device, dtype=torch.float32)
        rnd = (rng.tokens(A) * span).long().clamp_max(span.long() - 1) + N_SPECIAL
        out = torch.where(to_rand[..., None], rnd, out)
    return out


def attention_mask_of(batch: dict) -> torch.Tensor:
    tokens = batch["tokens"]
    am = batch.get("attention_mask")
    if am is None:
        am = tokens[..., 0] != PAD_ID
    return am.bool()


def per_token_ce(logits: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """(N, A) cross-entropy of each picked token on each attribute."""
    return torch.stack([F.cross_entropy(lg.float(), targets[:, j], reduction="none")
                        for j, lg in enumerate(logits)], dim=1)


def per_token_correct(logits: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """(N, A) bool: top-1 prediction equals the target."""
    return torch.stack([lg.argmax(-1) == targets[:, j] for j, lg in enumerate(logits)], dim=1)


def validation_mask(attention_mask: torch.Tensor, batch_index: int, ratio: float = 0.15,
                    seed: int = 0) -> torch.Tensor:
    """Fixed random ``ratio`` of each sample's real tokens, from a CPU generator seeded by
    (seed, batch_index): identical across calls, strategies and devices."""
    # torch's CPU generator keeps 32 bits of a seed: mix (seed, batch_index) with a SeedSequence
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([int(seed), int(batch_index)]).generate_state(1)[0]))
    am = attention_mask.bool().cpu()
    scores = torch.rand(am.shape, generator=g)
    return top_ratio(scores, am, ratio).to(attention_mask.device)


@torch.no_grad()
def validation_step(model, batch: dict, batch_index: int, ratio: float = 0.15, seed: int = 0) -> dict[str, Any]:
    """Sums for one batch: picked tokens replaced by MASK (no 80/10/10), CE and correct per attribute.

    Returns {"n": int, "loss_sum": [A floats], "correct": [A ints], "ok": (n, A) bool tensor
    (per picked token, in ``picked``'s row-major order), "picked": (B, L) bool}; see ``validate``.
    """
    tokens = batch["tokens"]
    am = attention_mask_of(batch)
    picked = validation_mask(am, batch_index, ratio, seed)
    corrupted = tokens.masked_fill(picked[..., None], MASK_ID)
    out = model(corrupted, am, heads_at=picked, only_heads_at=True)
    targets = tokens[picked]
    ce = per_token_ce(out["logits"], targets)
    ok = per_token_correct(out["logits"], targets)
    return {"n": int(targets.shape[0]), "loss_sum": ce.sum(0).tolist(), "correct": ok.sum(0).tolist(),
            "ok": ok, "picked": picked}


def token_units(batch: dict, picked: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(piece_id, window_start) of each picked token, in ``picked``'s row-major order (the
    order of ``tokens[picked]``): the units a paired interval over pieces or windows draws."""
    rows = picked.nonzero()[:, 0].cpu()
    pid = batch["piece_id"].cpu()[rows] if "piece_id" in batch else torch.zeros_like(rows)
    start = batch["window_start"].cpu()[rows] if "window_start" in batch else rows
    return pid.numpy().astype(np.int64), start.numpy().astype(np.int64)


@torch.no_grad()
def validate(model, loader: Iterable[dict], ratio: float = 0.15, seed: int = 0,
             max_batches: int | None = None, keep_tokens: bool = False) -> dict[str, Any]:
    """Fixed-seed random-mask validation, the same for every strategy.

    Returns ``loss`` (mean over attributes of the per-attribute mean CE), ``acc``
    (mean over attributes), ``loss_<attr>``, ``acc_<attr>`` and ``n_tokens``; with
    ``keep_tokens`` also ``tokens``: {"correct": (n, A) bool, "piece": (n,), "window": (n,)}
    per scored token (its piece id and window start: see ``token_units``).
    The model is put in eval mode for the call and restored afterwards.
    """
    m = unwrap(model)
    attrs = m.config.attributes
    device = next(m.parameters()).device
    was_training = model.training
    model.eval()
    n, loss_sum, correct = 0, np.zeros(len(attrs)), np.zeros(len(attrs))
    kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    try:
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
            r = validation_step(model, batch, i, ratio, seed)
            n += r["n"]
            loss_sum += r["loss_sum"]
            correct += r["correct"]
            if keep_tokens:
                kept.append((r["ok"].cpu().numpy().astype(bool), *token_units(batch, r["picked"])))
    finally:
        model.train(was_training)
    stats: dict[str, Any] = {"n_tokens": float(n)}
    if keep_tokens:
        stats["tokens"] = {"correct": np.concatenate([k[0] for k in kept]) if kept else np.zeros((0, len(attrs)), bool),
                           "piece": np.concatenate([k[1] for k in kept]) if kept else np.zeros(0, np.int64),
                           "window": np.concatenate([k[2] for k in kept]) if kept else np.zeros(0, np.int64)}
    if n == 0:
        return stats
    for j, a in enumerate(attrs):
        stats[f"loss_{a}"] = float(loss_sum[j] / n)
        stats[f"acc_{a}"] = float(correct[j] / n)
    stats["loss"] = float(loss_sum.mean() / n)
    stats["acc"] = float(correct.mean() / n)
    return stats
