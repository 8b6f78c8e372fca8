"""Importing published checkpoints: MidiBERT-Piano (CP) and Adversarial-MidiBERT (Octuple).

``smu import SRC --out DIR`` (:func:`import_checkpoint`) reads a publisher's weights and
writes this project's checkpoint folder (``config.json`` + ``model.safetensors`` +
``tokenizer.json``), which the app and every command then open like any other model.

Rules (issue 20):

- **Sources.** ``SRC`` is a Hugging Face snapshot folder (``model.safetensors``, or
  ``pytorch_model.bin``, plus an optional ``config.json``) or one file: ``.safetensors``, or
  ``.ckpt`` / ``.pth`` / ``.pt`` / ``.bin`` read with ``torch.load(..., weights_only=True)``
  only (never unpickled otherwise: a pickle that names a class is refused by torch's
  restricted loader). A training checkpoint's ``{"state_dict": ...}`` (MidiBERT's
  ``model.ckpt``) is unwrapped; ``module.`` (DataParallel) is stripped.
- **Architecture** (both publishers): per-attribute embeddings ``word_emb.{j}.lut`` scaled by
  ``sqrt(emb_dim)``, concatenated, ``in_linear`` to the hidden size, a ``transformers``
  ``BertModel`` (post-LayerNorm BERT) on ``inputs_embeds`` with the checkpoint's position
  scheme (``relative_key_query`` for both; computed by :mod:`smu_explain.relattn`, which is
  exact on any ``transformers`` version), then optional heads: ``mask_lm.proj.{j}`` (one Linear
  per attribute: recovery) and the adversarial masker ``linear`` (Dropout, Linear(hidden, 256),
  ReLU, Linear(256, 1), Sigmoid). In this project that is ``MidiBert`` with
  ``ModelConfig(arch="bert")``.
- **Shapes come from the weights**: attributes and vocabulary sizes from ``word_emb``, the
  hidden size from ``in_linear``, layers, the feed-forward size, and for relative positions
  ``max_position_embeddings`` and the head count from ``distance_embedding``
  (``2 M - 1`` rows of ``head_dim``). ``config.json``, when there is one, may only confirm them:
  a value that contradicts the weights is an error ("a config that lies").
- **One mapping table** (:data:`KEY_MAP`) renames the publisher's keys to ours; nothing else is
  renamed. Every tensor is used, except the ones :data:`UNUSED` lists, which the publishers'
  own ``forward`` never reads (BERT's ``word_embeddings``, its pooler, Adversarial-MidiBERT's
  ``attention_linear``); they are dropped by name, reported by the import and recorded in
  ``config.json``'s ``"imported"`` section. Any other missing, unexpected or mis-shaped tensor is
  an ``SMUCheckpointError`` listing them; nothing is written then.
- **Vocabulary ids.** This project's ids are PAD = 0, MASK = 1, values from 2. The publishers
  put PAD and MASK after the values (MidiBERT: ``Bar New, Bar Continue, <PAD>, <MASK>``;
  PianoBART's Octuple: values, then PAD, MASK, SOS, EOS, ...). The import permutes the rows of
  every embedding table and every recovery head so that our id ``i`` is their id
  ``perm[i]`` (:func:`vocab_permutation`); the model computes exactly the same function.
  MidiBERT's bar attribute maps "Bar Continue" to our bar step 0 and "Bar New" to step 1
  (``TokenizerConfig(max_bar_skip=1)``); its other CP bins are this project's defaults
  (16 positions per bar, pitch 22..107, 64 durations of 1/8 quarter).
- Heads a checkpoint does not carry (MidiBERT's ``model.ckpt`` holds no recovery heads; neither
  publisher's pre-training file holds the masker) are written as zeros and marked in
  ``"imported"``: the app says so instead of showing what an untrained head would show.
- Non-finite weights, a memory need above what the machine has, unknown layouts: typed errors.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SMUCheckpointError

__all__ = ["KEY_MAP", "UNUSED", "ImportReport", "import_checkpoint", "read_state_dict", "vocab_permutation",
           "convert_state_dict", "LAYOUTS"]

WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pth", ".pt", ".bin")
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
MAX_SOURCE_BYTES = 8 * 1024 ** 3

# The publisher's key (after the model prefix) -> ours. {j} / {rest} are copied through.
KEY_MAP = (
    (r"word_emb\.(\d+)\.lut\.weight", r"embeddings.\1.weight"),
    (r"in_linear\.(weight|bias)", r"in_proj.\1"),
    (r"bert\.(.+)", r"bert.\1"),
    (r"mask_lm\.proj\.(\d+)\.(weight|bias)", r"out_heads.\1.\2"),
    (r"(?:masker\.)?linear\.1\.(weight|bias)", r"masker_head.0.\1"),
    (r"(?:masker\.)?linear\.3\.(weight|bias)", r"masker_head.2.\1"),
)
# Tensors the publishers' forward never reads (their models pass inputs_embeds, use token-level
# hidden states only, and the tw_attention of Adversarial-MidiBERT is commented out in forward).
UNUSED = {
    r"bert\.embeddings\.word_embeddings\.weight": "BERT's word embeddings: the model is fed inputs_embeds",
    r"bert\.embeddings\.position_ids": "a constant buffer (0, 1, 2, ...)",
    r"bert\.embeddings\.token_type_ids": "a constant buffer (zeros)",
    r"bert\.pooler\.dense\.(weight|bias)": "BERT's pooler: not used by token or sequence heads of these models",
    r"attention_linear\.\d+\.(weight|bias)": "Adversarial-MidiBERT's tw_attention: not called in its forward",
}


@dataclass(frozen=True)
class Layout:
    """What a publisher's attribute set means here."""

    name: str
    their_attributes: tuple[str, ...]
    attributes: tuple[str, ...]  # this project's names, same order
    vocab_sizes: tuple[int, ...]
    strategy: str  # the pre-training strategy of the publisher
    tokenizer: str  # "cp" (this project's Tokenizer) or "octuple"
    description: str


LAYOUTS = {
    "midibert-cp": Layout(
        "midibert-cp", ("Bar", "Position", "Pitch", "Duration"), ("bar", "position", "pitch", "duration"),
        (4, 18, 88, 66), "random", "cp",
        "MidiBERT-Piano (Chou et al. 2021): CP tokens, random-mask pre-training"),
    "adversarial-octuple": Layout(
        "adversarial-octuple", ("Bar", "Position", "Instrument", "Pitch", "Duration", "Velocity", "TimeSig", "Tempo"),
        ("bar", "position", "instrument", "pitch", "duration", "velocity", "timesig", "tempo"),
        (), "adversarial", "octuple",
        "Adversarial-MidiBERT (Zhao 2025): Octuple tokens, adversarial pre-training"),
}


@functools.lru_cache(maxsize=1)
def _octuple():
    """PianoBART's Octuple vocabulary (read once)."""
    from .octuple import OctupleTokenizer

    return OctupleTokenizer()


def vocab_permutation(layout: str, attribute: int, size: int) -> list[int]:
    """``perm`` with our id ``i`` = the publisher's id ``perm[i]`` for one attribute.

    Both publishers put PAD and MASK right after the ``n`` regular values (ids n, n+1) and any
    other specials after them; ours are 0 and 1, values from 2, the rest kept in their order.
    MidiBERT's bar is the one reordered attribute: ours 2 = same bar = "Bar Continue" (1),
    ours 3 = new bar = "Bar New" (0)."""
    from .octuple import ids_permutation

    if layout == "midibert-cp":
        return [2, 3, 1, 0] if attribute == 0 else ids_permutation(size - 2, size)
    if layout == "adversarial-octuple":
        return ids_permutation(_octuple().n_values[attribute], size)
    raise SMUCheckpointError(layout, "unknown layout")


# ----------------------------------------------------------------------------- reading

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _weights_file(src: Path) -> tuple[Path, dict[str, Any]]:
    """(weights file, config.json dict or {}) of a source folder or file."""
    if src.is_dir():
        for name in HF_WEIGHTS:
            if (src / name).is_file():
                cfg = src / "config.json"
                meta: Any = {}
                if cfg.is_file():
                    from .checkpoint import read_json_file

                    meta = read_json_file(cfg)
                    if not isinstance(meta, dict):
                        raise SMUCheckpointError(cfg, "config.json is not a JSON object")
                return src / name, meta
        raise SMUCheckpointError(src, f"no {' or '.join(HF_WEIGHTS)} in the folder")
    if not src.is_file():
        raise SMUCheckpointError(src, "no such file or folder")
    if src.suffix.lower() not in WEIGHT_SUFFIXES:
        raise SMUCheckpointError(src, f"not a weights file (expected one of {', '.join(WEIGHT_SUFFIXES)})")
    return src, {}


def _check_zip_records(path: Path) -> None:
    """A torch zip archive is read only when its records are stored uncompressed (as ``torch.save``
    writes them): a compressed record could inflate to far more memory than the file's size, and
    ``torch.load`` reads every record whole before anything can be checked."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return  # a legacy (non-zip) pickle: its size bounds what it holds
    try:
        with zipfile.ZipFile(path) as z:
            packed = [i.filename for i in z.infolist() if i.compress_type != zipfile.ZIP_STORED]
            total = sum(i.file_size for i in z.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise SMUCheckpointError(path, f"a damaged zip archive ({e})") from None
    if packed:
        raise SMUCheckpointError(path, f"{len(packed)} compressed record(s) ({packed[0][:80]}, ...): torch.save "
                                       "writes them uncompressed, and a compressed one may inflate far beyond the "
                                       "file's size; re-save it with torch.save")
    if total > MAX_SOURCE_BYTES:
        raise SMUCheckpointError(path, f"its records hold {total / 1024 ** 3:.1f} GiB, more than "
                                       f"{MAX_SOURCE_BYTES / 1024 ** 3:.0f} GiB")


def read_state_dict(src: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """(state dict of tensors, config.json dict, weights file) of a publisher's checkpoint.

    ``.safetensors`` is read by safetensors; anything else by ``torch.load(weights_only=True)``
    (restricted unpickler: tensors and plain containers only). ``{"state_dict": ...}`` is unwrapped.
    ``SMUCheckpointError`` for a missing, empty, oversize, truncated or malicious file."""
    import torch

    from .checkpoint import checked_path

    path, meta = _weights_file(checked_path(src))
    size = path.stat().st_size
    if size == 0:
        raise SMUCheckpointError(path, "the weights file is empty")
    if size > MAX_SOURCE_BYTES:
        raise SMUCheckpointError(path, f"the weights file is larger than {MAX_SOURCE_BYTES / 1024 ** 3:.0f} GiB")
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise SMUCheckpointError(path, f"corrupt or unreadable safetensors file ({e})") from None
    else:
        import pickle
        import warnings
        import zipfile

        from .weights import pickle_refusal

        _check_zip_records(path)
        try:
            with warnings.catch_warnings():  # torch's notes on pickle protocols are not the user's business
                warnings.simplefilter("ignore")
                state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=False)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError,
                zipfile.BadZipFile, UnicodeDecodeError, IndexError, KeyError) as e:
            raise SMUCheckpointError(path, pickle_refusal(e, path)) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    elif isinstance(state, dict) and isinstance(state.get("model_state_dict"), dict):
        state = state["model_state_dict"]
    if not isinstance(state, dict) or not state:
        raise SMUCheckpointError(path, "holds no state dict (a mapping of tensor names to tensors)")
    bad = [str(k)[:80] for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise SMUCheckpointError(path, f"holds entries that are not named tensors: {', '.join(bad[:5])}")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    return state, meta, path


# ----------------------------------------------------------------------------- converting

@dataclass
class ImportReport:
    """What an import found (printed by ``smu import``, stored in config.json's ``"imported"``)."""

    source: str
    sha256: str
    layout: str
    description: str
    parameters: int
    attributes: list[str]
    vocab_sizes: list[int]
    hidden: int
    layers: int
    heads: int
    max_len: int
    position: str
    has_recovery_heads: bool
    has_masker: bool
    dropped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def lines(self) -> list[str]:
        out = [f"source: {self.source} (sha256 {self.sha256[:12]})",
               f"layout: {self.layout} - {self.description}",
               f"parameters: {self.parameters:,} ({self.layers} layers x {self.hidden}, {self.heads} heads, "
               f"sequence {self.max_len}, positions {self.position})",
               f"attributes: {', '.join(f'{a} ({v})' for a, v in zip(self.attributes, self.vocab_sizes, strict=False))}",
               f"recovery heads: {'yes' if self.has_recovery_heads else 'no (written as zeros; recovery is not shown)'}",
               f"masker head: {'yes' if self.has_masker else 'no (written as zeros; masker views are not shown)'}"]
        if self.dropped:
            out.append(f"not used by the publisher's forward, left out: {', '.join(sorted(self.dropped))}")
        return out


def _split_prefix(state: dict[str, Any], where: Path) -> tuple[str, dict[str, Any]]:
    """The prefix before ``word_emb.0.lut.weight`` (``""``, ``"midibert."``, ...) and the keys
    relative to it (heads of a wrapper, e.g. ``mask_lm.``, sit beside the prefix)."""
    anchors = [k for k in state if k.endswith("word_emb.0.lut.weight")]
    if len(anchors) != 1:
        raise SMUCheckpointError(where, "not a MidiBERT-style checkpoint: no single 'word_emb.0.lut.weight' "
                                        f"(found {len(anchors)}); keys start with "
                                        f"{', '.join(sorted({k.split('.')[0] for k in state})[:6])}")
    prefix = anchors[0][: -len("word_emb.0.lut.weight")]
    out = {}
    for k, v in state.items():
        out[k[len(prefix):] if prefix and k.startswith(prefix) else k] = v
    return prefix, out


def _indexed(state: dict[str, Any], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state if (m := rx.fullmatch(k))})


def _infer(state: dict[str, Any], meta: dict[str, Any], where: Path, position: str | None,
           n_heads: int | None) -> dict[str, Any]:
    """Model shapes from the tensors (and config.json, which must agree)."""
    attrs = _indexed(state, r"word_emb\.(\d+)\.lut\.weight")
    if attrs != list(range(len(attrs))):
        raise SMUCheckpointError(where, f"attribute embeddings are not numbered 0..n-1: {attrs}")
    luts = [state[f"word_emb.{j}.lut.weight"] for j in attrs]
    if any(t.dim() != 2 for t in luts) or len({t.shape[1] for t in luts}) != 1:
        raise SMUCheckpointError(where, "attribute embeddings must be 2-D tables of one width")
    layers = _indexed(state, r"bert\.encoder\.layer\.(\d+)\..+")
    if not layers or layers != list(range(len(layers))):
        raise SMUCheckpointError(where, f"BERT layers missing or not numbered 0..n-1: {layers[:10]}")
    if "in_linear.weight" not in state:
        raise SMUCheckpointError(where, "missing: in_linear.weight")
    hidden = int(state["in_linear.weight"].shape[0])
    ff = state.get("bert.encoder.layer.0.intermediate.dense.weight")
    if ff is None:
        raise SMUCheckpointError(where, "missing: bert.encoder.layer.0.intermediate.dense.weight")
    dist = state.get("bert.encoder.layer.0.attention.self.distance_embedding.weight")
    pos = state.get("bert.embeddings.position_embeddings.weight")
    cfg_pos = meta.get("position_embedding_type")
    if dist is not None:
        if dist.shape[0] % 2 == 0:
            raise SMUCheckpointError(where, f"distance_embedding has {dist.shape[0]} rows; 2 M - 1 expected")
        max_len, head_dim = (int(dist.shape[0]) + 1) // 2, int(dist.shape[1])
        if hidden % head_dim:
            raise SMUCheckpointError(where, f"distance_embedding width {head_dim} does not divide hidden {hidden}")
        heads = hidden // head_dim
        position = position or cfg_pos or "relative_key_query"
        if position not in ("relative_key", "relative_key_query"):
            raise SMUCheckpointError(where, f"the weights have relative distance embeddings but the position "
                                            f"scheme given is {position!r}")
    else:
        if pos is None:
            raise SMUCheckpointError(where, "missing: bert.embeddings.position_embeddings.weight")
        max_len = int(pos.shape[0])
        position = position or cfg_pos or "absolute"
        if position != "absolute":
            raise SMUCheckpointError(where, f"position scheme {position!r} needs distance_embedding tensors, "
                                            "which the weights do not have")
        heads = n_heads or int(meta.get("num_attention_heads") or max(1, hidden // 64))
    if n_heads is not None and n_heads != heads:
        raise SMUCheckpointError(where, f"--heads {n_heads} contradicts the weights ({heads} heads)")
    got = dict(hidden_size=hidden, num_hidden_layers=len(layers), num_attention_heads=heads,
               intermediate_size=int(ff.shape[0]), max_position_embeddings=max_len,
               position_embedding_type=position)
    lies = [f"{k} = {meta[k]!r} (the weights say {v!r})" for k, v in got.items() if k in meta and meta[k] != v]
    if lies:
        raise SMUCheckpointError(where, "config.json contradicts the weights: " + "; ".join(lies))
    tt = state.get("bert.embeddings.token_type_embeddings.weight")
    eps = meta.get("layer_norm_eps", 1e-12)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise SMUCheckpointError(where, f"config.json: layer_norm_eps must be a number in (0, 1), got {eps!r:.40}")
    return dict(got, vocab_sizes=[int(t.shape[0]) for t in luts], emb_dim=int(luts[0].shape[1]),
                type_vocab_size=int(tt.shape[0]) if tt is not None else 2, layer_norm_eps=float(eps))


def _layout(vocab_sizes: list[int], where: Path, forced: str | None) -> Layout:
    n = len(vocab_sizes)
    name = forced or {4: "midibert-cp", 8: "adversarial-octuple"}.get(n)
    if name not in LAYOUTS:
        raise SMUCheckpointError(where, f"unknown layout: {n} attributes of vocabulary sizes {vocab_sizes} "
                                        "(known: MidiBERT-Piano CP, 4 attributes; Adversarial-MidiBERT Octuple, 8)")
    lay = LAYOUTS[name]
    if len(lay.attributes) != n:
        raise SMUCheckpointError(where, f"layout {name} has {len(lay.attributes)} attributes, the weights {n}")
    want = lay.vocab_sizes
    if name == "adversarial-octuple":
        want = tuple(_octuple().vocab_sizes)
    if want and tuple(vocab_sizes) != tuple(want):
        raise SMUCheckpointError(where, f"vocabulary sizes {vocab_sizes} are not {name}'s {list(want)}")
    return lay


def convert_state_dict(state: dict[str, Any], layout: str) -> tuple[dict[str, Any], dict[str, str], bool, bool]:
    """The publisher's tensors (prefix already split) -> (our state dict, dropped keys with the
    reason, has recovery heads, has masker). Keys that neither :data:`KEY_MAP` nor :data:`UNUSED`
    covers raise ``SMUCheckpointError``."""
    import torch

    ours: dict[str, Any] = {}
    dropped: dict[str, str] = {}
    unknown = []
    for k, v in state.items():
        reason = next((why for rx, why in UNUSED.items() if re.fullmatch(rx, k)), None)
        if reason is not None:
            dropped[k] = reason
            continue
        for rx, repl in KEY_MAP:
            if re.fullmatch(rx, k):
                ours[re.sub(rx, repl, k)] = v
                break
        else:
            unknown.append(k)
    if unknown:
        raise SMUCheckpointError("state dict", "tensors this import does not know (nothing was written): "
                                               + ", ".join(sorted(unknown)[:12]) + (" ..." if len(unknown) > 12 else ""))
    n_attr = len([k for k in ours if re.fullmatch(r"embeddings\.\d+\.weight", k)])
    for j in range(n_attr):
        size = ours[f"embeddings.{j}.weight"].shape[0]
        perm = torch.tensor(vocab_permutation(layout, j, size))
        if len(perm) != size:
            raise SMUCheckpointError("state dict", f"attribute {j}: vocabulary of {size} ids, permutation of {len(perm)}")
        for key in (f"embeddings.{j}.weight", f"out_heads.{j}.weight", f"out_heads.{j}.bias"):
            if key in ours:
                if ours[key].shape[0] != size:
                    raise SMUCheckpointError("state dict", f"{key}: {ours[key].shape[0]} rows, the vocabulary has {size}")
                ours[key] = ours[key][perm].contiguous()
    has_heads = any(k.startswith("out_heads.") for k in ours)
    has_masker = any(k.startswith("masker_head.") for k in ours)
    return ours, dropped, has_heads, has_masker


def build_model(shapes: dict[str, Any], layout: Layout):
    """This project's ``MidiBert(ModelConfig(arch="bert", ...))`` for the inferred shapes."""
    from .model import MidiBert, ModelConfig

    cfg = ModelConfig(vocab_sizes=list(shapes["vocab_sizes"]), attributes=list(layout.attributes),
                      arch="bert", d_model=shapes["hidden_size"], n_layers=shapes["num_hidden_layers"],
                      n_heads=shapes["num_attention_heads"], d_ff=shapes["intermediate_size"],
                      emb_dim=shapes["emb_dim"], max_len=shapes["max_position_embeddings"],
                      position=shapes["position_embedding_type"], layer_norm_eps=shapes["layer_norm_eps"],
                      emb_scale=math.sqrt(shapes["emb_dim"]), type_vocab_size=shapes["type_vocab_size"],
                      masker_hidden=256, init="normal")
    return MidiBert(cfg)


def _tokenizer_for(layout: Layout, max_len: int):
    if layout.tokenizer == "cp":
        from .tokenizer import Tokenizer
        from .tokenizer_config import TokenizerConfig

        return Tokenizer(TokenizerConfig(max_bar_skip=1, max_len=max_len))
    from .octuple import OctupleIds

    return OctupleIds(max_len=max_len)


def import_checkpoint(src: str | os.PathLike, out: str | os.PathLike, *, layout: str | None = None,
                      position: str | None = None, heads: int | None = None) -> ImportReport:
    """Read a publisher's checkpoint, check it whole, and write this project's folder ``out``.

    ``layout`` forces ``"midibert-cp"`` / ``"adversarial-octuple"`` (default: from the number of
    attributes); ``position`` / ``heads`` override what config.json would say (they must still
    agree with the weights). ``SMUCheckpointError`` on anything that does not fit; nothing is
    written then (the folder is written atomically by ``checkpoint.save_checkpoint``)."""
    import torch

    from .checkpoint import check_memory, save_checkpoint
    from .weights import refuse_non_finite, skip_random_fills

    state, meta, path = read_state_dict(src)
    refuse_non_finite(state, path)
    _, rel = _split_prefix(state, path)
    shapes = _infer(rel, meta, path, position, heads)
    lay = _layout(shapes["vocab_sizes"], path, layout)
    ours, dropped, has_heads, has_masker = convert_state_dict(rel, lay.name)
    n_params = sum(int(v.numel()) for v in ours.values())
    check_memory(n_params, path, purpose="load")
    with skip_random_fills(any_device=True):  # every parameter is loaded strictly below
        model = build_model(shapes, lay)
    own = model.state_dict()
    for key in [k for k in own if k.startswith(("out_heads.", "masker_head.")) and k not in ours]:
        ours[key] = torch.zeros(own[key].shape, dtype=own[key].dtype)  # absent head: zeros, marked below
    missing = sorted(set(own) - set(ours))
    unexpected = sorted(set(ours) - set(own))
    shaped = sorted(f"{k}: {tuple(ours[k].shape)} vs {tuple(own[k].shape)}" for k in set(own) & set(ours)
                    if tuple(ours[k].shape) != tuple(own[k].shape))
    problems = ([f"missing: {', '.join(missing[:8])}"] if missing else []) + \
        ([f"unexpected: {', '.join(unexpected[:8])}"] if unexpected else []) + \
        ([f"shape mismatch: {'; '.join(shaped[:8])}"] if shaped else [])
    if problems:
        raise SMUCheckpointError(path, "weights do not fit the published architecture (nothing was written): "
                                       + " | ".join(problems))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in ours.items()}, strict=True)
    report = ImportReport(
        source=str(Path(src)), sha256=_sha256(path), layout=lay.name, description=lay.description,
        parameters=sum(p.numel() for p in model.parameters()), attributes=list(lay.attributes),
        vocab_sizes=list(shapes["vocab_sizes"]), hidden=shapes["hidden_size"], layers=shapes["num_hidden_layers"],
        heads=shapes["num_attention_heads"], max_len=shapes["max_position_embeddings"],
        position=shapes["position_embedding_type"], has_recovery_heads=has_heads, has_masker=has_masker,
        dropped=dropped)
    tok = _tokenizer_for(lay, shapes["max_position_embeddings"])
    extra = {"tokenizer": tok, "strategy": {"name": lay.strategy}, "imported": report.to_dict()}
    save_checkpoint(out, model, extra=extra)
    return report
