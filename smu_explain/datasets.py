"""Datasets and the token cache: encoded pieces, the torch ``Dataset``, ``collate``, tokenized folders.

Builds on :mod:`smu_explain.corpora` (which files, labels and splits a task has): encodes every
file with a tokenizer (through the on-disk token cache), serves windows as a torch ``Dataset``,
pads them into batches, writes and reads tokenized task folders, and runs ``smu tokenize``
(:func:`cmd_tokenize`; its parser is ``cli.add_tokenize_parser``). Imports torch, ``corpora``,
``errors``, ``io``, ``musicfile`` and ``tokenizer``; never the CLI.

Tokenized cache
    One ``.npz`` per (file content, tokenizer config) under ``cache_dir()``
    (``$SMU_CACHE_DIR`` or ``~/.cache/smu_explain``): the directory is the hash of
    the tokenizer config (plus the reader version), the file name the SHA-256 of
    the MIDI bytes (plus the annotation bytes for re-timed ASAP performances), so
    changing either misses the cache. Written atomically (temp file + ``os.replace``),
    read with ``allow_pickle=False``; a broken entry is ignored and rewritten.

Windows and batches
    ``EncodedPiece`` keeps a file's tokens (N, A) and its windows (from
    ``tokenizer.encode_windows``) as note spans; ``TokenDataset`` serves one window
    per sample and ``collate`` pads them into the batch of ARCHITECTURE.md.
    ``save_tokenized``/``load_tokenized`` write/read a tokenized task folder
    (``<split>.npz`` + ``tokenizer.json`` + ``manifest.json``), as ``smu tokenize`` does.

Building a dataset never stops at a bad file: files that raise ``SMUInputError``
are skipped and reported as ``(path, reason)``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .corpora import NOTE_LABELERS, SPLITS, PieceRef, TaskData, build_task, data_root, load_json, read_ref, setting_path
from .errors import SMUInputError
from .io import atomic_write_stream

#: bump when the way files are read/re-timed changes (invalidates the cache)
READER_VERSION = "2"
IGNORE_INDEX = -100


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """Token cache folder: ``path``, else ``$SMU_CACHE_DIR``, else ``~/.cache/smu_explain``."""
    return setting_path(path, "SMU_CACHE_DIR", Path.home() / ".cache" / "smu_explain")


# --------------------------------------------------------------------------- cache keys and the token cache
def _sha256_file(path: Path, h: hashlib._Hash | None = None) -> hashlib._Hash:
    h = h or hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h


def tokenizer_config_dict(tokenizer: Any) -> dict[str, Any]:
    return tokenizer.config.to_dict()


def config_hash(tokenizer: Any) -> str:
    """Hash of ``tokenizer.config.hash()`` (config + tokenizer version) and ``READER_VERSION``."""
    blob = json.dumps({"tokenizer": tokenizer.config.hash(), "reader": READER_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_route(ref: PieceRef) -> str:
    """How ``read_ref`` reads this file: 'midi', the score extension ('.xml', '.abc', ...),
    'retimed' (ASAP performance + beat annotations), or '' for an unsupported extension.

    Part of the cache key, so a cache hit is always the result of a fresh read of the same
    bytes by the same route: bytes cached as a valid '.abc' are not served for a '.mid'."""
    from .musicfile import MIDI_EXTENSIONS, SCORE_EXTENSIONS

    if ref.annotations is not None:
        return "retimed"
    ext = Path(ref.path).suffix.lower()
    if ext in MIDI_EXTENSIONS:
        return "midi"
    return ext if ext in SCORE_EXTENSIONS else ""


def content_hash(ref: PieceRef) -> str:
    """SHA-256 of the file bytes (plus the annotation bytes when the file is re-timed)
    and of the reading route (:func:`read_route`)."""
    try:
        h = _sha256_file(Path(ref.path))
        h.update(b"\0route\0" + read_route(ref).encode())
        if ref.annotations is not None:
            h.update(b"\0annotations\0")
            _sha256_file(Path(ref.annotations), h)
    except FileNotFoundError as e:
        raise SMUInputError(e.filename or ref.path, "file not found") from None
    except OSError as e:
        raise SMUInputError(ref.path, f"cannot read ({e.strerror})") from None
    return h.hexdigest()

class TokenCache:
    """On-disk cache of encoded files: ``<root>/tokens/<config hash>/<content hash>.npz``.

    Entries hold ``tokens`` (N, A), the windows (``win_spans`` (W, 2) note ranges,
    ``win_first`` (W, A) the re-based first row of each window) and what the label
    readers need (``velocity``, ``track``, ``track_names``). ``enabled=False`` turns it into a no-op.
    """

    def __init__(self, root: str | os.PathLike | None = None, enabled: bool = True):
        self.root = cache_dir(root)
        self.enabled = enabled
        self.hits = 0
        self.misses = 0

    def path_for(self, ref: PieceRef, tokenizer: Any) -> Path:
        return self.root / "tokens" / config_hash(tokenizer) / f"{content_hash(ref)}.npz"

    def load(self, path: Path) -> dict[str, np.ndarray] | None:
        if not self.enabled or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception:  # truncated/corrupt entry: treat as a miss, it gets rewritten
            return None

    def save(self, path: Path, arrays: Mapping[str, np.ndarray]) -> None:
        if not self.enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_savez(path, arrays)


def _atomic_savez(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    atomic_write_stream(path, lambda fh: np.savez(fh, **arrays))


def _atomic_write_text(path: Path, text: str) -> None:
    atomic_write_stream(path, lambda fh: fh.write(text), binary=False)


def window_spans(tokenizer: Any, piece: Any, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Compact form of ``tokenizer.encode_windows``: (spans (W, 2), first rows (W, A)).

    The tokenizer's windows are contiguous note ranges whose tokens equal the
    piece's tokens except the first row (bar re-based); this is checked, so a
    window can be rebuilt exactly as ``tokens[a:b]`` with row 0 replaced.
    """
    wins = tokenizer.encode_windows(piece, tokens)
    spans = np.zeros((len(wins), 2), dtype=np.int64)
    first = np.zeros((len(wins), tokens.shape[1]), dtype=np.int64)
    for k, (w, ids) in enumerate(wins):
        ids = np.asarray(ids, dtype=np.int64)
        a, b = int(ids[0]), int(ids[-1]) + 1
        if b - a != len(ids) or not np.array_equal(ids, np.arange(a, b)) or \
                not np.array_equal(np.asarray(w)[1:], tokens[a + 1:b]):
            raise RuntimeError("tokenizer windows are not contiguous note ranges; datasets.window_spans "
                               "needs updating")
        spans[k] = (a, b)
        first[k] = w[0]
    return spans, first


def _encode_arrays(ref: PieceRef, tokenizer: Any) -> dict[str, np.ndarray]:
    piece = read_ref(ref, tokenizer)
    tokens = np.asarray(tokenizer.encode(piece), dtype=np.int64)
    if len(tokens) == 0:
        raise SMUInputError(ref.path, "no notes left after reading (empty or drums only)")
    spans, first = window_spans(tokenizer, piece, tokens)
    dt = _small_int_dtype(tokenizer)  # stored small, read back as int64
    return {
        "tokens": tokens.astype(dt),
        "win_spans": spans,
        "win_first": first.astype(dt),
        "velocity": np.asarray(piece.velocity, dtype=np.int16),
        "track": np.asarray(piece.track, dtype=np.int32),
        "track_names": np.asarray([str(n) for n in piece.track_names] or [""], dtype=np.str_),
        # what reading did besides keeping notes (dropped by reason, notes added by repeats)
        "read_info": np.asarray(json.dumps(
            {**{f"dropped_{k}": int(v) for k, v in piece.dropped.items()},
             "repeat_notes_added": int(piece.stats.get("repeat_notes_added", 0))})),
    }


@dataclass
class EncodedPiece:
    """One encoded file: its tokens, windows and labels.

    Windows are kept compact: ``spans`` (W, 2) note ranges and ``first_rows`` (W, A)
    (the tokenizer's re-based first token of each window); ``window(k)`` rebuilds
    ``tokenizer.encode_windows(piece)[k]`` exactly.
    """

    name: str
    group: str
    source: str
    path: str
    tokens: np.ndarray  # (N, A) int64
    spans: np.ndarray  # (W, 2) int64
    first_rows: np.ndarray  # (W, A) int64
    note_labels: np.ndarray | None = None  # (N,) for note tasks
    label: int | None = None  # sequence label
    read_info: dict[str, int] = field(default_factory=dict)  # dropped_<reason>, repeat_notes_added

    @property
    def n_notes(self) -> int:
        return int(len(self.tokens))

    @property
    def n_windows(self) -> int:
        return int(len(self.spans))

    def window(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(tokens (L, A) int64, note ids (L,)) of window ``k``."""
        a, b = (int(x) for x in self.spans[k])
        w = self.tokens[a:b].copy()
        w[0] = self.first_rows[k]
        return w, np.arange(a, b, dtype=np.int64)

    @property
    def windows(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [self.window(k) for k in range(self.n_windows)]


class _NoteInfo:
    def __init__(self, arrays: Mapping[str, np.ndarray]):
        self.velocity = arrays["velocity"]
        self.track = arrays["track"]
        self.track_names = [str(x) for x in arrays["track_names"]]


def encode_ref(ref: PieceRef, tokenizer: Any, task: str = "pretrain",
               cache: TokenCache | None = None) -> EncodedPiece:
    """Encode one file (through the cache); raises ``SMUInputError`` on an unusable file."""
    arrays = None
    cpath = None
    if cache is not None and cache.enabled:
        if not read_route(ref):  # the checks of a fresh read come first (same refusal)
            read_ref(ref, tokenizer)
        cpath = cache.path_for(ref, tokenizer)
        arrays = cache.load(cpath)
        if arrays is not None and "read_info" not in arrays:  # an entry of an older layout: re-read
            arrays = None
        if arrays is not None:
            cache.hits += 1
    if arrays is None:
        if not Path(ref.path).is_file():
            raise SMUInputError(ref.path, "file not found")
        arrays = _encode_arrays(ref, tokenizer)
        if cache is not None and cache.enabled:
            cache.misses += 1
            cache.save(cpath, arrays)
    note_labels = None
    if task in NOTE_LABELERS:
        note_labels = NOTE_LABELERS[task](_NoteInfo(arrays), ref.path)
    return EncodedPiece(ref.name, ref.group, ref.source, str(ref.path), arrays["tokens"].astype(np.int64),
                        arrays["win_spans"].astype(np.int64), arrays["win_first"].astype(np.int64),
                        note_labels, ref.label, read_info=_read_info(arrays))


def _read_info(arrays: Mapping[str, np.ndarray]) -> dict[str, int]:
    try:
        info = json.loads(str(arrays["read_info"]))
        return {str(k): int(v) for k, v in info.items()} if isinstance(info, dict) else {}
    except (KeyError, ValueError, TypeError):
        return {}


def check_tokenizer_for_task(tokenizer: Any, task: str) -> None:
    """The velocity task must not see velocity: refuse a tokenizer that encodes it."""
    if task == "velocity" and "velocity" in list(tokenizer.attributes):
        raise ValueError("the velocity task needs a tokenizer without the velocity attribute "
                         "(velocity must not be an input)")


def encode_refs(refs: Sequence[PieceRef], tokenizer: Any, task: str = "pretrain",
                cache: TokenCache | None = None, progress: bool = False, desc: str = "tokenize"
                ) -> tuple[list[EncodedPiece], list[tuple[str, str]]]:
    """Encode many files; files raising ``SMUInputError`` are skipped as (path, reason)."""
    check_tokenizer_for_task(tokenizer, task)
    out, skipped = [], []
    it: Iterable[PieceRef] = refs
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(refs, desc=desc, unit="file", file=sys.stderr)
        it = bar
    for ref in it:
        try:
            out.append(encode_ref(ref, tokenizer, task, cache))
        except SMUInputError as e:
            skipped.append((str(ref.path), e.reason))
    if bar is not None:
        bar.close()
    return out, skipped


# --------------------------------------------------------------------------- torch side
class TokenDataset(torch.utils.data.Dataset):
    """Windows of encoded pieces as samples.

    Sample ``i`` is a dict: ``tokens`` LongTensor (L, A), ``note_ids`` LongTensor (L,)
    (note indices in the piece), ``piece_id`` (index into ``self.pieces``),
    ``window_start`` (index of the window's first token in its piece) and, when the
    task has labels, ``labels``: LongTensor (L,) for note tasks, a 0-d LongTensor for
    sequence tasks. With ``augment=True`` (use it for training splits only) each
    sample is transposed by ``tokenizer.random_transpose`` with a generator seeded
    from (seed, epoch, index) (``set_epoch`` changes the epoch).
    """

    def __init__(self, pieces: Sequence[EncodedPiece], level: str = "pretrain",
                 classes: Sequence[str] = (), tokenizer: Any = None, augment: bool = False,
                 seed: int = 0):
        if level not in ("note", "sequence", "pretrain"):
            raise ValueError(f"level must be note, sequence or pretrain, not {level!r}")
        if augment and tokenizer is None:
            raise ValueError("augment=True needs the tokenizer (for random_transpose)")
        self.pieces = list(pieces)
        self.level = level
        self.classes = list(classes)
        self.tokenizer = tokenizer
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.index = [(p, w) for p, piece in enumerate(self.pieces) for w in range(piece.n_windows)]

    @property
    def piece_names(self) -> list[str]:
        return [p.name for p in self.pieces]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        p, w = self.index[i]
        piece = self.pieces[p]
        tokens, note_ids = piece.window(w)
        if self.augment:
            from .tokenizer import random_transpose

            rng = np.random.default_rng([self.seed, self.epoch, i])
            tokens = np.asarray(random_transpose(tokens, rng, self.tokenizer), dtype=np.int64)
        item = {
            "tokens": torch.from_numpy(tokens),
            "note_ids": torch.as_tensor(np.asarray(note_ids, dtype=np.int64)),
            "piece_id": p,
            "window_start": int(note_ids[0]) if len(note_ids) else 0,
        }
        if self.level == "note" and piece.note_labels is not None:
            item["labels"] = torch.as_tensor(piece.note_labels[np.asarray(note_ids)], dtype=torch.long)
        elif self.level == "sequence" and piece.label is not None:
            item["labels"] = torch.tensor(int(piece.label), dtype=torch.long)
        return item

    def label_counts(self) -> dict[str, int]:
        """Per-class counts over pieces (notes for note tasks, pieces for sequence tasks)."""
        counts = np.zeros(len(self.classes), dtype=np.int64)
        for piece in self.pieces:
            if self.level == "note" and piece.note_labels is not None:
                counts += np.bincount(piece.note_labels, minlength=len(self.classes))[: len(self.classes)]
            elif self.level == "sequence" and piece.label is not None:
                counts[piece.label] += 1
        return {c: int(n) for c, n in zip(self.classes, counts, strict=False)}


def collate(batch: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """Pad samples into the batch of ARCHITECTURE.md "Batches".

    ``tokens`` (B, L, A) padded with PAD_ID, ``attention_mask`` (B, L) True on real
    tokens, ``labels`` (B, L) with -100 on padding (note tasks) or (B,) (sequence
    tasks) when every sample has labels, ``piece_id`` (B,), ``note_ids`` (B, L)
    with -1 on padding, ``window_start`` (B,). Extra scalar keys (e.g.
    ``sample_index``) are stacked when every sample has them.
    """
    from .tokenizer import PAD_ID

    if not batch:
        raise ValueError("collate needs at least one sample")
    lens = [int(b["tokens"].shape[0]) for b in batch]
    n_attr = int(batch[0]["tokens"].shape[1])
    B, L = len(batch), max(lens)
    tokens = torch.full((B, L, n_attr), PAD_ID, dtype=torch.long)
    mask = torch.zeros((B, L), dtype=torch.bool)
    note_ids = torch.full((B, L), -1, dtype=torch.long)
    for i, b in enumerate(batch):
        n = lens[i]
        tokens[i, :n] = torch.as_tensor(b["tokens"], dtype=torch.long)
        mask[i, :n] = True
        note_ids[i, :n] = torch.as_tensor(b["note_ids"], dtype=torch.long)
    out = {
        "tokens": tokens,
        "attention_mask": mask,
        "piece_id": torch.tensor([int(b["piece_id"]) for b in batch], dtype=torch.long),
        "note_ids": note_ids,
        "window_start": torch.tensor([int(b["window_start"]) for b in batch], dtype=torch.long),
    }
    if all("labels" in b for b in batch):
        first = torch.as_tensor(batch[0]["labels"])
        if first.dim() == 0:
            out["labels"] = torch.stack([torch.as_tensor(b["labels"], dtype=torch.long) for b in batch])
        else:
            labels = torch.full((B, L), IGNORE_INDEX, dtype=torch.long)
            for i, b in enumerate(batch):
                labels[i, : lens[i]] = torch.as_tensor(b["labels"], dtype=torch.long)
            out["labels"] = labels
    elif any("labels" in b for b in batch):
        raise ValueError("collate: some samples have labels and some do not")
    skip = {"tokens", "note_ids", "labels", "piece_id", "window_start"}
    for key in batch[0]:
        if key not in skip and all(key in b for b in batch):
            vals = [b[key] for b in batch]
            if all(isinstance(v, (int, np.integer)) or (torch.is_tensor(v) and v.dim() == 0) for v in vals):
                out[key] = torch.tensor([int(v) for v in vals], dtype=torch.long)
    return out


# --------------------------------------------------------------------------- build + save
@dataclass
class BuiltTask:
    """A tokenized task: one ``TokenDataset`` per split and the files skipped (path, reason)."""

    task: TaskData
    datasets: dict[str, TokenDataset]
    skipped: list[tuple[str, str]]

    def summary(self) -> dict[str, Any]:
        per = {}
        for s, ds in self.datasets.items():
            read: dict[str, int] = {}
            for p in ds.pieces:
                for k, v in p.read_info.items():
                    read[k] = read.get(k, 0) + int(v)
            per[s] = {"pieces": len(ds.pieces), "windows": len(ds),
                      "notes": int(sum(p.n_notes for p in ds.pieces)),
                      "read": {k: v for k, v in sorted(read.items()) if v},
                      "tokens": int(sum(int((p.spans[:, 1] - p.spans[:, 0]).sum()) for p in ds.pieces)),
                      "groups": len({p.group for p in ds.pieces})}
            if self.task.classes:
                per[s]["label_counts"] = ds.label_counts()
        return per


def build_datasets(task: TaskData, tokenizer: Any, cache: TokenCache | None = None,
                   augment_train: bool = False, seed: int = 0, progress: bool = False,
                   limit: int | None = None) -> BuiltTask:
    """Encode every split of ``task``; ``augment_train`` transposes the train split only."""
    check_tokenizer_for_task(tokenizer, task.task)
    datasets, skipped = {}, list(task.skipped)
    for s in SPLITS:
        refs = task.splits.get(s, [])
        if limit is not None:
            refs = refs[:limit]
        pieces, bad = encode_refs(refs, tokenizer, task.task, cache, progress, desc=f"{task.task}/{s}")
        skipped += bad
        datasets[s] = TokenDataset(pieces, task.level, task.classes, tokenizer,
                                   augment=augment_train and s == "train", seed=seed)
    return BuiltTask(task, datasets, skipped)


def _small_int_dtype(tokenizer: Any) -> np.dtype:
    return np.dtype(np.int16) if max(tokenizer.vocab_sizes) < 2 ** 15 else np.dtype(np.int32)


def save_tokenized(built: BuiltTask, tokenizer: Any, out_dir: str | os.PathLike,
                   extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``<split>.npz`` per split, ``tokenizer.json`` and ``manifest.json`` (atomically).

    npz arrays (no pickles): ``tokens`` (sum N, A), ``piece_offsets`` (P+1), ``names``,
    ``groups``, ``sources``, ``paths`` (P,), ``labels`` (P,) (-1 = none),
    ``note_labels`` (sum N) (note tasks), ``win_piece`` (W,), ``win_spans`` (W, 2)
    (note range of each window in its piece), ``win_first`` (W, A) (re-based first
    token of each window). Token ids are stored as int16/int32 and read back as int64.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dt = _small_int_dtype(tokenizer)
    n_attr = len(tokenizer.attributes)
    for s, ds in built.datasets.items():
        pcs = ds.pieces
        arrays: dict[str, np.ndarray] = {
            "tokens": (np.concatenate([p.tokens for p in pcs]) if pcs else np.zeros((0, n_attr))).astype(dt),
            "piece_offsets": np.concatenate([[0], np.cumsum([p.n_notes for p in pcs])]).astype(np.int64),
            "names": np.asarray([p.name for p in pcs], dtype=np.str_),
            "groups": np.asarray([p.group for p in pcs], dtype=np.str_),
            "sources": np.asarray([p.source for p in pcs], dtype=np.str_),
            "paths": np.asarray([p.path for p in pcs], dtype=np.str_),
            "labels": np.asarray([-1 if p.label is None else p.label for p in pcs], dtype=np.int64),
        }
        if ds.level == "note":
            arrays["note_labels"] = (np.concatenate([p.note_labels for p in pcs]) if pcs
                                     else np.zeros(0)).astype(np.int64)
        arrays["win_piece"] = np.asarray([i for i, p in enumerate(pcs) for _ in range(p.n_windows)],
                                         dtype=np.int64)
        arrays["win_spans"] = (np.concatenate([p.spans for p in pcs]) if pcs
                               else np.zeros((0, 2))).astype(np.int64)
        arrays["win_first"] = (np.concatenate([p.first_rows for p in pcs]) if pcs
                               else np.zeros((0, n_attr))).astype(dt)
        _atomic_savez(out / f"{s}.npz", arrays)
    cfg = tokenizer_config_dict(tokenizer)
    _atomic_write_text(out / "tokenizer.json", tokenizer.config.to_json() + "\n")
    manifest = {
        "format": "smu_explain.tokenized/1",
        "task": built.task.task,
        "level": built.task.level,
        "classes": built.task.classes,
        "split_info": built.task.split_info,
        "attributes": list(tokenizer.attributes),
        "vocab_sizes": [int(v) for v in tokenizer.vocab_sizes],
        "tokenizer_config": cfg,
        "splits": built.summary(),
        "pieces": {s: [p.name for p in ds.pieces] for s, ds in built.datasets.items()},
        "skipped": [{"path": p, "reason": r} for p, r in built.skipped],
    }
    if extra:
        manifest.update(extra)
    _atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2, default=str))
    return out


def read_manifest(out_dir: str | os.PathLike) -> dict[str, Any]:
    return load_json(Path(out_dir) / "manifest.json",
                      missing="not a tokenized dataset (manifest.json missing)", broken="broken manifest")


def tokenizer_from_manifest(out_dir: str | os.PathLike):
    """The ``Tokenizer`` a tokenized dataset was written with."""
    from .tokenizer import Tokenizer
    from .tokenizer_config import TokenizerConfig

    path = Path(out_dir) / "manifest.json"
    try:
        return Tokenizer(TokenizerConfig.from_dict(read_manifest(out_dir)["tokenizer_config"]))
    except (KeyError, TypeError, ValueError) as e:
        raise SMUInputError(path, f"bad tokenizer config ({e})") from None


_SPLIT_INTS = ("tokens", "piece_offsets", "labels", "win_piece", "win_spans", "win_first")
_SPLIT_TEXTS = ("names", "groups", "sources", "paths")


def _check_split(a: Mapping[str, np.ndarray], manifest: Mapping[str, Any], path: Path) -> None:
    """The arrays of a split (``save_tokenized``'s layout) fit together, or ``SMUInputError``
    naming the file and what does not fit: a copied-in-part, edited or foreign split is refused
    here, not as an IndexError in the middle of training."""
    def bad(why: str) -> SMUInputError:
        return SMUInputError(path, f"broken tokenized split: {why}")

    level, classes = manifest.get("level"), manifest.get("classes")
    if level not in ("note", "sequence", "pretrain"):
        raise SMUInputError(path.parent / "manifest.json", f"level must be note, sequence or pretrain, not {level!r}")
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise SMUInputError(path.parent / "manifest.json", "'classes' must be a list of names")
    need = _SPLIT_INTS + _SPLIT_TEXTS + (("note_labels",) if level == "note" else ())
    missing = [k for k in need if k not in a]
    if missing:
        raise bad(f"no {', '.join(missing)} array")
    for k in _SPLIT_INTS + (("note_labels",) if level == "note" else ()):
        if not np.issubdtype(a[k].dtype, np.integer):
            raise bad(f"{k} holds {a[k].dtype}, not whole numbers")
    tokens, po, spans, first, wp = (a[k] for k in ("tokens", "piece_offsets", "win_spans", "win_first", "win_piece"))
    if tokens.ndim != 2 or first.ndim != 2 or first.shape[1] != tokens.shape[1]:
        raise bad(f"tokens {tokens.shape} and win_first {first.shape} must be (notes, attributes) and "
                  "(windows, attributes)")
    n_pieces = len(po) - 1
    if po.ndim != 1 or n_pieces < 0 or po[0] != 0 or np.any(np.diff(po) < 0) or po[-1] != len(tokens):
        raise bad("piece_offsets do not cut the tokens into pieces")
    if any(a[k].shape != (n_pieces,) for k in _SPLIT_TEXTS + ("labels",)):
        raise bad(f"names, groups, sources, paths and labels must hold one entry per piece ({n_pieces})")
    labels = a["labels"]
    if level == "sequence" and np.any((labels < 0) | (labels >= len(classes))):
        raise bad(f"a piece label outside the {len(classes)} classes")
    if level == "note":
        nl = a["note_labels"]
        if nl.shape != (len(tokens),) or np.any(((nl < 0) & (nl != IGNORE_INDEX)) | (nl >= len(classes))):
            raise bad(f"note_labels must be one label per note, each one of the {len(classes)} classes")
    if spans.shape != (len(wp), 2) or first.shape[0] != len(wp) or wp.ndim != 1:
        raise bad("win_piece, win_spans and win_first must describe the same windows")
    if len(wp) and (np.any(np.diff(wp) < 0) or wp[0] < 0 or wp[-1] >= n_pieces):
        raise bad("win_piece must name the pieces in order")
    max_len = (manifest.get("tokenizer_config") or {}).get("max_len")
    lengths = po[1:] - po[:-1]
    if len(wp) and (np.any(spans[:, 0] < 0) or np.any(spans[:, 1] <= spans[:, 0])
                    or np.any(spans[:, 1] > lengths[wp])
                    or (isinstance(max_len, int) and np.any(spans[:, 1] - spans[:, 0] > max_len))):
        raise bad("a window's note range is empty, outside its piece or longer than the tokenizer's max_len")


def load_tokenized(out_dir: str | os.PathLike, split: str, augment: bool = False, seed: int = 0,
                   tokenizer: Any = None) -> TokenDataset:
    """Read one split written by ``save_tokenized`` as a ``TokenDataset``."""
    out = Path(out_dir)
    manifest = read_manifest(out)
    path = out / f"{split}.npz"
    if not path.is_file():
        raise SMUInputError(path, f"split {split!r} not in this tokenized dataset")
    if augment and tokenizer is None:
        tokenizer = tokenizer_from_manifest(out)
    try:
        with np.load(path, allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
    except Exception as e:
        raise SMUInputError(path, f"broken tokenized split ({type(e).__name__}: {e})") from None
    _check_split(a, manifest, path)
    tokens = a["tokens"].astype(np.int64)
    first = a["win_first"].astype(np.int64)
    po = a["piece_offsets"]
    wp = a["win_piece"]
    wstart = np.searchsorted(wp, np.arange(len(po)), side="left")
    pieces = []
    for i in range(len(po) - 1):
        lab = int(a["labels"][i])
        pieces.append(EncodedPiece(
            str(a["names"][i]), str(a["groups"][i]), str(a["sources"][i]), str(a["paths"][i]),
            tokens[po[i]:po[i + 1]], a["win_spans"][wstart[i]:wstart[i + 1]], first[wstart[i]:wstart[i + 1]],
            a["note_labels"][po[i]:po[i + 1]] if "note_labels" in a else None,
            None if lab < 0 else lab))
    return TokenDataset(pieces, manifest["level"], manifest["classes"], tokenizer, augment, seed)


# --------------------------------------------------------------------------- smu tokenize
def make_tokenizer(task: str, max_len: int | None = None, stride: int | None = None, **overrides: Any):
    """A tokenizer for ``task``: the default config, velocity off for the velocity task."""
    from .tokenizer import Tokenizer
    from .tokenizer_config import TokenizerConfig

    names = {f.name for f in dataclasses.fields(TokenizerConfig)}
    kw = {k: v for k, v in overrides.items() if v is not None}
    if max_len is not None:
        kw["max_len"] = max_len
    if stride is not None:
        kw["stride"] = stride
    if task == "velocity":
        kw["use_velocity"] = False
    unknown = set(kw) - names
    if unknown:
        raise ValueError(f"unknown tokenizer options {sorted(unknown)}")
    tok = Tokenizer(TokenizerConfig(**kw))
    check_tokenizer_for_task(tok, task)
    return tok


def cmd_tokenize(args: argparse.Namespace) -> int:
    """``smu tokenize``: build the task, encode with a progress bar, save, print a summary."""
    if args.task == "folder":
        if args.path is None or args.labels is None:
            raise SMUInputError(args.path or ".", "--task folder needs a MIDI folder PATH and --labels CSV")
    elif args.labels is not None:
        raise SMUInputError(args.labels, "--labels is only used with --task folder")
    try:
        task = build_task(args.task, args.path, args.labels, seed=args.seed, split=args.split,
                          asap_source=args.asap_source)
        tok = make_tokenizer(args.task, args.max_len, args.stride)
    except ValueError as e:
        if isinstance(e, SMUInputError):
            raise
        raise SystemExit(f"smu tokenize: {e}") from None
    cache = TokenCache(args.cache_dir, enabled=not args.no_cache)
    built = build_datasets(task, tok, cache, progress=True, seed=args.seed, limit=args.limit)
    if not any(len(ds.pieces) for ds in built.datasets.values()):
        reasons = "; ".join(f"{Path(p).name}: {r}" for p, r in built.skipped[:3])
        raise SMUInputError(args.path or data_root(), f"no usable file: all {len(built.skipped)} file(s) were "
                                                      f"skipped ({reasons or 'no files'}); nothing written")
    out = save_tokenized(built, tok, args.out, extra={"data_path": str(args.path or data_root()),
                                                      "seed": args.seed})
    summ = built.summary()
    pieces = sum(v["pieces"] for v in summ.values())
    notes = sum(v["notes"] for v in summ.values())
    tokens = sum(v["tokens"] for v in summ.values())
    print(f"task {args.task}: {task.split_info}")
    for s, v in summ.items():
        line = f"  {s:5s}: {v['pieces']} pieces, {v['groups']} groups, {v['notes']} notes, {v['windows']} windows"
        if "label_counts" in v:
            line += f", labels {v['label_counts']}"
        print(line)
    print(f"total: {pieces} pieces, {notes} notes, {tokens} tokens (in windows); "
          f"cache {cache.hits} hits, {cache.misses} misses")
    read: dict[str, int] = {}
    for v in summ.values():
        for k, n in v.get("read", {}).items():
            read[k] = read.get(k, 0) + n
    if read:
        said = [f"{n} {k[len('dropped_'):].replace('_', ' ')} dropped" for k, n in read.items()
                if k.startswith("dropped_")]
        if read.get("repeat_notes_added"):
            said.append(f"{read['repeat_notes_added']} notes added by expanding repeats")
        print("reading: " + ", ".join(said))
    print(f"skipped {len(built.skipped)} file(s)" + (":" if built.skipped else ""))
    for path, reason in built.skipped:
        print(f"  {path}: {reason}")
    print(f"wrote {out}")
    return 0
