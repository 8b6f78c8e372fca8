"""The corpora and their labels: which files a task reads, with which labels, in which split.

Readers of the datasets under the data root (POP909, ASAP, EMOPIA, Pop1K7) and of a user folder
with a labels CSV, as :class:`PieceRef` lists; their splits; the tasks (:func:`build_task`); the
note labels (melody role, velocity bins); :func:`read_ref` (a ref to a ``Piece``, re-timing
ASAP performances with :mod:`smu_explain.retiming`). Torch-free. Imports ``errors``, ``names``,
``musicfile`` and ``retiming``; :mod:`smu_explain.datasets` (cache, torch datasets) builds on it.

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
      ``<name>_annotations.txt`` (see ``retiming.retime_performance``); ``"both"`` (default)
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
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import SMUInputError
from .names import SPLIT_SCHEMES, TASKS
from .retiming import retime_performance

REPO_ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "val", "test")

MELODY_CLASSES = ["melody", "bridge", "piano"]
_MELODY_TRACKS = {"MELODY": 0, "BRIDGE": 1, "PIANO": 2}
VELOCITY_CLASSES = ["pp", "p", "mp", "mf", "f", "ff"]
#: lower bound of bins 1..5 (MidiBERT: pp 0-31, p 32-47, mp 48-63, mf 64-79, f 80-95, ff 96-127)
VELOCITY_EDGES = np.array([32, 48, 64, 80, 96])
EMOTION_CLASSES = ["Q1", "Q2", "Q3", "Q4"]


# --------------------------------------------------------------------------- roots
def setting_path(value: str | os.PathLike | None, env: str, default: Path) -> Path:
    """``value`` if given, else the environment variable ``env`` if set, else ``default``."""
    if value is not None:
        return Path(value)
    return Path(os.environ[env]) if os.environ.get(env) else default


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root`` if given, else ``$SMU_DATA_ROOT``, else ``<repo>/../shared/data``."""
    return setting_path(root, "SMU_DATA_ROOT", REPO_ROOT.parent / "shared" / "data")



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

        def count(f: float, n: int = n) -> int:
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


def load_json(path: Path, missing: str = "split file not found", broken: str = "not valid JSON") -> Any:
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
    d = load_json(path)
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
    file must exist inside ``folder`` (a relative path, or an absolute one inside it; ``..`` and
    symlinks are resolved first, so neither leads out of it); a file
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
    try:
        with open(labels_csv, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = [c.strip() for c in (reader.fieldnames or [])]
            if "file" not in cols or "label" not in cols:
                raise SMUInputError(labels_csv, f"needs columns file,label (found {cols})")
            rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    except UnicodeDecodeError as e:
        raise SMUInputError(labels_csv, f"not a UTF-8 text file (byte {e.start}): save the CSV as UTF-8") from None
    except csv.Error as e:  # e.g. a field over csv's size limit, a NUL byte
        raise SMUInputError(labels_csv, f"not a readable CSV ({e})") from None
    inside = folder.resolve()
    seen: dict[str, dict[str, str]] = {}
    for i, row in enumerate(rows, start=2):
        f = row["file"]
        if not f:
            raise SMUInputError(labels_csv, f"line {i}: empty file name")
        if not row["label"]:
            raise SMUInputError(labels_csv, f"line {i}: empty label for {f}")
        try:  # relative to the folder or absolute, ".." and symlinks resolved: it must stay inside
            f = (folder / f).resolve().relative_to(inside).as_posix()
        except ValueError:
            raise SMUInputError(f, f"listed in {labels_csv.name} (line {i}) but not inside {folder}") from None
        key = f
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


# --------------------------------------------------------------------------- reading a ref
def read_ref(ref: PieceRef, tokenizer: Any):
    """Read a ref into a ``Piece`` with the tokenizer's config (re-timing ASAP performances first)."""
    if ref.annotations is None:
        return tokenizer.read(ref.path)
    data = retime_performance(ref.path, ref.annotations)
    try:
        return tokenizer.read(data, name=Path(ref.path).stem)
    except SMUInputError as e:
        raise SMUInputError(ref.path, f"after re-timing onto {Path(ref.annotations).name}: {e.reason}") from None

