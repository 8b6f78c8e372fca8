"""BERT with relative positions of our own: the published MidiBERT / Adversarial-MidiBERT
encoders, exact and at the speed of their matmuls.

Rules (issue 26):

- ``BertEncoder`` is ``transformers``' ``BertModel`` (post-LayerNorm BERT) with the same
  state-dict key names (``embeddings.{word_embeddings,position_embeddings,token_type_embeddings,
  LayerNorm}``, ``encoder.layer.N.attention.self.{query,key,value,distance_embedding}``,
  ``attention.output.{dense,LayerNorm}``, ``intermediate.dense``, ``output.{dense,LayerNorm}``,
  ``pooler.dense``), so a published checkpoint loads into it unchanged. MidiBERT feeds its
  compound-token embeddings (after its own projection) as ``inputs_embeds``; ``input_ids`` work
  too when the config has a word-embedding table (``vocab_size > 0``).
- ``position_embedding_type``: ``"absolute"`` (a learned vector per index added to the input),
  ``"relative_key"`` or ``"relative_key_query"`` (Shaw et al. 2018 / Huang et al. 2020, as in
  transformers 4.x): each layer has ``distance_embedding``, a table of ``2 M - 1`` vectors of
  ``head_dim`` (M = ``max_position_embeddings``), row ``(l - r) + M - 1`` for query l and key r,
  and the attention logits are ``(q_l.k_r + q_l.e(l-r) [+ k_r.e(l-r)]) / sqrt(head_dim)`` plus
  the padding mask (``(1 - mask) * finfo.min`` like transformers). Sequences longer than M are
  refused (``ValueError``).
- How we compute it (``relative_attention``): never the [L, L, head_dim] tensor of
  transformers' einsum. For a block of b queries (or of b keys) the distances involved are one
  contiguous run of ``W = L + b - 1`` table rows, and each term is one GEMM of the block against
  that run, read through a strided view (the "skewing" of Music Transformer, Huang et al. 2018,
  without its padding copy): the query term reads the table flipped, so that its block gives rows
  ``s..s+b-1`` of the bias as ``Y[i, r - i + b - 1]``; the key term gives columns ``s..s+b-1`` as
  ``Y[j, l - j + b - 1]`` (see ``_relative_bias``). Blocks of ``REL_BLOCK`` cost
  ``L (L + b - 1) d`` multiply-adds per term, about half of one [L, 2L - 1] product at L = 1000.
  The tables are scaled by 1/sqrt(head_dim), so the sum is the relative part of the logits
  already divided; it is the additive float ``attn_mask`` of
  ``torch.nn.functional.scaled_dot_product_attention``, which scales q.k itself: the three terms
  are divided by sqrt(head_dim) together, as transformers does.
  Inference (no autograd): the bias is written block by block into a buffer this thread keeps
  and reuses (``_workspace``: a fresh 48 MB tensor per layer cost ~10 ms of page faults on
  the benchmark machine), for a group of heads at a time (``BIAS_GROUP_BYTES``), each group's
  bias read by SDPA right after it is built; the block products go through one reused scratch
  buffer that stays in the cache. Training: the blocks are concatenated (plain backward) and the
  bias is recomputed in the backward pass instead of being stored (``RECOMPUTE_IN_BACKWARD``),
  so a training step keeps no (B, H, L, L) tensor per layer.
  ``relative_position_bias`` returns the same bias (tests, explanations).
- Dropout on the attention probabilities (``attention_probs_dropout_prob``) only in training
  (SDPA's ``dropout_p``); hidden dropout as BERT's.
- The switch for checking: ``impl="transformers"`` (argument of ``BertEncoder``) or the
  environment variable ``SMU_RELATTN=transformers`` runs ``transformers``' own eager
  ``BertModel`` on the very same parameters (its modules are ours, shared, so gradients land
  on ours too). ``transformers >= 5`` has no relative positions (its ``BertModel`` silently
  drops ``distance_embedding``): asking it for a relative config raises
  ``TransformersRelativeError`` (an ``SMUCheckpointError``), never a warning. ``impl="ours"``
  (default) needs no ``transformers`` at all. ``smu_explain.model.MidiBert`` with
  ``position="relative_key_query"`` uses the same ``relative_attention``; there the switch
  computes the bias with transformers' algorithm (``relative_scores_reference``, the [L, L, d]
  einsum) instead.
- Loading: ``load_bert_state_dict(model, state_dict, prefix=)`` is strict: any missing,
  unexpected or mis-shaped key is an ``SMUCheckpointError`` listing them; a relative checkpoint
  loaded into an absolute model (its distance embeddings would be dropped) is one of those.
  The non-persistent buffers ``embeddings.position_ids`` / ``token_type_ids`` that old
  checkpoints carry are accepted only with their canonical values.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import SMUCheckpointError

POSITION_TYPES = ("absolute", "relative_key", "relative_key_query")
RELATIVE = ("relative_key", "relative_key_query")
IMPLS = ("ours", "transformers")
ENV_IMPL = "SMU_RELATTN"
REL_BLOCK = 128  # queries (or keys) per block of the relative-bias GEMMs (see the module docstring)
BIAS_GROUP_BYTES = 32 << 20  # inference: the most bias one SDPA call gets (heads are grouped; see _attend)
RECOMPUTE_IN_BACKWARD = True  # training: the bias is recomputed in backward, not stored (see relative_attention)


_WORKSPACE = threading.local()  # inference: this thread's reused bias buffers (see _workspace)


class TransformersRelativeError(SMUCheckpointError):
    """The installed ``transformers`` cannot run relative positions (5.x dropped them)."""


def default_impl(impl: str | None = None) -> str:
    """``impl``, else ``$SMU_RELATTN``, else ``"ours"``; anything else is a ``ValueError``."""
    impl = impl or os.environ.get(ENV_IMPL, "").strip() or "ours"
    if impl not in IMPLS:
        raise ValueError(f"relative attention impl must be one of {IMPLS}, got {impl!r} (from ${ENV_IMPL}?)")
    return impl


# ----------------------------------------------------------------------------- the bias

def _tracks_grad(*tensors: torch.Tensor) -> bool:
    """Whether autograd records this computation (else the in-place inference path runs)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _strided(y: torch.Tensor, size: tuple[int, int], stride: tuple[int, int], offset: int) -> torch.Tensor:
    """The (..., *size) view of the last two dims of contiguous ``y`` whose element (i, j) is y's
    flat element ``offset + i * stride[0] + j * stride[1]`` of each leading index (the "skewing"
    of Music Transformer, Huang et al. 2018, without its padding copy: no two elements coincide)."""
    lead = y.shape[:-2]
    size2 = y.shape[-2] * y.shape[-1]
    strides = [size2 * math.prod(lead[i + 1:]) for i in range(len(lead))]
    return y.as_strided((*lead, *size), (*strides, *stride), y.storage_offset() + offset)


def _relative_bias(q: torch.Tensor, k: torch.Tensor, table: torch.Tensor, max_position: int, kind: str,
                   block: int, scale: float, mask: torch.Tensor | None = None,
                   out: torch.Tensor | None = None) -> torch.Tensor:
    """bias[l, r] = (q_l . e(l - r) [+ k_r . e(l - r)]) * scale [+ mask[r]], (B, H, L, L).

    e(delta) = table[delta + M - 1]. For a block of b queries l = s + i (or of b keys r = s + j)
    the distances seen are one run of W = L + b - 1 consecutive table rows, and each term is one
    product of the block against that run, read through a strided view:
      query term: the table flipped (``t'(m) = e(-m)``, so that a row of the bias reads it
        forwards): Y = q_blk @ run'^T (b, W); bias[s + i, r] = Y[i, r - i + b - 1]
        (strides W - 1, 1);
      key term: Y = k_blk @ run^T (b, W); bias[l, s + j] = Y[j, l - j + b - 1] (a block of
        columns, strides 1, W - 1).
    Both tables come scaled, so q and k are used as they are. With autograd the blocks are
    concatenated (a plain backward). Without it everything is written into ``out`` (allocated
    when None): the key term's columns first, then the query term's rows are added (long
    contiguous rows: the cheap direction), every block's product in one reused scratch buffer,
    small enough to stay in the cache between the product and its copy."""
    B, H, L, d = q.shape
    M = max_position
    grad = _tracks_grad(q, k, table)
    t_key = (table * scale).to(q.dtype)
    t_query = t_key.flip(0)

    def product(x: torch.Tensor, t: torch.Tensor, s: int, b: int, scratch: torch.Tensor | None = None):
        """Y = x_blk @ t[M - s - b : M - s + L - 1]^T for all heads at once, (B, H, b, W)."""
        W = L + b - 1
        flat, run = x[..., s: s + b, :].reshape(-1, d), t[M - s - b: M - s + L - 1]
        y = torch.mm(flat, run.t()) if scratch is None else torch.mm(
            flat, run.t(), out=scratch[: B * H * b * W].view(B * H * b, W))
        return y.view(B, H, b, W)

    def rows(y: torch.Tensor, b: int) -> torch.Tensor:  # (B, H, b, L)
        return _strided(y, (b, L), (L + b - 2, 1), b - 1)

    def cols(y: torch.Tensor, b: int) -> torch.Tensor:  # (B, H, L, b)
        return _strided(y, (L, b), (1, L + b - 2), b - 1)

    sizes = [(s, min(block, L - s)) for s in range(0, L, block)]
    if grad:
        bias = torch.cat([rows(product(q, t_query, s, b), b) for s, b in sizes], dim=-2)
        if kind == "relative_key_query":
            bias = bias + torch.cat([cols(product(k, t_key, s, b), b) for s, b in sizes], dim=-1)
        return bias if mask is None else bias + mask.to(bias.dtype)
    if out is None:
        out = q.new_empty((B, H, L, L))
    b0 = sizes[0][1]
    scratch = q.new_empty(B * H * b0 * (L + b0 - 1))
    if kind == "relative_key_query":
        for s, b in sizes:
            out[..., s: s + b] = cols(product(k, t_key, s, b, scratch), b)
        for s, b in sizes:
            out[..., s: s + b, :].add_(rows(product(q, t_query, s, b, scratch), b))
    else:
        for s, b in sizes:
            out[..., s: s + b, :] = rows(product(q, t_query, s, b, scratch), b)
    if mask is not None:
        out.add_(mask.to(out.dtype))
    return out


def _check_relative(q: torch.Tensor, table: torch.Tensor, max_position: int, kind: str) -> None:
    if kind not in RELATIVE:
        raise ValueError(f"kind must be one of {RELATIVE}, got {kind!r}")
    L, d = q.shape[-2], q.shape[-1]
    if max_position < L:
        raise ValueError(f"sequence length {L} exceeds max_position_embeddings={max_position}")
    if table.shape != (2 * max_position - 1, d):
        raise ValueError(f"distance table must be ({2 * max_position - 1}, {d}), got {tuple(table.shape)}")


def relative_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, table: torch.Tensor, max_position: int,
                       kind: str = "relative_key_query", mask: torch.Tensor | None = None, dropout_p: float = 0.0,
                       block: int = REL_BLOCK) -> torch.Tensor:
    """softmax((q k^T + q.e(l-r) [+ k.e(l-r)]) / sqrt(d) + mask) v, as transformers 4.x computes
    it, through SDPA. q, k, v (B, H, L, d); ``mask``: additive float (B, 1, 1, L) or None.

    With autograd (training) the bias is not kept for the backward pass but recomputed there
    (``RECOMPUTE_IN_BACKWARD``: activation checkpointing of this function, same dropout mask), so
    training keeps no (B, H, L, L) tensor per layer, like SDPA without a bias."""
    _check_relative(q, table, max_position, kind)
    if RECOMPUTE_IN_BACKWARD and _tracks_grad(q, k, v, table):
        from torch.utils.checkpoint import checkpoint
        return checkpoint(_attend, q, k, v, table, max_position, kind, mask, dropout_p, block, use_reentrant=False)
    return _attend(q, k, v, table, max_position, kind, mask, dropout_p, block)


def _workspace(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A flat buffer of n elements for the inference bias, reused by every layer and call of this
    thread (``_WORKSPACE``, grown to the largest size asked; it dies with its thread). A fresh
    (B, H, L, L) tensor per layer costs the kernel's page faults (~10 ms for 48 MB here, a fifth
    of the layer's attention); SDPA's output never aliases it. Made outside inference mode, so
    that it can be written in place under ``no_grad`` and ``inference_mode`` alike."""
    bufs = _WORKSPACE.__dict__.setdefault("bufs", {})
    buf = bufs.get((dtype, device))
    if buf is None or buf.numel() < n:
        bufs.pop((dtype, device), None)  # free the old one before allocating the larger
        with torch.inference_mode(False):
            buf = bufs[(dtype, device)] = torch.empty(n, dtype=dtype, device=device)
    return buf[:n]


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, table: torch.Tensor, max_position: int, kind: str,
            mask: torch.Tensor | None, dropout_p: float, block: int) -> torch.Tensor:
    scale = 1.0 / math.sqrt(q.shape[-1])
    if _tracks_grad(q, k, v, table):
        bias = _relative_bias(q, k, table, max_position, kind, block, scale, mask)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p)
    # Inference: the bias lives in this thread's workspace, a group of heads at a time (at most
    # BIAS_GROUP_BYTES, at least one head), each group's bias read by SDPA right after it is built.
    B, H, L, _ = q.shape
    group = max(1, min(H, BIAS_GROUP_BYTES // max(1, B * L * L * q.element_size())))
    bias = _workspace(B * group * L * L, q.dtype, q.device).view(B, group, L, L)
    if group == H:
        _relative_bias(q, k, table, max_position, kind, block, scale, mask, out=bias)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p)
    out = q.new_empty((B, L, H, q.shape[-1])).transpose(1, 2)  # the layout SDPA returns (callers merge heads for free)
    for h in range(0, H, group):
        g = slice(h, min(H, h + group))
        part = bias[:, : g.stop - h]
        _relative_bias(q[:, g], k[:, g], table, max_position, kind, block, scale, mask, out=part)
        out[:, g] = F.scaled_dot_product_attention(q[:, g], k[:, g], v[:, g], attn_mask=part, dropout_p=dropout_p)
    return out


def relative_position_bias(q: torch.Tensor, k: torch.Tensor, table: torch.Tensor, max_position: int,
                           kind: str = "relative_key_query", scale: float | None = None,
                           block: int = REL_BLOCK) -> torch.Tensor:
    """The relative-position logits (B, H, L, L) of transformers 4.x's BertSelfAttention,
    times ``scale`` (default 1/sqrt(head_dim)): ``q_l.e(l-r)`` plus, for
    ``"relative_key_query"``, ``k_r.e(l-r)``; ``e(delta) = table[delta + max_position - 1]``.
    q, k: (B, H, L, d); table: (2 * max_position - 1, d). (``relative_attention`` uses the same
    computation.)"""
    _check_relative(q, table, max_position, kind)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return _relative_bias(q, k, table, max_position, kind, block, scale)


def relative_scores_reference(q: torch.Tensor, k: torch.Tensor, table: torch.Tensor, max_position: int,
                              kind: str = "relative_key_query", scale: float | None = None) -> torch.Tensor:
    """The same as ``relative_position_bias`` by transformers 4.x's algorithm (the [L, L, d]
    tensor of distance embeddings and two einsums): slow, for checking (``SMU_RELATTN=transformers``)."""
    L, d = q.shape[-2], q.shape[-1]
    if max_position < L:
        raise ValueError(f"sequence length {L} exceeds max_position_embeddings={max_position}")
    pos = torch.arange(L, device=q.device)
    emb = table[pos[:, None] - pos[None, :] + max_position - 1].to(q.dtype)  # (L, L, d)
    s = torch.einsum("bhld,lrd->bhlr", q, emb)
    if kind == "relative_key_query":
        s = s + torch.einsum("bhrd,lrd->bhlr", k, emb)
    return s * (1.0 / math.sqrt(d) if scale is None else scale)


def extended_mask(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, L) 1/0 mask -> (B, 1, 1, L) additive float mask ``(1 - m) * finfo(dtype).min``
    (transformers' ``get_extended_attention_mask``), or None when nothing is masked."""
    if attention_mask is None:
        return None
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be (B, L), got {tuple(attention_mask.shape)}")
    if bool(attention_mask.bool().all()):
        return None
    m = attention_mask.to(dtype)
    return ((1.0 - m) * torch.finfo(dtype).min)[:, None, None, :]


# ----------------------------------------------------------------------------- config

@dataclass
class BertEncoderConfig:
    """The fields of ``transformers.BertConfig`` that shape a BERT encoder (same names)."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    position_embedding_type: str = "relative_key_query"
    type_vocab_size: int = 2
    vocab_size: int = 0  # 0: no word-embedding table (inputs_embeds only)
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    hidden_act: str = "gelu"
    add_pooling_layer: bool = False
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        if self.position_embedding_type not in POSITION_TYPES:
            raise ValueError(f"position_embedding_type must be one of {POSITION_TYPES}, "
                             f"got {self.position_embedding_type!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by "
                             f"num_attention_heads={self.num_attention_heads}")
        if self.hidden_act not in ("gelu", "relu", "gelu_new"):
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def relative(self) -> bool:
        return self.position_embedding_type in RELATIVE

    @classmethod
    def from_hf(cls, hf_config: Any, add_pooling_layer: bool = False) -> BertEncoderConfig:
        """From a ``transformers.BertConfig`` (or anything with its attribute names)."""
        kw = {f.name: getattr(hf_config, f.name) for f in fields(cls)
              if f.name != "add_pooling_layer" and hasattr(hf_config, f.name)}
        return cls(**kw, add_pooling_layer=add_pooling_layer)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _activation(name: str):
    if name == "gelu":
        return F.gelu
    if name == "gelu_new":
        return lambda x: F.gelu(x, approximate="tanh")
    return F.relu


# ----------------------------------------------------------------------------- modules

class BertSelfAttention(nn.Module):
    """query / key / value (+ distance_embedding) and the attention itself (SDPA)."""

    def __init__(self, c: BertEncoderConfig):
        super().__init__()
        self.n_heads, self.head_dim = c.num_attention_heads, c.head_dim
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)
        self.kind = c.position_embedding_type
        self.max_position = c.max_position_embeddings
        self.dropout_p = c.attention_probs_dropout_prob
        if c.relative:
            self.distance_embedding = nn.Embedding(2 * c.max_position_embeddings - 1, c.head_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        return x.view(B, L, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, L, D = h.shape
        q, k, v = self._heads(self.query(h)), self._heads(self.key(h)), self._heads(self.value(h))
        p = self.dropout_p if self.training else 0.0
        if self.kind in RELATIVE:
            y = relative_attention(q, k, v, self.distance_embedding.weight, self.max_position, self.kind, mask, p)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else mask.to(q.dtype),
                                               dropout_p=p)
        return y.transpose(1, 2).reshape(B, L, D)


class _DenseNorm(nn.Module):
    """``dense`` -> dropout -> ``LayerNorm(x + residual)`` (BertSelfOutput / BertOutput)."""

    def __init__(self, d_in: int, c: BertEncoderConfig):
        super().__init__()
        self.dense = nn.Linear(d_in, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class _Attention(nn.Module):
    def __init__(self, c: BertEncoderConfig):
        super().__init__()
        self.self = BertSelfAttention(c)
        self.output = _DenseNorm(c.hidden_size, c)


class _Intermediate(nn.Module):
    def __init__(self, c: BertEncoderConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)


class BertLayer(nn.Module):
    """Post-LN BERT layer: LN(x + Attn(x)); LN(h + W2 act(W1 h))."""

    def __init__(self, c: BertEncoderConfig):
        super().__init__()
        self.attention = _Attention(c)
        self.intermediate = _Intermediate(c)
        self.output = _DenseNorm(c.intermediate_size, c)
        self.act = _activation(c.hidden_act)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        h = self.attention.output(self.attention.self(x, mask), x)
        return self.output(self.act(self.intermediate.dense(h)), h)


class _Embeddings(nn.Module):
    def __init__(self, c: BertEncoderConfig):
        super().__init__()
        if c.vocab_size > 0:
            self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)
        self.absolute = c.position_embedding_type == "absolute"

    def forward(self, inputs_embeds: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        L = inputs_embeds.shape[1]
        if token_type_ids is None:
            x = inputs_embeds + self.token_type_embeddings.weight[0]
        else:
            x = inputs_embeds + self.token_type_embeddings(token_type_ids)
        if self.absolute:
            x = x + self.position_embeddings.weight[:L]
        return self.dropout(self.LayerNorm(x))


class _Encoder(nn.Module):
    def __init__(self, c: BertEncoderConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(c) for _ in range(c.num_hidden_layers))


class _Pooler(nn.Module):
    def __init__(self, c: BertEncoderConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(h[:, 0]))


class BertEncoder(nn.Module):
    """transformers' ``BertModel`` (encoder only: no decoder, cache or head masks), same keys.

    ``forward(inputs_embeds=, attention_mask=, input_ids=, token_type_ids=)`` -> last hidden
    state (B, L, hidden); ``pooled(hidden)`` is BERT's pooler (when ``add_pooling_layer``).
    ``impl``: ``"ours"`` | ``"transformers"`` (default: ``$SMU_RELATTN`` or ours; see the module
    docstring)."""

    def __init__(self, config: BertEncoderConfig, impl: str | None = None):
        super().__init__()
        self.config = config
        self.impl = default_impl(impl)
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(config)
        self.pooler = _Pooler(config) if config.add_pooling_layer else None
        self._hf: list[nn.Module] = []  # the transformers twin, built on first use (not a submodule)
        if self.impl == "transformers":
            check_transformers_relative(config)

    def forward(self, inputs_embeds: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                input_ids: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        if (inputs_embeds is None) == (input_ids is None):
            raise ValueError("give exactly one of inputs_embeds and input_ids")
        if input_ids is not None:
            if self.config.vocab_size <= 0:
                raise ValueError("this encoder has no word embeddings (vocab_size=0): give inputs_embeds")
            inputs_embeds = self.embeddings.word_embeddings(input_ids)
        B, L, _ = inputs_embeds.shape
        if self.config.max_position_embeddings < L:
            raise ValueError(f"sequence length {L} exceeds max_position_embeddings="
                             f"{self.config.max_position_embeddings}")
        if self.impl == "transformers":
            am = torch.ones(B, L, device=inputs_embeds.device) if attention_mask is None else attention_mask
            out = self.transformers_twin()(inputs_embeds=inputs_embeds, attention_mask=am,
                                           token_type_ids=token_type_ids)
            return out.last_hidden_state
        h = self.embeddings(inputs_embeds, token_type_ids)
        mask = extended_mask(attention_mask, h.dtype)
        for layer in self.encoder.layer:
            h = layer(h, mask)
        return h

    def pooled(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.pooler is None:
            raise ValueError("this encoder was built without a pooler (add_pooling_layer=False)")
        return self.pooler(hidden)

    def transformers_twin(self) -> nn.Module:
        """transformers' eager ``BertModel`` whose modules are this encoder's (shared parameters)."""
        if not self._hf:
            self._hf.append(transformers_bert(self.config, share_with=self))
        return self._hf[0]


# ----------------------------------------------------------------------------- transformers

def transformers_major() -> int:
    import transformers
    return int(transformers.__version__.split(".")[0])


def check_transformers_relative(config: BertEncoderConfig) -> None:
    """Refuse (``TransformersRelativeError``) a relative config on transformers >= 5, whose
    ``BertModel`` accepts it but drops the distance embeddings."""
    if config.relative and transformers_major() >= 5:
        import transformers
        raise TransformersRelativeError(
            "transformers", f"transformers {transformers.__version__} has no relative positions "
            f"(position_embedding_type={config.position_embedding_type!r}): its BertModel would drop "
            "every distance_embedding; use impl='ours' or transformers>=4.57,<5")


def transformers_bert(config: BertEncoderConfig, share_with: BertEncoder | None = None) -> nn.Module:
    """transformers' eager ``BertModel`` for ``config`` (refused on transformers >= 5 for relative
    configs). With ``share_with``, its modules are replaced by that encoder's (same parameters)."""
    check_transformers_relative(config)
    from transformers import BertConfig, BertModel
    hf_cfg = BertConfig(**{k: v for k, v in config.to_dict().items() if k != "add_pooling_layer"},
                        attn_implementation="eager")
    hf_cfg.vocab_size = max(config.vocab_size, 1)
    if share_with is None:
        model = BertModel(hf_cfg, add_pooling_layer=config.add_pooling_layer)
    else:
        with torch.device("meta"):
            model = BertModel(hf_cfg, add_pooling_layer=config.add_pooling_layer)
        for name, mod in share_with.named_modules():
            if name and not list(mod.children()) and isinstance(mod, (nn.Linear, nn.Embedding, nn.LayerNorm)):
                parent, _, leaf = name.rpartition(".")
                setattr(model.get_submodule(parent), leaf, mod)
        if config.vocab_size <= 0:
            model.embeddings.word_embeddings = nn.Embedding(1, config.hidden_size)
        for buf, value in (("position_ids", torch.arange(config.max_position_embeddings)[None]),
                           ("token_type_ids", torch.zeros(1, config.max_position_embeddings, dtype=torch.long))):
            model.embeddings.register_buffer(buf, value, persistent=False)
        left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
        if left:
            raise RuntimeError(f"transformers' BertModel has tensors this encoder lacks: {left}")
        model.to(next(share_with.parameters()).device)
        model.train(share_with.training)
    _check_distance_embeddings(model, config)
    return model


def _check_distance_embeddings(model: nn.Module, config: BertEncoderConfig) -> None:
    """A relative config whose built model has no ``distance_embedding`` in some layer is refused."""
    if not config.relative:
        return
    lacking = [i for i, layer in enumerate(model.encoder.layer)
               if not hasattr(layer.attention.self, "distance_embedding")]
    if lacking:
        raise TransformersRelativeError(
            type(model).__name__, f"layers {lacking} have no distance_embedding: this BertModel would drop "
            f"the {config.position_embedding_type} distance embeddings of the checkpoint")


# ----------------------------------------------------------------------------- loading

_CANONICAL_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")


def load_bert_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], prefix: str = "",
                         source: str = "<state_dict>") -> None:
    """Load the keys of ``state_dict`` under ``prefix`` (e.g. ``"bert."``) into ``model``, strictly:
    any missing, unexpected or mis-shaped tensor raises ``SMUCheckpointError`` listing them (a
    relative checkpoint into an absolute model: its ``distance_embedding`` keys are unexpected).
    Keys outside ``prefix`` are not this model's and are left alone."""
    own = model.state_dict()
    given = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    problems = []
    for key in _CANONICAL_BUFFERS:
        if key in given and key not in own:
            t = given.pop(key)
            n = t.shape[-1] if t.dim() else 0
            want = torch.arange(n)[None] if key.endswith("position_ids") else torch.zeros(1, n, dtype=torch.long)
            if t.shape != want.shape or not torch.equal(t.long().cpu(), want):
                problems.append(f"{prefix}{key}: not the canonical buffer")
    missing = sorted(set(own) - set(given))
    unexpected = sorted(set(given) - set(own))
    shapes = sorted(f"{prefix}{k}: {tuple(given[k].shape)} in the checkpoint, {tuple(own[k].shape)} in the model"
                    for k in set(own) & set(given) if tuple(given[k].shape) != tuple(own[k].shape))
    if missing:
        problems.append("missing: " + ", ".join(prefix + k for k in missing))
    if unexpected:
        problems.append("unexpected (would be dropped): " + ", ".join(prefix + k for k in unexpected))
    if shapes:
        problems.append("shape mismatch: " + "; ".join(shapes))
    if problems:
        raise SMUCheckpointError(source, "weights do not fit the model: " + " | ".join(problems))
    model.load_state_dict(given, strict=True)
