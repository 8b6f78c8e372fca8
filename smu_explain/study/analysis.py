"""Masker analysis: note classes, class tables, Spearman, freeze history, examples."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SMUInputError
from ..io import atomic_write_stream

# ============================================================================ masker analysis helpers

def _velocity_class(v: np.ndarray) -> np.ndarray:
    from ..corpora import VELOCITY_CLASSES, velocity_bins

    return np.asarray([VELOCITY_CLASSES[int(b)] for b in velocity_bins(np.asarray(v))], dtype=object)


def _role_class(piece: Any) -> np.ndarray:
    names = [str(n).strip().upper() for n in piece.track_names]
    roles = {"MELODY": "melody", "BRIDGE": "bridge", "PIANO": "accompaniment"}
    return np.asarray([roles.get(names[int(t)] if 0 <= int(t) < len(names) else "", "other")
                       for t in piece.track], dtype=object)


GROUPINGS = ("register", "metric", "duration", "role", "velocity")


def score_spread(scores: np.ndarray) -> dict[str, Any]:
    """How spread the masker's scores are: quartiles, interquartile range, 10th/90th
    percentiles and std (a masker whose scores sit in a narrow band says little)."""
    x = np.asarray(scores, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"n": 0}
    q10, q25, q50, q75, q90 = np.percentile(x, [10, 25, 50, 75, 90])
    return {"n": int(x.size), "p10": float(q10), "q1": float(q25), "median": float(q50), "q3": float(q75),
            "p90": float(q90), "iqr": float(q75 - q25), "std": float(x.std())}


def note_classes(df, piece: Any) -> dict[str, np.ndarray]:
    """Per note of an explain table: register, metric position (of the quantised position,
    ``noteclasses.metric_beats``), duration class (noteclasses.py's rules), track role (POP909 track names; ``other`` elsewhere) and MidiBERT velocity bin."""
    from ..noteclasses import duration_class, metric_beats, metric_class, register_class

    return {"register": register_class(df["pitch"].to_numpy()), "metric": metric_class(metric_beats(df)),
            "duration": duration_class(df["duration_q"].to_numpy()), "role": _role_class(piece),
            "velocity": _velocity_class(df["velocity"].to_numpy())}


def class_order(grouping: str) -> list[str]:
    """The musical order of a grouping's classes (register low to high, etc.)."""
    from ..corpora import VELOCITY_CLASSES
    from ..noteclasses import DURATION_ORDER, METRIC_ORDER, REGISTER_EDGES

    return {"register": [e[2] for e in REGISTER_EDGES], "metric": list(METRIC_ORDER),
            "duration": list(DURATION_ORDER), "role": ["melody", "bridge", "accompaniment", "other"],
            "velocity": list(VELOCITY_CLASSES)}.get(grouping, [])


def class_table(values: Mapping[str, np.ndarray], classes: np.ndarray, order: Sequence[str] = ()
                ) -> list[dict[str, Any]]:
    """Per class: ``n`` and the mean of every array in ``values`` (bool arrays -> fractions).
    Classes come in ``order`` first, then any others sorted; absent classes are left out."""
    rows = []
    present = {str(x) for x in classes}
    for c in [o for o in order if o in present] + sorted(present - set(order)):
        sel = np.asarray([str(x) == c for x in classes])
        row: dict[str, Any] = {"class": c, "n": int(sel.sum())}
        for k, v in values.items():
            vv = np.asarray(v, dtype=np.float64)[sel]
            vv = vv[np.isfinite(vv)]
            row[k] = float(vv.mean()) if vv.size else None
        rows.append(row)
    return rows


def spearman(x: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    from scipy import stats as st

    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return {"rho": None, "p": None, "n": int(ok.sum())}
    r = st.spearmanr(x[ok], y[ok])
    return {"rho": float(r.statistic), "p": float(r.pvalue), "n": int(ok.sum())}


def freeze_history(snapshots: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """How the frozen set changes: per snapshot (in epoch order) the frozen fraction, the
    Jaccard overlap with the previous and with the last snapshot, and the share of the
    previous snapshot's frozen notes still frozen (``kept``)."""
    snaps = sorted(snapshots, key=lambda s: s["epoch"])

    def vec(s):
        names = sorted(s["flags"])
        return names, (np.concatenate([s["flags"][n] for n in names]) if names else np.zeros(0, bool))

    vecs = [vec(s) for s in snaps]
    last = vecs[-1] if vecs else None
    out = []
    prev = None
    for s, (names, v) in zip(snaps, vecs, strict=False):
        row = {"epoch": s["epoch"], "step": s["step"], "n_notes": int(v.size), "n_frozen": int(v.sum()),
               "frozen_frac": float(v.mean()) if v.size else 0.0,
               "jaccard_prev": None, "kept_from_prev": None, "jaccard_last": None}
        if prev is not None and prev[0] == names and prev[1].size == v.size:
            inter = float((prev[1] & v).sum())
            union = float((prev[1] | v).sum())
            row["jaccard_prev"] = inter / union if union else None
            row["kept_from_prev"] = inter / float(prev[1].sum()) if prev[1].sum() else None
        if last is not None and last[0] == names and last[1].size == v.size:
            union = float((last[1] | v).sum())
            row["jaccard_last"] = float((last[1] & v).sum()) / union if union else None
        out.append(row)
        prev = (names, v)
    return out


def note_context(df, note: int, piece: Any, span_q: float = 4.0, max_notes: int = 80) -> dict[str, Any]:
    """The notes around ``note`` (onsets within ``span_q`` quarters), for a small piano roll."""
    row = df.loc[df["note"] == note].iloc[0]
    t0 = float(row["onset_q"])
    near = df[(df["onset_q"] >= t0 - span_q) & (df["onset_q"] <= t0 + span_q)]
    near = near.iloc[np.argsort(np.abs(near["onset_q"].to_numpy() - t0), kind="stable")[:max_notes]]
    near = near.sort_values(["onset_q", "pitch"])
    cols = [c for c in ("note", "pitch", "velocity", "track", "onset_q", "duration_q", "bar", "beat", "score",
                        "frozen", "picked") if c in near.columns]
    bars = np.asarray(getattr(piece, "bar_starts_q", np.zeros(0)), dtype=float)
    bars = bars[(bars >= t0 - span_q - 4) & (bars <= t0 + span_q)]
    return {"notes": [{c: _py(r[c]) for c in cols} for _, r in near.iterrows()],
            "bar_starts_q": [float(b) for b in bars],
            "track_names": [str(n) for n in getattr(piece, "track_names", [])]}


def _py(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    return x


def masker_analysis(adv_model, random_model, tokenizer, pieces: Sequence[tuple[str, Sequence[Any]]], *,
                    snapshots: Sequence[Mapping[str, Any]] = (), pretrain_refs: Mapping[str, Any] | None = None,
                    ratio: float = 0.15, freeze_top: float = 0.3, n_examples: int = 5) -> dict[str, Any]:
    """The masker analysis (schema: docs/study/README.md, ``analysis.json``).

    ``pieces`` = [(source name, [PieceRef, ...])] of validation pieces. For each piece
    ``explain_piece`` runs on the adversarial model (masker ``score``, ``frozen`` = top
    ``freeze_top`` by score, ``picked``, its own recovery loss) and on the random model
    (per-note recovery loss = sum over attributes of ``loss_<a>``, each note masked once).
    Reports Spearman(score, random model's loss) overall and per source, tables by note
    class (``GROUPINGS``), the freeze-book history (``freeze_history``) and
    ``n_examples`` frozen notes with their context: from the last freeze snapshot on
    POP909/ASAP/EMOPIA training pieces when there is one, else from the validation pieces.
    """
    scored = _score_pieces(adv_model, random_model, tokenizer, pieces, ratio, freeze_top)
    cat = _cat
    out: dict[str, Any] = {
        "ratio": ratio, "freeze_top": freeze_top,
        "pieces_per_source": {s: v["pieces"] for s, v in scored["sources"].items()},
        "n_notes": int(sum(len(x) for x in scored["score"])),
        "spearman_random_loss": spearman(cat(scored["score"]), cat(scored["random_loss"])),
        "spearman_own_loss": spearman(cat(scored["score"]), cat(scored["own_loss"])),
        "score_spread": score_spread(cat(scored["score"])),
        "sources": scored["sources"], "by_class": _class_tables(scored["by_group"]), "skipped": scored["skipped"],
        "freeze_history": freeze_history(snapshots) if snapshots else [],
    }
    out["highlights"] = {"highest_score_class": _highest_score_class(out["by_class"], out["n_notes"])}
    examples: list[dict[str, Any]] = []
    if snapshots and pretrain_refs:
        last = max(snapshots, key=lambda s: s["epoch"])
        out["examples_frozen_by"] = f"the freeze book after epoch {last['epoch']} (step {last['step']}), " \
                                    "training pieces"
        examples = _snapshot_examples(adv_model, tokenizer, last, pretrain_refs, ratio, n_examples)
    if not examples:
        out["examples_frozen_by"] = f"the top-{freeze_top:.0%} rule on validation pieces (no freeze snapshot)"
        examples = _validation_examples(scored["tables"], n_examples)
    out["examples"] = examples
    return out


def _cat(xs: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate(xs) if xs else np.zeros(0)


def _score_pieces(adv_model, random_model, tokenizer, pieces, ratio: float, freeze_top: float) -> dict[str, Any]:
    """Explain every piece with both models: per-note masker score, the random model's and
    the adversarial model's own recovery loss, note classes; per-source Spearman."""
    from ..corpora import read_ref
    from ..explain import explain_piece

    attrs = list(tokenizer.attributes)
    all_score, all_rl, all_own = [], [], []
    by_group: dict[str, dict[str, list]] = {g: {"cls": [], "score": [], "frozen": [], "picked": [],
                                                "random_loss": []} for g in GROUPINGS}
    sources: dict[str, Any] = {}
    tables, skipped = [], []
    for source, refs in pieces:
        s_score, s_rl, s_own = [], [], []
        n_p = 0
        for ref in refs:
            try:
                piece = read_ref(ref, tokenizer)
            except SMUInputError as e:
                skipped.append({"path": str(ref.path), "reason": e.reason})
                continue
            if len(piece.pitch) == 0:
                continue
            da = explain_piece(adv_model, tokenizer, piece, ratio=ratio, freeze_top=freeze_top, seed=0)
            dr = explain_piece(random_model, tokenizer, piece, ratio=ratio, freeze_top=freeze_top, seed=0)
            rl = dr[[f"loss_{a}" for a in attrs]].sum(axis=1).to_numpy()
            own = da[[f"loss_{a}" for a in attrs]].sum(axis=1).to_numpy()
            sc = da["score"].to_numpy()
            s_score.append(sc); s_rl.append(rl); s_own.append(own)
            cls = note_classes(da, piece)
            for g in GROUPINGS:
                if g == "role" and source != "pop909":
                    continue
                by_group[g]["cls"].append(cls[g])
                by_group[g]["score"].append(sc)
                by_group[g]["frozen"].append(da["frozen"].to_numpy())
                by_group[g]["picked"].append(da["picked"].to_numpy())
                by_group[g]["random_loss"].append(rl)
            tables.append((source, ref, piece, da))
            n_p += 1
        sources[source] = {"pieces": n_p, "n_notes": int(sum(len(x) for x in s_score)),
                           "spearman_random_loss": spearman(_cat(s_score), _cat(s_rl)),
                           "spearman_own_loss": spearman(_cat(s_score), _cat(s_own)),
                           "mean_score": float(_cat(s_score).mean()) if s_score else None}
        all_score += s_score; all_rl += s_rl; all_own += s_own
    return {"score": all_score, "random_loss": all_rl, "own_loss": all_own, "by_group": by_group,
            "sources": sources, "tables": tables, "skipped": skipped}


def _class_tables(by_group: Mapping[str, Mapping[str, list]]) -> dict[str, list[dict[str, Any]]]:
    """Score, frozen and picked shares and the random model's loss per note class, per grouping."""
    out: dict[str, list[dict[str, Any]]] = {}
    for g, d in by_group.items():
        out[g] = class_table({k: _cat(d[k]) for k in ("score", "frozen", "picked", "random_loss")},
                             _cat(d["cls"]), class_order(g)) if d["cls"] else []
    return out


def _highest_score_class(by_class: Mapping[str, list[dict[str, Any]]], n_notes: int) -> dict[str, Any] | None:
    """The class with the highest mean score (classes with >= 20 notes, or any, for the summary)."""
    best = None
    for g, rows in by_class.items():
        for r in rows:
            if r["score"] is None or r["n"] < min(20, max(1, n_notes // 50)):
                continue
            if best is None or r["score"] > best["score"]:
                best = {"grouping": g, "class": r["class"], "score": r["score"], "n": r["n"]}
    return best


def _snapshot_examples(adv_model, tokenizer, last: Mapping[str, Any], pretrain_refs: Mapping[str, Any],
                       ratio: float, n_examples: int) -> list[dict[str, Any]]:
    """Frozen notes of the last freeze snapshot on POP909/ASAP/EMOPIA training pieces, taken
    round-robin over the sources in a seeded order; the highest-scoring frozen note of each."""
    from ..corpora import read_ref
    from ..explain import masker_view
    from ..freeze_book import FreezeBook

    cands = [nm for nm in sorted(last["flags"]) if nm in pretrain_refs
             and pretrain_refs[nm].source in ("pop909", "asap", "emopia") and last["flags"][nm].any()]
    rng = np.random.default_rng(0)
    by_src: dict[str, list[str]] = {}
    for nm in cands:
        by_src.setdefault(pretrain_refs[nm].source, []).append(nm)
    order: list[str] = []
    lists = [list(rng.permutation(v)) for _, v in sorted(by_src.items())]
    while any(lists) and len(order) < 4 * n_examples:
        for lst in lists:
            if lst:
                order.append(str(lst.pop(0)))
    examples: list[dict[str, Any]] = []
    for nm in order:
        if len(examples) >= n_examples:
            break
        ref = pretrain_refs[nm]
        try:
            piece = read_ref(ref, tokenizer)
        except SMUInputError:
            continue
        flags = last["flags"][nm]
        book = FreezeBook()
        fr = np.zeros(len(piece.pitch), bool)
        fr[: min(len(fr), len(flags))] = flags[: len(fr)]
        book.flags = {0: fr}
        # scores from the adversarial model; frozen = the book's flags; picked = top ratio of the rest
        df = masker_view(adv_model, tokenizer, piece, ratio=ratio, freeze_book=book, piece_id=0)
        if not fr.any():
            continue
        note = int(df.loc[fr, "score"].idxmax())
        examples.append(_example(ref, piece, df, note, source=ref.source, split="pretrain train"))
    return examples


def _validation_examples(tables, n_examples: int) -> list[dict[str, Any]]:
    """Without a freeze snapshot: the highest-scoring note of the top-``freeze_top`` rule on
    the validation pieces."""
    examples: list[dict[str, Any]] = []
    for source, ref, piece, da in tables:
        if len(examples) >= n_examples:
            break
        if not da["frozen"].any():
            continue
        note = int(da.loc[da["frozen"], "score"].idxmax())
        examples.append(_example(ref, piece, da, note, source=source, split="val"))
    return examples


def _example(ref, piece, df, note: int, source: str, split: str) -> dict[str, Any]:
    row = df.loc[df["note"] == note].iloc[0]
    ctx = note_context(df, note, piece)
    cls = note_classes(df.loc[[note]] if note in df.index else df.iloc[[0]], piece.subset([note]))
    return {"piece": ref.name, "path": str(ref.path), "source": source, "split": split, "note": int(note),
            "pitch": int(row["pitch"]), "velocity": int(row["velocity"]), "track": int(row["track"]),
            "onset_q": float(row["onset_q"]), "duration_q": float(row["duration_q"]),
            "bar": int(row["bar"]), "beat": float(row["beat"]), "score": float(row["score"]),
            "classes": {g: str(v[0]) for g, v in cls.items()}, "context": ctx}


SNAPSHOT_GLOB = "freeze_*.npz"


def save_freeze_snapshot(path: Path, book: Any, names: Sequence[str], epoch: int, step: int) -> Path:
    n = len(names) if names else (max(book.flags) + 1 if book.flags else 0)
    flags = [book.frozen_notes(i) for i in range(n)]
    offsets = np.concatenate([[0], np.cumsum([len(f) for f in flags])]).astype(np.int64)
    allf = np.concatenate(flags) if flags else np.zeros(0, bool)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = dict(names=np.asarray([str(x) for x in (names or range(n))], dtype=np.str_),
                  offsets=offsets, bits=np.packbits(allf.astype(bool)), n_bits=np.int64(len(allf)),
                  epoch=np.int64(epoch), step=np.int64(step),
                  stats=np.asarray(json.dumps(book.history[-1] if book.history else {})))
    atomic_write_stream(path, lambda fh: np.savez_compressed(fh, **arrays))
    return path


def load_freeze_snapshot(path: Path) -> dict[str, Any]:
    """{'epoch', 'step', 'stats', 'flags': {piece name: bool array}} of a snapshot file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            names = [str(x) for x in z["names"]]
            offsets = z["offsets"]
            bits = np.unpackbits(z["bits"])[: int(z["n_bits"])].astype(bool)
            out = {"epoch": int(z["epoch"]), "step": int(z["step"]), "stats": json.loads(str(z["stats"]))}
    except (OSError, KeyError, ValueError) as e:
        raise SMUInputError(path, f"unreadable freeze snapshot ({e})") from None
    out["flags"] = {nm: bits[offsets[i]:offsets[i + 1]] for i, nm in enumerate(names)}
    return out
