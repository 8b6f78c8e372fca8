"""The MidiBERT-style encoder: per-attribute embeddings, a Transformer encoder,
one output head per attribute and the masker head.

Rules (see docs/ARCHITECTURE.md "Model"):

- Input is a (B, L, A) LongTensor of compound tokens (one row per note, one
  column per attribute, id 0 = PAD, 1 = MASK, regular ids from 2).
- Each attribute has its own embedding table (``emb_dim`` wide); the A vectors
  are concatenated and projected to ``d_model``.
- Positions (``config.position``):
  * ``"rope"`` (default for new models): rotary position encoding (Su et al. 2021)
    in every attention layer: q and k of each head are rotated by an angle
    proportional to the note's index in the window (rotate-half form, frequencies
    ``rope_base ** (-2i / head_dim)``), so q.k depends on the *relative* distance
    of two notes; nothing is added to the embeddings. This deviates from
    MidiBERT's learned absolute positions on purpose: with absolute positions a
    note cannot easily attend to "the note next to me" (each of the max_len
    vectors must learn it on its own) and recovery stayed at the level of
    no-model rules for thousands of steps; rotary positions give that for free
    (measured in docs/PRETRAINING.md).
  * ``"absolute"`` (MidiBERT, and every checkpoint saved before ``position``
    existed): learned absolute position embeddings, one per index
    ``0 .. max_len-1``, added after the projection.
  * ``"relative_key_query"`` (the published MidiBERT / Adversarial-MidiBERT scheme, in our
    pre-LN blocks): every attention layer has ``distance_embedding``, a table of
    ``2 max_len - 1`` vectors of head_dim, and adds ``q_l.e(l-r) + k_r.e(l-r)`` to ``q_l.k_r``
    before the 1/sqrt(head_dim) scaling; computed by ``relattn.relative_attention`` (strided
    views of blocked matmuls + SDPA, never the [L, L, head_dim] tensor). The switch
    ``SMU_RELATTN=transformers`` (read when the model is built) computes the same bias with
    transformers 4.x's algorithm instead (``relattn.relative_scores_reference``), for checking.
  Sequences longer than ``max_len`` are refused (window them first, see
  ``Tokenizer.windows``).
- Architecture (``config.arch``): ``"smu"`` (default) is this project's pre-LayerNorm encoder
  below; ``"bert"`` is the published MidiBERT / Adversarial-MidiBERT encoder (issue 20):
  attribute embeddings scaled by ``emb_scale`` (sqrt(emb_dim) for them), concatenated,
  ``in_proj``, then ``relattn.BertEncoder`` (transformers' post-LayerNorm ``BertModel`` on
  ``inputs_embeds``, same key names under ``bert.``, positions ``"absolute"``,
  ``"relative_key"`` or ``"relative_key_query"``, computed exactly and fast by
  :mod:`smu_explain.relattn`), no final LayerNorm; the same heads and masker head. Imported
  checkpoints (``smu import``, :mod:`smu_explain.published`) are this architecture.
- Initialisation (``config.init``, training only): ``"torch"`` (default for new
  models) keeps PyTorch's own initialisation (Linear: Kaiming-uniform, Embedding:
  N(0, 1)), measured to learn fastest here; ``"normal"`` is the GPT-2/BERT scheme
  (N(0, 0.02), residual projections scaled by 1/sqrt(2 n_layers)) that older
  checkpoints were trained with.
- Encoder blocks are pre-LayerNorm (x + Attn(LN(x)); x + MLP(LN(x))), GELU MLP,
  a final LayerNorm. Attention is ``torch.nn.functional.scaled_dot_product_attention``
  (the fused kernels) with q, k, v from a single Linear. Padding keys are
  excluded with a boolean mask that is only built when the batch has padding.
  There is no dropout on the attention probabilities (it would force the slow
  unfused attention path); dropout applies to the embeddings and to each
  residual branch.
- ``heads(hidden)``: one Linear per attribute, ``hidden`` may be (B, L, D) or
  already gathered (N, D) rows (training computes the heads only on picked tokens).
- ``masker(hidden)``: linear d_model -> masker_hidden, ReLU, linear -> 1, sigmoid:
  one score in (0, 1) per token. ``masker_logits`` is the same before the sigmoid
  (use it with ``binary_cross_entropy_with_logits``).
- The model knows nothing of files: saving and loading are ``checkpoint.py``'s alone
  (``checkpoint.save_checkpoint(folder, model)`` / ``checkpoint.load_model(folder)``).
  ``checkpoint_info`` is plain data a loader sets (the metadata saved with the model).

Imports: torch, ``relattn``, ``io``; never checkpoint, explain, the trainer, the CLI or the app.
"""

from __future__ import annotations

import json
import math
import operator
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import relattn
from .io import unknown_fields

# ----------------------------------------------------------------------------- config

@dataclass
class ModelConfig:
    """Hyper-parameters of ``MidiBert``; JSON-serialisable with ``to_dict``/``from_dict``."""

    vocab_sizes: list[int]
    attributes: list[str]
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 1024
    emb_dim: int = 128  # per attribute
    max_len: int = 512
    dropout: float = 0.1
    masker_hidden: int = 256
    layer_norm_eps: float = 1e-5
    position: str = "rope"  # "rope" | "absolute" | "relative_key_query" (see the module docstring)
    rope_base: float = 10000.0
    init: str = "torch"  # "torch" | "normal" (training only)
    arch: str = "smu"  # "smu" (pre-LN, this project's) | "bert" (the published post-LN BERT)
    emb_scale: float = 1.0  # "bert": attribute embeddings are multiplied by this (sqrt(emb_dim) published)
    type_vocab_size: int = 2  # "bert": BERT's token-type table (only type 0 is used)

    POSITIONS = ("rope", "absolute", "relative_key_query")
    ARCHS = ("smu", "bert")
    BERT_POSITIONS = ("absolute", "relative_key", "relative_key_query")
    INITS = ("torch", "normal")
    # What a config.json written before a field existed meant (old checkpoints load as trained).
    LEGACY_DEFAULTS = {"position": "absolute", "init": "normal"}

    # Named sizes: tiny (< 1M parameters, tests/demos), small (4 x 256), base (12 x 768, the paper's).
    SIZES = {
        "tiny": dict(d_model=64, n_layers=2, n_heads=2, d_ff=256, emb_dim=32),
        "small": dict(d_model=256, n_layers=4, n_heads=4, d_ff=1024, emb_dim=128),
        "base": dict(d_model=768, n_layers=12, n_heads=12, d_ff=3072, emb_dim=256),
    }

    def __post_init__(self) -> None:
        _validate_model_config(self)

    @classmethod
    def named(cls, name: str, vocab_sizes: list[int], attributes: list[str], **overrides: Any) -> ModelConfig:
        """A named size ('tiny' | 'small' | 'base'); keyword overrides win (e.g. max_len=1024)."""
        if name not in cls.SIZES:
            raise ValueError(f"unknown model size {name!r}; choose one of {sorted(cls.SIZES)}")
        kw = dict(cls.SIZES[name])
        kw.update(overrides)
        return cls(vocab_sizes=list(vocab_sizes), attributes=list(attributes), **kw)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        unknown = unknown_fields(cls, d)
        if unknown:
            raise ValueError(f"unknown model config keys: {unknown}")
        return cls(**{**cls.LEGACY_DEFAULTS, **d})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls.from_dict(json.loads(text))


# Upper bounds of a plausible config (far above "base"); anything beyond is refused before
# a model is built, so a few bytes of config.json cannot ask for hundreds of GB.
MAX_CONFIG = {"d_model": 16384, "n_layers": 256, "n_heads": 256, "d_ff": 65536, "emb_dim": 8192,
              "max_len": 1 << 20, "masker_hidden": 16384, "vocab": 1 << 20}
MAX_PARAMETERS = 4e9


def _config_int(name: str, value: Any, low: int, high: int) -> int:
    """``value`` as an int in ``[low, high]`` (bools, floats and strings are refused)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        v = operator.index(value)  # int and numpy integers; not 4.5, "4" or True
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if not low <= v <= high:
        raise ValueError(f"{name} must be in {low}..{high}, got {v}")
    return int(v)


def _config_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _validate_model_config(c: ModelConfig) -> None:
    """Type and range checks of every ModelConfig field (ValueError naming the field)."""
    if not isinstance(c.vocab_sizes, (list, tuple)) or not isinstance(c.attributes, (list, tuple)):
        raise ValueError("vocab_sizes and attributes must be lists")
    # every vocabulary needs PAD, MASK and at least one value
    c.vocab_sizes = [_config_int("vocab_sizes[]", v, 3, MAX_CONFIG["vocab"]) for v in c.vocab_sizes]
    if not all(isinstance(a, str) for a in c.attributes):
        raise ValueError(f"attributes must be strings, got {c.attributes!r}")
    c.attributes = [str(a) for a in c.attributes]
    if len(c.vocab_sizes) != len(c.attributes) or not c.attributes:
        raise ValueError(
            f"vocab_sizes ({len(c.vocab_sizes)}) and attributes ({len(c.attributes)}) "
            "must be non-empty and of equal length")
    for name in ("d_model", "n_layers", "n_heads", "d_ff", "emb_dim", "max_len", "masker_hidden"):
        setattr(c, name, _config_int(name, getattr(c, name), 1, MAX_CONFIG[name]))
    if c.d_model % c.n_heads:
        raise ValueError(f"d_model={c.d_model} is not divisible by n_heads={c.n_heads}")
    c.dropout = _config_float("dropout", c.dropout)
    if not 0.0 <= c.dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1): {c.dropout}")
    c.layer_norm_eps = _config_float("layer_norm_eps", c.layer_norm_eps)
    if not 0.0 < c.layer_norm_eps < 1.0:
        raise ValueError(f"layer_norm_eps must be in (0, 1): {c.layer_norm_eps}")
    if c.arch not in c.ARCHS:
        raise ValueError(f"arch must be one of {c.ARCHS}, got {c.arch!r}")
    positions = c.BERT_POSITIONS if c.arch == "bert" else c.POSITIONS
    if c.position not in positions:
        raise ValueError(f"position must be one of {positions} (arch {c.arch!r}), got {c.position!r}")
    c.emb_scale = _config_float("emb_scale", c.emb_scale)
    if not 0.0 < c.emb_scale < 1e6:
        raise ValueError(f"emb_scale must be in (0, 1e6): {c.emb_scale}")
    c.type_vocab_size = _config_int("type_vocab_size", c.type_vocab_size, 1, 1024)
    if c.init not in c.INITS:
        raise ValueError(f"init must be one of {c.INITS}, got {c.init!r}")
    c.rope_base = _config_float("rope_base", c.rope_base)
    if not 1.0 < c.rope_base < 1e9:
        raise ValueError(f"rope_base must be in (1, 1e9): {c.rope_base}")
    if c.position == "rope" and (c.d_model // c.n_heads) % 2:
        raise ValueError(f"rotary positions need an even head_dim, got {c.d_model // c.n_heads}")
    n = estimated_parameters(c)
    if n > MAX_PARAMETERS:
        raise ValueError(f"about {n:.3g} parameters (d_model={c.d_model}, n_layers={c.n_layers}, d_ff={c.d_ff}, "
                         f"max_len={c.max_len}) is implausibly large (> {MAX_PARAMETERS:.0e})")


def estimated_parameters(c: ModelConfig) -> int:
    """Rough parameter count of ``MidiBert(c)`` (embeddings, blocks, heads), without building it."""
    a = len(c.vocab_sizes)
    emb = sum(c.vocab_sizes) * c.emb_dim + a * c.emb_dim * c.d_model + c.max_len * c.d_model
    block = 4 * c.d_model * c.d_model + 2 * c.d_model * c.d_ff
    if c.position == "relative_key_query" and getattr(c, "arch", "smu") != "bert":  # our blocks' distance tables
        block += (2 * c.max_len - 1) * (c.d_model // c.n_heads)
    if c.arch == "bert" and c.position.startswith("relative"):
        block += (2 * c.max_len - 1) * (c.d_model // c.n_heads)
    heads = sum(c.vocab_sizes) * c.d_model + c.d_model * c.masker_hidden
    return int(emb + c.n_layers * block + heads)


# ----------------------------------------------------------------------------- blocks

def rope_tables(max_len: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each (max_len, head_dim): the rotary angles pos * base**(-2i/head_dim),
    repeated over the two halves of a head (rotate-half form). Computed on the CPU whatever the
    default device (a module moves its buffers with it): under ``torch.device("meta")``, where
    checkpoint.py builds a model to read its shapes, meta arithmetic would import torch._dynamo."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64, device="cpu") / head_dim)
    ang = torch.arange(max_len, dtype=torch.float64, device="cpu")[:, None] * inv_freq[None, :]
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos().float(), ang.sin().float()


def take_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """x (B, L, D) at the positions ``rows`` (B, R) of each sequence -> (B, R, D)."""
    return x.gather(1, rows[..., None].expand(-1, -1, x.shape[-1]))


def selected_rows(sel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A (B, L) bool selection as (B, R) positions per sequence (its True positions in order, R the
    most any sequence has, the rest filled with unselected positions) and the (B, R) bool of
    the filled-in entries that are real: ``take_rows(x, pos)[real]`` == ``x[sel]``, same order."""
    counts = sel.sum(1)
    R = int(counts.max()) if sel.numel() else 0
    pos = torch.argsort((~sel).to(torch.int8), dim=1, stable=True)[:, :R]
    return pos, torch.arange(R, device=sel.device) < counts[:, None]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (..., L, hd) by the angles of its positions (cos, sin: (L, hd))."""
    h = x.shape[-1] // 2
    rot = torch.cat([-x[..., h:], x[..., :h]], dim=-1)
    return x * cos.to(x.dtype) + rot * sin.to(x.dtype)


class SelfAttention(nn.Module):
    """Multi-head self-attention, fused qkv projection, SDPA kernel, no attention-prob dropout;
    q and k rotated by their positions when ``config.position == "rope"``; a relative-position
    bias (``relattn``) when ``config.position == "relative_key_query"``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.rope = cfg.position == "rope"
        if self.rope:
            cos, sin = rope_tables(cfg.max_len, cfg.head_dim, cfg.rope_base)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.relative = cfg.position == "relative_key_query"
        if self.relative:
            self.max_len = cfg.max_len
            self.distance_embedding = nn.Embedding(2 * cfg.max_len - 1, cfg.head_dim)
            self.rel_impl = relattn.default_impl()  # $SMU_RELATTN, read once here

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, L, D = x.shape
        # (B, L, 3, H, hd) -> three (B, H, L, hd) views; SDPA accepts the strided views.
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        if self.rope:
            cos, sin = self.rope_cos[:L], self.rope_sin[:L]
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return q, k, v

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self._qkv(x)
        y = self._relative(q, k, v, mask) if self.relative else F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(B, L, D))

    def forward_at(self, x: torch.Tensor, mask: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor:
        """``forward(x, mask)`` at ``rows`` ((B, R) positions per sequence; ``take_rows``), to rounding,
        with queries only there: the keys and values of every position, the query projection,
        attention and output projection of R rows per sequence (``position`` absolute or rope;
        relative positions are not handled here)."""
        B, L, D = x.shape
        H, R = self.n_heads, rows.shape[1]
        w, b = self.qkv.weight, self.qkv.bias
        q = F.linear(take_rows(x, rows), w[:D], b[:D]).view(B, R, H, D // H).transpose(1, 2)
        k, v = F.linear(x, w[D:], b[D:]).view(B, L, 2, H, D // H).permute(2, 0, 3, 1, 4)
        if self.rope:
            q = apply_rope(q, self.rope_cos[rows][:, None], self.rope_sin[rows][:, None])
            k = apply_rope(k, self.rope_cos[:L], self.rope_sin[:L])
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(B, R, D))

    @staticmethod
    def _additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
        """The boolean key mask as an additive float mask (0 kept, finfo.min excluded)."""
        if mask is None:
            return None
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)

    def _relative(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        table, kind = self.distance_embedding.weight, "relative_key_query"
        add = self._additive(mask, q.dtype)
        if self.rel_impl == "transformers":
            bias = relattn.relative_scores_reference(q, k, table, self.max_len, kind)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias if add is None else bias + add)
        return relattn.relative_attention(q, k, v, table, self.max_len, kind, add)

    def attention_probs(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The attention probabilities (B, H, L, L) that ``forward`` uses (in float64; the fused
        kernel returns none): softmax(q k^T / sqrt(head_dim)) with padding keys excluded (plus the
        relative-position logits with ``position="relative_key_query"``)."""
        q, k, _ = self._qkv(x)
        w = (q.double() @ k.double().transpose(-1, -2)) / math.sqrt(q.shape[-1])
        if self.relative:
            w = w + relattn.relative_position_bias(q.double(), k.double(), self.distance_embedding.weight.double(),
                                                   self.max_len)
        if mask is not None:
            w = w.masked_fill(~mask, float("-inf"))
        return torch.softmax(w, dim=-1)


class Block(nn.Module):
    """Pre-LN Transformer encoder block."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.attn = SelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.fc = nn.Linear(cfg.d_model, cfg.d_ff)
        self.fc_out = nn.Linear(cfg.d_ff, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), mask))
        x = x + self.drop(self.fc_out(F.gelu(self.fc(self.ln2(x)))))
        return x

    def forward_at(self, x: torch.Tensor, mask: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor:
        """``forward(x, mask)`` at ``rows`` ((B, R) positions per sequence), to rounding, the feed-forward
        and all but the keys and values of attention computed there only (``SelfAttention.forward_at``)."""
        x = take_rows(x, rows) + self.drop(self.attn.forward_at(self.ln1(x), mask, rows))
        return x + self.drop(self.fc_out(F.gelu(self.fc(self.ln2(x)))))

    def attention_probs(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The attention probabilities (B, H, L, L) this block's ``forward(x, mask)`` uses
        (``SelfAttention.attention_probs`` of the normalised input), for explanations."""
        return self.attn.attention_probs(self.ln1(x), mask)


# ----------------------------------------------------------------------------- model

class MidiBert(nn.Module):
    """Compound-token BERT encoder with per-attribute heads and a masker head."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config
        self.embeddings = nn.ModuleList(nn.Embedding(v, c.emb_dim) for v in c.vocab_sizes)
        self.in_proj = nn.Linear(c.emb_dim * len(c.vocab_sizes), c.d_model)
        self.drop = nn.Dropout(c.dropout)
        if c.arch == "bert":
            from .relattn import BertEncoder, BertEncoderConfig

            self.pos = None
            self.bert = BertEncoder(BertEncoderConfig(
                hidden_size=c.d_model, num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
                intermediate_size=c.d_ff, max_position_embeddings=c.max_len, position_embedding_type=c.position,
                type_vocab_size=c.type_vocab_size, vocab_size=0, layer_norm_eps=c.layer_norm_eps,
                hidden_dropout_prob=c.dropout, attention_probs_dropout_prob=c.dropout))
            self.blocks = nn.ModuleList()  # the layers are self.bert's
            self.ln_f = nn.Identity()  # post-LN: BERT's layers end normalised
        else:
            self.pos = nn.Embedding(c.max_len, c.d_model) if c.position == "absolute" else None
            self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layers))
            self.ln_f = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)
        self.out_heads = nn.ModuleList(nn.Linear(c.d_model, v) for v in c.vocab_sizes)
        self.masker_head = nn.Sequential(
            nn.Linear(c.d_model, c.masker_hidden), nn.ReLU(), nn.Linear(c.masker_hidden, 1))
        if c.init == "normal":
            self.apply(self._init_weights)
            # GPT-2 style: scale the residual output projections by 1/sqrt(2 * n_layers).
            for blk in self.blocks:
                for lin in (blk.attn.proj, blk.fc_out):
                    nn.init.normal_(lin.weight, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layers))
        self.checkpoint_info: dict[str, Any] = {}
        self.register_buffer("_vocab_limits", torch.tensor(c.vocab_sizes), persistent=False)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    # --------------------------------------------------------------- sizes
    def num_parameters(self, non_embedding: bool = False) -> int:
        """Parameter count; ``non_embedding`` leaves out the embedding tables (attributes + positions)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= sum(e.weight.numel() for e in self.embeddings)
            n -= self.pos.weight.numel() if self.pos is not None else 0
            n -= sum(b.attn.distance_embedding.weight.numel() for b in self.blocks if b.attn.relative)
        return n

    # --------------------------------------------------------------- forward pieces
    def encode(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None,
               rows: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, L, A) int64, attention_mask (B, L) bool (True = real token) -> hidden (B, L, D).

        Hidden states at padding positions are computed but meaningless. ``rows``: only the hidden
        states at these positions, (B, R, D), equal to the whole pass's there to rounding; (R,) the
        same positions in every sequence, (B, R) per sequence. The last block then computes
        everything but its keys and values at those rows only (``Block.forward_at``: about
        1/n_layers less work for a few rows; models with relative positions or ``arch="bert"`` run
        the whole pass and take the rows).
        """
        if tokens.dim() != 3 or tokens.shape[-1] != len(self.embeddings):
            raise ValueError(f"tokens must be (B, L, {len(self.embeddings)}), got {tuple(tokens.shape)}")
        B, L, _ = tokens.shape
        if self.config.max_len < L:
            raise ValueError(f"sequence length {L} exceeds max_len={self.config.max_len}; window the piece first")
        if tokens.device.type == "cpu":  # on GPUs the embedding's device assert catches this (no sync here)
            too_big = tokens.amax(dim=(0, 1)) >= self._vocab_limits
            if bool(too_big.any()) or bool((tokens < 0).any()):
                j = int(too_big.nonzero()[0, 0]) if bool(too_big.any()) else -1
                what = f"attribute {self.config.attributes[j]!r} has ids >= {self.config.vocab_sizes[j]}" \
                    if j >= 0 else "negative token ids"
                raise ValueError(f"tokens out of the model's vocabulary: {what}; "
                                 "was the piece encoded with the tokenizer saved with this model?")
        x = torch.cat([emb(tokens[..., j]) for j, emb in enumerate(self.embeddings)], dim=-1)
        return self.encode_embedded(x, attention_mask, rows)

    def embed_notes(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenated attribute embeddings (B, L, A * emb_dim) -> block input (B, L, D):
        the projection, plus absolute positions where the model has them, then dropout
        (``arch="bert"``: the scaled projection only; BERT's embedding layer does the rest)."""
        if self.config.arch == "bert":
            return self.in_proj(x * self.config.emb_scale)
        h = self.in_proj(x)
        if self.pos is not None:
            h = h + self.pos.weight[: x.shape[1]]
        return self.drop(h)

    def encode_embedded(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None,
                        rows: torch.Tensor | None = None) -> torch.Tensor:
        """The rest of ``encode`` from concatenated attribute embeddings x (B, L, A * emb_dim)."""
        B, L, _ = x.shape
        if self.config.max_len < L:
            raise ValueError(f"sequence length {L} exceeds max_len={self.config.max_len}; window the piece first")
        if rows is not None:
            rows = torch.as_tensor(rows, dtype=torch.long, device=x.device)
            rows = rows.expand(B, -1) if rows.dim() == 1 else rows
            if rows.dim() != 2 or rows.shape[0] != B:
                raise ValueError(f"rows must be (R,) or ({B}, R) positions, got {tuple(rows.shape)}")
            # on GPUs gather's device assert catches rows out of range (no sync here)
            if rows.device.type == "cpu" and rows.numel() and not (int(rows.min()) >= 0 and int(rows.max()) < L):
                raise ValueError(f"rows must be positions in 0..{L - 1}")
        h = self.embed_notes(x)
        if self.config.arch == "bert":
            if attention_mask is not None and attention_mask.shape != (B, L):
                raise ValueError(f"attention_mask must be ({B}, {L}), got {tuple(attention_mask.shape)}")
            h = self.bert(inputs_embeds=h, attention_mask=attention_mask)
            return h if rows is None else take_rows(h, rows)
        mask = self._attn_mask(attention_mask, B, L)
        whole = rows is None or not self.blocks or self.blocks[-1].attn.relative
        last = len(self.blocks) if whole else len(self.blocks) - 1
        for blk in self.blocks[:last]:
            h = blk(h, mask)
        if rows is None:
            return self.ln_f(h)
        return self.ln_f(take_rows(h, rows) if whole else self.blocks[-1].forward_at(h, mask, rows))

    @staticmethod
    def _attn_mask(attention_mask: torch.Tensor | None, B: int, L: int) -> torch.Tensor | None:
        """(B, 1, 1, L) boolean key mask for SDPA, or None when nothing is padded (fast path)."""
        if attention_mask is None:
            return None
        if attention_mask.shape != (B, L):
            raise ValueError(f"attention_mask must be ({B}, {L}), got {tuple(attention_mask.shape)}")
        am = attention_mask.bool()
        if bool(am.all()):
            return None
        # A sequence made only of padding would give rows of -inf (NaN); let it attend everywhere.
        am = am | ~am.any(dim=1, keepdim=True)
        return am[:, None, None, :]

    def heads(self, hidden: torch.Tensor) -> list[torch.Tensor]:
        """hidden (..., D) -> one logits tensor (..., V_j) per attribute."""
        return [head(hidden) for head in self.out_heads]

    def masker_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (..., D) -> masker logits (...)."""
        return self.masker_head(hidden).squeeze(-1)

    def masker(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (..., D) -> masker scores in (0, 1), shape (...)."""
        return torch.sigmoid(self.masker_logits(hidden))

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                heads_at: torch.Tensor | None = None, heads: bool = False, masker: bool = False,
                only_heads_at: bool = False) -> dict[str, Any]:
        """One encoder pass: ``hidden`` (B, L, D) and, on request, ``logits``: per-attribute
        logits at all positions when ``heads=True`` ((B, L, V_j) each) or only at the rows
        where the (B, L) bool ``heads_at`` is True ((N, V_j) each, row order =
        ``hidden[heads_at]``); ``masker_logits`` (B, L) of this pass when ``masker=True``.
        ``only_heads_at`` (with ``heads_at``, for evaluation): the hidden states only at those
        rows, ``hidden`` (N, D) = the whole pass's ``hidden[heads_at]`` to rounding, the last
        block computed there only (``encode``'s ``rows``).

        Strategies that need more than one pass per step own a module around this one
        (``masker.AdversarialPasses``) and the trainer wraps that in DDP.
        """
        if only_heads_at:
            if heads_at is None or heads or masker:
                raise ValueError("only_heads_at needs heads_at, and no heads=True or masker=True")
            pos, real = selected_rows(heads_at)
            hidden = self.encode(tokens, attention_mask, rows=pos)[real]
            return {"hidden": hidden, "logits": self.heads(hidden)}
        hidden = self.encode(tokens, attention_mask)
        out: dict[str, Any] = {"hidden": hidden}
        if heads_at is not None:
            out["logits"] = self.heads(hidden[heads_at])
        elif heads:
            out["logits"] = self.heads(hidden)
        if masker:
            out["masker_logits"] = self.masker_logits(hidden)
        return out


# ----------------------------------------------------------------------------- helpers

def unwrap(model: nn.Module) -> MidiBert:
    """The MidiBert inside a DDP / torch.compile wrapper or a strategy's step module (``.module``
    or ``._orig_mod``, followed down), or the model itself; any module with a ``ModelConfig`` as
    ``.config`` and MidiBert's forward contract counts."""
    while True:
        if isinstance(model, MidiBert) or isinstance(getattr(model, "config", None), ModelConfig):
            return model
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            raise TypeError(f"expected a MidiBert (possibly wrapped), got {type(model).__name__}")
        model = inner
