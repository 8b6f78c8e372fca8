"""Task datasets: label readers, splits, tokenized cache, torch ``Dataset`` and ``collate``.

Data root
    ``data_root()`` = ``$SMU_DATA_ROOT`` if set, else ``<repo>/../shared/data``. The
    public datasets are read there unchanged (layouts in shared/data/README.md).

Tasks and labels (rules)
    - ``melody`` (note level, POP909): every note takes the role of its track:
      track named ``MELODY`` -> ``melody``, ``BRIDGE`` -> ``bridge`` (secondary
      melody), ``PIANO`` -> ``piano`` (accompaniment). Names are compared
      case-insensitively after stripping; any other track name makes the file
      unusable (``SMUInputError``).
    - ``velocity`` (note level, POP909): MidiBERT's six bins of MIDI velocity:
      ``pp`` 0-31, ``p`` 32-47, ``mp`` 48-63, ``mf`` 64-79, ``f`` 80-95, ``ff`` 96-127.
      Velocity must not be an input attribute: the task refuses a tokenizer whose
      config enables velocity.
    - ``composer`` (sequence level, ASAP, a stand-in for Pianist8 which is not
      available): the ``n_composers`` (8) composers with the most performances in
      ``asap/metadata.csv`` (ties broken by name). ``asap_source`` picks the files:
      ``"score"`` = the ``midi_score.mid`` of each work; ``"performance"`` = every
      human performance, re-timed onto the beat grid of its
      ``<name>_annotations.txt`` (see ``retime_performance``); ``"both"`` (default)
      = scores and re-timed performances. Split unit = the work (metadata ``folder``),
      never the performance, stratified by composer.
    - ``emotion`` (sequence level, EMOPIA): quadrant ``Q1``..``Q4`` from the file
      name ``Q<n>_<songID>_<clip>.mid`` (a song ID may contain ``_``). Split unit =
      the song.
    - ``pretrain``: Pop1K7 + POP909 + ASAP + EMOPIA, minus every POP909 song, ASAP
      work and EMOPIA song that has a piece in a fine-tuning validation or test split
      under the same split settings and seed. The remaining pieces are split 95/5
      by group into ``train``/``val`` (for monitoring MLM loss); ``test`` is empty.
    - ``folder``: a folder of MIDI files plus a CSV with columns ``file,label``
      (optional ``group`` column: pieces sharing a group never straddle splits;
      default group = the file). Sequence-level labels.

Splits
    ``split="ours"`` (default): 80/10/10 of the groups (songs/works), drawn from
    ``numpy.random.default_rng(seed)`` over the sorted group names, so the same
    seed and the same groups give the same split. ``"midibert"``: the lists in
    ``splits_midibert/pop909.json`` (865 4/4 songs: the other 44 POP909 songs are
    left out) or ``emopia.json`` (clip lists: MidiBERT's EMOPIA split is *not* by
    song: 139 songs have clips in two splits; the split info says how many).
    ``"emopia"``: EMOPIA's own ``split_by_song/*.csv`` (by song; 1051 of the 1078
    clips are listed, the other 27 are left out). ASAP has only ``"ours"``.

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
import csv
import dataclasses
import hashlib
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from .errors import SMUInputError
from .io import atomic_write_stream
from .names import SPLIT_SCHEMES, TASKS

REPO_ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "val", "test")
#: bump when the way files are read/re-timed changes (invalidates the cache)
READER_VERSION = "2"

MELODY_CLASSES = ["melody", "bridge", "piano"]
_MELODY_TRACKS = {"MELODY": 0, "BRIDGE": 1, "PIANO": 2}
VELOCITY_CLASSES = ["pp", "p", "mp", "mf", "f", "ff"]
#: lower bound of bins 1..5 (MidiBERT: pp 0-31, p 32-47, mp 48-63, mf 64-79, f 80-95, ff 96-127)
VELOCITY_EDGES = np.array([32, 48, 64, 80, 96])
EMOTION_CLASSES = ["Q1", "Q2", "Q3", "Q4"]
IGNORE_INDEX = -100


# --------------------------------------------------------------------------- roots
def _setting_path(value: str | os.PathLike | None, env: str, default: Path) -> Path:
    """``value`` if given, else the environment variable ``env`` if set, else ``default``."""
    if value is not None:
        return Path(value)
    return Path(os.environ[env]) if os.environ.get(env) else default


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root`` if given, else ``$SMU_DATA_ROOT``, else ``<repo>/../shared/data``."""
    return _setting_path(root, "SMU_DATA_ROOT", REPO_ROOT.parent / "shared" / "data")


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """Token cache folder: ``path``, else ``$SMU_CACHE_DIR``, else ``~/.cache/smu_explain``."""
    return _setting_path(path, "SMU_CACHE_DIR", Path.home() / ".cache" / "smu_explain")


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise SMUInputError(path, f"{what} not found (set SMU_DATA_ROOT or pass the data root)")
    return path


# --------------------------------------------------------------------------- refs
@dataclass(frozen=True)
class PieceRef:
    """One input file of a task.

    ``name`` is unique within a task (relative path), ``group`` is the split unit
    (song / work), ``label`` the sequence label index (None for note-level tasks
    and pre-training), ``annotations`` the beat annotation file of an ASAP
    performance (the file is then re-timed onto that beat grid before reading).
    """

    path: Path
    name: str
    group: str
    source: str
    label: int | None = None
    annotations: Path | None = None


@dataclass
class TaskData:
    """The pieces of a task, split; ``skipped`` lists files left out while listing."""

    task: str
    level: str  # "note" | "sequence" | "pretrain"
    classes: list[str]
    splits: dict[str, list[PieceRef]]
    split_info: str
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def all_refs(self) -> list[PieceRef]:
        return [r for s in SPLITS for r in self.splits.get(s, [])]


def pop909_refs(root: str | os.PathLike | None = None) -> list[PieceRef]:
    """POP909 songs: ``pop909/POP909/NNN/NNN.mid``; group = song id ``NNN``."""
    base = _require_dir(data_root(root) / "pop909" / "POP909", "POP909 folder")
    refs = []
    for song in sorted(p for p in base.iterdir() if p.is_dir()):
        f = song / f"{song.name}.mid"
        if f.is_file():
            refs.append(PieceRef(f, f"pop909/{song.name}", song.name, "pop909"))
    return refs


def pop1k7_refs(root: str | os.PathLike | None = None) -> list[PieceRef]:
    """Pop1K7: ``pop1k7/midi_analyzed/src_*/*.mid``; each file is its own group."""
    base = _require_dir(data_root(root) / "pop1k7" / "midi_analyzed", "Pop1K7 folder")
    refs = []
    for f in sorted(base.glob("*/*.mid")):
        name = f"pop1k7/{f.parent.name}/{f.stem}"
        refs.append(PieceRef(f, name, name, "pop1k7"))
    return refs


def parse_emopia_name(name: str) -> tuple[str, str, str]:
    """``Q<n>_<songID>_<clip>[.mid]`` -> (quadrant, songID, clip). The song ID may hold ``_``."""
    stem = name[:-4] if name.lower().endswith(".mid") else name
    parts = stem.split("_")
    if len(parts) < 3 or parts[0] not in EMOTION_CLASSES or not parts[-1].isdigit():
        raise SMUInputError(name, "not an EMOPIA clip name Q<n>_<songID>_<clip>")
    return parts[0], "_".join(parts[1:-1]), parts[-1]


def emopia_refs(root: str | os.PathLike | None = None) -> tuple[list[PieceRef], list[tuple[str, str]]]:
    """EMOPIA clips with quadrant labels; group = song ID. Returns (refs, skipped names)."""
    base = _require_dir(data_root(root) / "emopia" / "midis", "EMOPIA midis folder")
    refs, skipped = [], []
    for f in sorted(base.glob("*.mid")):
        try:
            q, song, _clip = parse_emopia_name(f.name)
        except SMUInputError as e:
            skipped.append((str(f), e.reason))
            continue
        refs.append(PieceRef(f, f"emopia/{f.stem}", song, "emopia", EMOTION_CLASSES.index(q)))
    return refs, skipped


def asap_metadata(root: str | os.PathLike | None = None) -> list[dict[str, str]]:
    """Rows of ``asap/metadata.csv`` (one per performance)."""
    path = data_root(root) / "asap" / "metadata.csv"
    if not path.is_file():
        raise SMUInputError(path, "ASAP metadata.csv not found (set SMU_DATA_ROOT)")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    need = {"composer", "folder", "midi_score", "midi_performance", "performance_annotations"}
    if rows and not need <= set(rows[0]):
        raise SMUInputError(path, f"missing columns {sorted(need - set(rows[0]))}")
    return rows


def asap_top_composers(rows: Sequence[Mapping[str, str]], n: int = 8) -> list[str]:
    """The ``n`` composers with the most performances (metadata rows); ties by name."""
    counts = Counter(r["composer"] for r in rows)
    return [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def asap_refs(root: str | os.PathLike | None = None, composers: Sequence[str] | None = None,
              source: str = "both") -> list[PieceRef]:
    """ASAP files of ``composers`` (all when None); label = index in ``composers``.

    ``source``: ``"score"`` (one ``midi_score.mid`` per work), ``"performance"``
    (re-timed performances) or ``"both"``. Group = the work folder.
    """
    if source not in ("score", "performance", "both"):
        raise ValueError(f"asap source must be score, performance or both, not {source!r}")
    base = data_root(root) / "asap"
    rows = asap_metadata(root)
    keep = None if composers is None else {c: i for i, c in enumerate(composers)}
    refs, seen_scores = [], set()
    for r in rows:
        comp = r["composer"]
        if keep is not None and comp not in keep:
            continue
        label = None if keep is None else keep[comp]
        work = r["folder"]
        if source in ("score", "both") and work not in seen_scores:
            seen_scores.add(work)
            refs.append(PieceRef(base / r["midi_score"], f"asap/{r['midi_score'][:-4]}",
                                 f"asap/{work}", "asap", label))
        if source in ("performance", "both"):
            ann = base / r["performance_annotations"] if r["performance_annotations"] else None
            refs.append(PieceRef(base / r["midi_performance"], f"asap/{r['midi_performance'][:-4]}",
                                 f"asap/{work}", "asap", label, ann))
    return sorted(refs, key=lambda ref: ref.name)


# --------------------------------------------------------------------------- splits
def split_groups(groups: Iterable[str], seed: int = 0,
                 fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                 strata: Mapping[str, str] | None = None) -> dict[str, str]:
    """Assign every distinct group to ``train``/``val``/``test``.

    Rule: within each stratum (all groups when ``strata`` is None), sort the
    group names, permute them with ``default_rng(seed)`` (strata visited in
    sorted order, one generator), then take ``round(f_val*n)`` for val,
    ``round(f_test*n)`` for test (each at least 1 when that fraction is > 0 and
    the stratum has >= 3 groups) and the rest for train. Deterministic in
    (seed, set of groups, strata).
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1, got {fractions}")
    uniq = sorted(set(groups))
    by_stratum: dict[str, list[str]] = {}
    for g in uniq:
        by_stratum.setdefault("" if strata is None else str(strata[g]), []).append(g)
    rng = np.random.default_rng(seed)
    out: dict[str, str] = {}
    for key in sorted(by_stratum):
        gs = by_stratum[key]
        order = [gs[i] for i in rng.permutation(len(gs))]
        n = len(gs)

        def count(f: float) -> int:
            k = int(round(f * n))
            if f > 0 and n >= 3:
                k = max(k, 1)
            return k

        n_val, n_test = count(fractions[1]), count(fractions[2])
        n_val = min(n_val, n)
        n_test = min(n_test, n - n_val)
        for i, g in enumerate(order):
            out[g] = "val" if i < n_val else "test" if i < n_val + n_test else "train"
    return out


def _apply_split(refs: Sequence[PieceRef], assign: Mapping[str, str], key: Callable[[PieceRef], str]
                 ) -> dict[str, list[PieceRef]]:
    splits: dict[str, list[PieceRef]] = {s: [] for s in SPLITS}
    for r in refs:
        s = assign.get(key(r))
        if s is not None:
            splits[s].append(r)
    return splits


def _load_json(path: Path, missing: str = "split file not found", broken: str = "not valid JSON") -> Any:
    """JSON from ``path``; ``SMUInputError`` (with the given reasons) when missing or broken."""
    if not path.is_file():
        raise SMUInputError(path, missing)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:  # not JSON, too many digits, nested too deep
        raise SMUInputError(path, f"{broken} ({str(e)[:200] or e.__class__.__name__})") from None


def midibert_split(root: str | os.PathLike | None, dataset: str) -> dict[str, str]:
    """MidiBERT's lists: for ``pop909`` song id -> split, for ``emopia`` clip stem -> split."""
    path = data_root(root) / "splits_midibert" / f"{dataset}.json"
    d = _load_json(path)
    out = {}
    for theirs, ours in (("train", "train"), ("valid", "val"), ("test", "test")):
        if theirs not in d:
            raise SMUInputError(path, f"no {theirs!r} list")
        for item in d[theirs]:
            stem = Path(item).stem
            out[stem] = ours
    return out


def emopia_own_split(root: str | os.PathLike | None = None) -> dict[str, str]:
    """EMOPIA's ``split_by_song/{train,val,test}.csv``: clip stem -> split."""
    base = data_root(root) / "emopia" / "split_by_song"
    out = {}
    for s in SPLITS:
        path = base / f"{s}.csv"
        if not path.is_file():
            raise SMUInputError(path, "EMOPIA split file not found")
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                out[Path(row["fname"]).stem] = s
    return out


def _check_split_name(split: str, allowed: Sequence[str], task: str) -> None:
    if split not in allowed:
        raise ValueError(f"{task}: split must be one of {list(allowed)}, not {split!r}")


def pop909_splits(root=None, split: str = "ours", seed: int = 0) -> tuple[dict[str, list[PieceRef]], str]:
    """POP909 songs split by song (ours 80/10/10 or MidiBERT's 865-song lists)."""
    _check_split_name(split, ("ours", "midibert"), "pop909")
    refs = pop909_refs(root)
    if split == "midibert":
        assign = midibert_split(root, "pop909")
        return _apply_split(refs, assign, lambda r: r.group), "MidiBERT split (splits_midibert/pop909.json)"
    assign = split_groups([r.group for r in refs], seed)
    return _apply_split(refs, assign, lambda r: r.group), f"ours: 80/10/10 by song, seed {seed}"


def asap_splits(root=None, seed: int = 0, n_composers: int = 8, source: str = "both"
                ) -> tuple[dict[str, list[PieceRef]], list[str], str]:
    """ASAP composer task: top ``n_composers``, split by work stratified by composer."""
    composers = asap_top_composers(asap_metadata(root), n_composers)
    refs = asap_refs(root, composers, source)
    strata = {r.group: composers[r.label] for r in refs}
    assign = split_groups(strata.keys(), seed, strata=strata)
    info = f"ours: 80/10/10 by work (metadata folder), stratified by composer, seed {seed}; files: {source}"
    return _apply_split(refs, assign, lambda r: r.group), composers, info


def emopia_splits(root=None, split: str = "ours", seed: int = 0
                  ) -> tuple[dict[str, list[PieceRef]], list[tuple[str, str]], str]:
    """EMOPIA clips split by song (ours), MidiBERT's clip lists, or EMOPIA's own by-song split."""
    _check_split_name(split, SPLIT_SCHEMES, "emopia")
    refs, skipped = emopia_refs(root)
    if split == "ours":
        assign = split_groups([r.group for r in refs], seed)
        return _apply_split(refs, assign, lambda r: r.group), skipped, f"ours: 80/10/10 by song, seed {seed}"
    if split == "midibert":
        assign = midibert_split(root, "emopia")
        info = "MidiBERT split (splits_midibert/emopia.json)"
    else:
        assign = emopia_own_split(root)
        info = "EMOPIA's own split (emopia/split_by_song)"
    splits = _apply_split(refs, assign, lambda r: r.path.stem)
    shared = shared_groups(splits)
    if shared:
        info += f"; WARNING: clip-level, {len(shared)} songs have clips in more than one split"
    return splits, skipped, info


def shared_groups(splits: Mapping[str, Sequence[PieceRef]]) -> set[str]:
    """Groups (songs/works) that have pieces in more than one split (a leak)."""
    seen: dict[str, str] = {}
    out = set()
    for s, refs in splits.items():
        for r in refs:
            if seen.setdefault(r.group, s) != s:
                out.add(r.group)
    return out


# --------------------------------------------------------------------------- tasks
def melody_task(root=None, split: str = "ours", seed: int = 0) -> TaskData:
    splits, info = pop909_splits(root, split, seed)
    return TaskData("melody", "note", list(MELODY_CLASSES), splits, info)


def velocity_task(root=None, split: str = "ours", seed: int = 0) -> TaskData:
    splits, info = pop909_splits(root, split, seed)
    return TaskData("velocity", "note", list(VELOCITY_CLASSES), splits, info)


def composer_task(root=None, seed: int = 0, n_composers: int = 8, source: str = "both") -> TaskData:
    splits, composers, info = asap_splits(root, seed, n_composers, source)
    return TaskData("composer", "sequence", composers, splits,
                    info + " (ASAP composers stand in for Pianist8)")


def emotion_task(root=None, split: str = "ours", seed: int = 0) -> TaskData:
    splits, skipped, info = emopia_splits(root, split, seed)
    return TaskData("emotion", "sequence", list(EMOTION_CLASSES), splits, info, skipped)


def pretrain_task(root=None, seed: int = 0, pop909_split: str = "ours", emopia_split: str = "ours",
                  asap_source: str = "both", n_composers: int = 8,
                  val_fraction: float = 0.05) -> TaskData:
    """Pre-training corpus: Pop1K7 + POP909 + ASAP + EMOPIA without fine-tuning val/test pieces.

    The held-out pieces are those of ``melody_task``/``velocity_task(split=pop909_split, seed)``,
    ``composer_task(seed, n_composers, asap_source)`` and ``emotion_task(split=emopia_split, seed)``,
    held out by group: every POP909 song, ASAP work and EMOPIA song with a piece in
    a fine-tuning val/test split is left out entirely. Pieces in no fine-tuning
    list (MidiBERT's 44 non-4/4 POP909 songs, ASAP works of composers outside the
    composer task) are kept. The kept
    pieces are split ``1-val_fraction`` / ``val_fraction`` by group.
    """
    pool: list[PieceRef] = list(pop1k7_refs(root))
    pop_splits, _ = pop909_splits(root, pop909_split, seed)
    pool += pop_splits["train"]
    held_pop = {r.group for s in ("val", "test") for r in pop_splits[s]}
    # POP909 songs outside the chosen split lists (MidiBERT's 44 non-4/4 songs) are kept too
    listed = {r.group for s in SPLITS for r in pop_splits[s]}
    pool += [r for r in pop909_refs(root) if r.group not in listed and r.group not in held_pop]
    asap_split, composers, _ = asap_splits(root, seed, n_composers, asap_source)
    pool += [dataclasses.replace(r, label=None) for r in asap_split["train"]]
    others = [r for r in asap_refs(root, None, asap_source)
              if r.group not in {x.group for s in SPLITS for x in asap_split[s]}]
    pool += others
    emo_split, skipped, _ = emopia_splits(root, emopia_split, seed)
    # by song: with a clip-level split (MidiBERT's) a training clip whose song has a
    # val/test clip stays out of pre-training too
    held_emo_songs = {r.group for s in ("val", "test") for r in emo_split[s]}
    emo_all, _ = emopia_refs(root)
    pool += [dataclasses.replace(r, label=None) for r in emo_all if r.group not in held_emo_songs]
    assign = split_groups([r.group for r in pool], seed, (1 - val_fraction, val_fraction, 0.0))
    splits = _apply_split(pool, assign, lambda r: r.group)
    info = (f"pre-training pool without fine-tuning val/test (POP909 {pop909_split}, EMOPIA "
            f"{emopia_split}, ASAP works, seed {seed}); {1 - val_fraction:.0%}/{val_fraction:.0%} by group")
    return TaskData("pretrain", "pretrain", [], splits, info, skipped)


def folder_task(folder: str | os.PathLike, labels_csv: str | os.PathLike, seed: int = 0,
                classes: Sequence[str] | None = None,
                fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> TaskData:
    """A user folder of MIDI files with a labels CSV (``file,label`` [,``group``]).

    Rules (each breach raises ``SMUInputError`` naming the file and the reason):
    the CSV must exist and have ``file`` and ``label`` columns; every listed
    file must exist inside ``folder`` (relative path, or absolute inside it); a file
    may be listed once; every music file of the folder (recursively, the extensions
    the tokenizer reads: MIDI and MusicXML/kern/ABC scores) must have a row; when
    ``classes`` is given every label must be one of them (else the classes are
    the sorted distinct labels). Unreadable MIDI files are skipped later, at
    tokenization, and reported.
    """
    folder = Path(folder)
    labels_csv = Path(labels_csv)
    if not folder.is_dir():
        raise SMUInputError(folder, "MIDI folder not found")
    if not labels_csv.is_file():
        raise SMUInputError(labels_csv, "labels CSV not found")
    with open(labels_csv, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        if "file" not in cols or "label" not in cols:
            raise SMUInputError(labels_csv, f"needs columns file,label (found {cols})")
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    seen: dict[str, dict[str, str]] = {}
    for i, row in enumerate(rows, start=2):
        f = row["file"]
        if not f:
            raise SMUInputError(labels_csv, f"line {i}: empty file name")
        if not row["label"]:
            raise SMUInputError(labels_csv, f"line {i}: empty label for {f}")
        if Path(f).is_absolute():
            try:
                f = Path(f).resolve().relative_to(folder.resolve()).as_posix()
            except ValueError:
                raise SMUInputError(f, f"listed in {labels_csv.name} (line {i}) but not inside {folder}") from None
        key = Path(f).as_posix()
        if key in seen:
            raise SMUInputError(labels_csv, f"line {i}: {f} is listed twice")
        if not (folder / f).is_file():
            raise SMUInputError(folder / f, f"listed in {labels_csv.name} (line {i}) but not found")
        seen[key] = row
    from .musicfile import MIDI_EXTENSIONS, SCORE_EXTENSIONS

    exts = set(MIDI_EXTENSIONS) | set(SCORE_EXTENSIONS)
    on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                     if p.is_file() and p.suffix.lower() in exts)
    missing = [f for f in on_disk if f not in seen]
    if missing:
        raise SMUInputError(missing[0] if len(missing) == 1 else folder,
                            f"no label row in {labels_csv.name} for {len(missing)} file(s): "
                            + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
    labels = sorted({row["label"] for row in seen.values()})
    if classes is None:
        classes = labels
    else:
        classes = list(classes)
        unknown = [lab for lab in labels if lab not in classes]
        if unknown:
            bad = next(f for f, row in seen.items() if row["label"] == unknown[0])
            raise SMUInputError(labels_csv, f"unknown label {unknown[0]!r} (file {bad}); "
                                f"expected one of {classes}")
    refs = []
    for f, row in sorted(seen.items()):
        group = row.get("group") or f
        refs.append(PieceRef(folder / f, f, group, "folder", classes.index(row["label"])))
    assign = split_groups([r.group for r in refs], seed, fractions)
    return TaskData("folder", "sequence", list(classes), _apply_split(refs, assign, lambda r: r.group),
                    f"ours: {fractions[0]:.0%}/{fractions[1]:.0%}/{fractions[2]:.0%} by group, seed {seed}")


def build_task(task: str, path: str | os.PathLike | None = None, labels: str | os.PathLike | None = None,
               seed: int = 0, split: str = "ours", asap_source: str = "both",
               n_composers: int = 8) -> TaskData:
    """Dispatch on ``task`` (one of ``TASKS``); ``path`` = data root, or the folder for ``folder``."""
    if task == "folder":
        if path is None or labels is None:
            raise ValueError("the folder task needs a folder and a labels CSV")
        if split != "ours":
            raise ValueError("folder: only split='ours' exists (use a group column to keep files together)")
        return folder_task(path, labels, seed)
    if task == "melody":
        return melody_task(path, split, seed)
    if task == "velocity":
        return velocity_task(path, split, seed)
    if task == "composer":
        if split != "ours":
            raise ValueError("composer: only split='ours' exists for ASAP")
        return composer_task(path, seed, n_composers, asap_source)
    if task == "emotion":
        return emotion_task(path, split, seed)
    if task == "pretrain":
        pop = split if split in ("ours", "midibert") else "ours"
        return pretrain_task(path, seed, pop909_split=pop, emopia_split=split,
                             asap_source=asap_source, n_composers=n_composers)
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


# --------------------------------------------------------------------------- labels
def melody_note_labels(info: Any, path: str | os.PathLike = "") -> np.ndarray:
    """Per-note class (0 melody, 1 bridge, 2 piano) from the note's track name.

    ``info`` needs ``track`` (per-note track index) and ``track_names``.
    """
    names = [str(n).strip().upper() for n in info.track_names]
    lut = np.full(max(len(names), 1), -1, dtype=np.int64)
    for i, n in enumerate(names):
        lut[i] = _MELODY_TRACKS.get(n, -1)
    track = np.asarray(info.track, dtype=np.int64)
    if track.size and (track.min() < 0 or track.max() >= len(names)):
        raise SMUInputError(path, "note track index outside the track list")
    out = lut[track] if track.size else np.zeros(0, dtype=np.int64)
    if (out < 0).any():
        bad = sorted({info.track_names[t] for t in np.unique(track[out < 0])})
        raise SMUInputError(path, f"track(s) {bad} are not MELODY/BRIDGE/PIANO")
    return out


def velocity_bins(velocity: np.ndarray) -> np.ndarray:
    """MidiBERT's six velocity classes: pp 0-31, p 32-47, mp 48-63, mf 64-79, f 80-95, ff 96-127."""
    return np.searchsorted(VELOCITY_EDGES, np.asarray(velocity), side="right").astype(np.int64)


def velocity_note_labels(info: Any, path: str | os.PathLike = "") -> np.ndarray:
    return velocity_bins(info.velocity)


NOTE_LABELERS: dict[str, Callable[[Any, Any], np.ndarray]] = {
    "melody": melody_note_labels,
    "velocity": velocity_note_labels,
}


# --------------------------------------------------------------------------- ASAP re-timing
def read_beat_annotations(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict[int, tuple[int, int]]]:
    """ASAP ``*_annotations.txt``: (beat times s, is_downbeat, {beat index: (num, den)}).

    Each line: ``time<TAB>time<TAB>kind[,timesig[,key]]`` with kind ``b``/``bR``
    (beat) or ``db`` (downbeat). Beat times must increase.
    """
    times, down, sigs = [], [], {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise SMUInputError(path, f"cannot read beat annotations ({e.strerror})") from None
    for ln, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 3:
            raise SMUInputError(path, f"line {ln}: expected 3 tab-separated columns")
        try:
            t = float(cols[0])
        except ValueError:
            raise SMUInputError(path, f"line {ln}: bad time {cols[0]!r}") from None
        parts = cols[2].strip().split(",")
        times.append(t)
        down.append(parts[0].startswith("db"))
        if len(parts) > 1 and parts[1].strip():
            try:
                num, den = (int(x) for x in parts[1].strip().split("/"))
            except ValueError:
                raise SMUInputError(path, f"line {ln}: bad time signature {parts[1]!r}") from None
            sigs[len(times) - 1] = (num, den)
    if len(times) < 2:
        raise SMUInputError(path, "fewer than 2 annotated beats")
    t = np.asarray(times)
    if (np.diff(t) <= 0).any():
        raise SMUInputError(path, "beat times do not increase")
    return t, np.asarray(down, dtype=bool), sigs


def beat_quarters(down: np.ndarray, sigs: Mapping[int, tuple[int, int]]) -> tuple[np.ndarray, list[tuple[float, int, int]]]:
    """Quarter-note position of every annotated beat, and (quarter, num, den) time signatures.

    Rule: bars run from downbeat to downbeat and last ``4*num/den`` quarters of
    the time signature in force; the beats inside a bar divide it evenly (so an
    irregular beat count still fills the bar). The last bar uses the beat length
    of the bar before when the metre is unchanged, else its metre's default beat
    (numerator beats; numerator/3 for compound x/8 and x/16 metres). Beats before the first downbeat
    (a pickup) get the first bar's beat length and end at the first downbeat,
    which is put at a whole bar (0 when there is no pickup) so positions are >= 0.
    """
    n = len(down)
    db = np.flatnonzero(down)
    if db.size == 0:  # no downbeat at all: treat every beat as a quarter in 4/4 from beat 0
        return np.arange(n, dtype=float), [(0.0, 4, 4)]
    sig = (4, 4)
    for i in sorted(sigs):
        if i <= db[0]:
            sig = sigs[i]
    first_sig = sig
    q = np.zeros(n)
    ts_events: list[tuple[float, int, int]] = []
    pos = 0.0
    beat_len = None
    prev_sig = sig
    for k, start in enumerate(db):
        for i in sorted(sigs):
            if start >= i and (k == 0 or i > db[k - 1]):
                sig = sigs[i]
        bar_q = 4.0 * sig[0] / sig[1]
        end = db[k + 1] if k + 1 < len(db) else n
        m = end - start
        if k + 1 < len(db):
            beat_len = bar_q / m
        elif beat_len is None or sig != prev_sig:
            beats = sig[0] // 3 if sig[1] in (8, 16) and sig[0] % 3 == 0 and sig[0] > 3 else sig[0]
            beat_len = bar_q / beats
        prev_sig = sig
        if not ts_events or ts_events[-1][1:] != sig:
            ts_events.append((pos, sig[0], sig[1]))
        q[start:end] = pos + beat_len * np.arange(m)
        pos += bar_q if k + 1 < len(db) else beat_len * m
    # pickup before the first downbeat
    pre = db[0]
    if pre:
        bar0 = 4.0 * first_sig[0] / first_sig[1]
        first_len = (q[db[1]] - q[db[0]]) / (db[1] - db[0]) if len(db) > 1 else bar0 / first_sig[0]
        pickup_q = first_len * pre
        shift = bar0 * np.ceil(pickup_q / bar0 - 1e-9)
        q[db[0]:] += shift
        q[:pre] = shift - first_len * np.arange(pre, 0, -1)
        ts_events = [(0.0, first_sig[0], first_sig[1])] + [(p + shift, a, b) for p, a, b in ts_events[1:]]
    return q, ts_events


def _interp_extrap(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Piecewise-linear map, extended past both ends with the first/last segment's slope."""
    y = np.interp(x, xp, fp)
    lo, hi = x < xp[0], x > xp[-1]
    y[lo] = fp[0] + (x[lo] - xp[0]) * (fp[1] - fp[0]) / (xp[1] - xp[0])
    y[hi] = fp[-1] + (x[hi] - xp[-1]) * (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
    return y


def retime_performance(midi_path: str | os.PathLike, annotations_path: str | os.PathLike) -> bytes:
    """A human performance put on its annotated beat grid, as standard MIDI file bytes.

    Every note onset/offset in seconds (from the file's tempo map, read with
    symusic like the tokenizer does) is mapped to a quarter position by linear
    interpolation between the annotated beats (``beat_quarters``), extrapolated
    past the first/last beat and clipped at 0; the result is written at 480 ticks
    per quarter, a constant 120 qpm, with the annotated time signatures, so the
    tokenizer's beat grid is the performer's beat. Pitches, velocities, programs,
    drum flags and track names are kept; a note keeps at least 1 tick.
    """
    import symusic

    from .musicfile import validate_midi_bytes

    times, down, sigs = read_beat_annotations(annotations_path)
    beat_q, ts_events = beat_quarters(down, sigs)
    try:
        data = Path(midi_path).read_bytes()
    except OSError as e:
        raise SMUInputError(midi_path, f"cannot read ({e.strerror})") from None
    validate_midi_bytes(data, str(midi_path))
    try:
        score = symusic.Score.from_midi(data).to("second")
    except Exception as e:
        raise SMUInputError(midi_path, f"unreadable MIDI: {type(e).__name__}: {e}") from None
    tpq = 480
    out = symusic.Score(tpq)
    out.tempos.append(symusic.Tempo(0, qpm=120.0))
    for q, num, den in ts_events:
        out.time_signatures.append(symusic.TimeSignature(int(round(q * tpq)), num, den))
    for tr in score.tracks:
        new = symusic.Track(tr.name, tr.program, tr.is_drum)
        a = tr.notes.numpy()
        if len(a["time"]):
            on = a["time"].astype(np.float64)
            off = on + a["duration"].astype(np.float64)
            t_on = np.round(np.maximum(_interp_extrap(on, times, beat_q), 0.0) * tpq).astype(np.int64)
            t_off = np.round(np.maximum(_interp_extrap(off, times, beat_q), 0.0) * tpq).astype(np.int64)
            dur = np.maximum(t_off - t_on, 1)
            new.notes = symusic.Note.from_numpy(time=t_on.astype(np.int32), duration=dur.astype(np.int32),
                                                pitch=a["pitch"], velocity=a["velocity"])
        out.tracks.append(new)
    return bytes(out.dumps_midi())


# --------------------------------------------------------------------------- reading + cache
def _sha256_file(path: Path, h: "hashlib._Hash | None" = None) -> "hashlib._Hash":
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


def read_ref(ref: PieceRef, tokenizer: Any):
    """Read a ref into a ``Piece`` with the tokenizer's config (re-timing ASAP performances first)."""
    if ref.annotations is None:
        return tokenizer.read(ref.path)
    data = retime_performance(ref.path, ref.annotations)
    try:
        return tokenizer.read(data, name=Path(ref.path).stem)
    except SMUInputError as e:
        raise SMUInputError(ref.path, f"after re-timing onto {Path(ref.annotations).name}: {e.reason}") from None


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
            raise RuntimeError("tokenizer windows are not contiguous note ranges; data.window_spans "
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
        return {c: int(n) for c, n in zip(self.classes, counts)}


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
    return _load_json(Path(out_dir) / "manifest.json",
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


# --------------------------------------------------------------------------- CLI
def add_tokenize_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``smu tokenize`` (the parser lives in ``cli``, which imports this module lazily)."""
    from .cli import add_tokenize_parser as add

    return add(subparsers)


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
