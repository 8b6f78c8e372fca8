"""Confirming on NEW pieces what the exploratory random-head test suggested the demo masker learned:
docs/masker_picks_confirm.json and docs/MASKER_PICKS_CONFIRM.md.

    python scripts/masker_picks_confirm.py                 # the pre-registered run (120 new pieces, 1,000 heads)
    python scripts/masker_picks_confirm.py --n-pop909 3 --n-asap 3 --n-heads 50 --out-dir /tmp/confirm   # a quick look

The rule (pre-registered in docs/MASKER_PICKS_CONFIRM.md, commit 4165455, before any run on new pieces):

* Hypotheses: every class of ``docs/masker_picks.json``'s ``null`` (``picks_null.random_head_test`` on 60
  fixed pieces, 24 classes: an exploratory run) with an uncorrected p below ``HYPOTHESIS_P``, each with the
  side of the random heads' median its trained effect fell on (``hypotheses``).
* New pieces, disjoint from the 60 (``new_pool``): POP909 songs of our validation and test splits
  (``corpora.pop909_splits``) other than the songs used and the songs the demo models trained on
  (``training_data.paths`` of their configs); ASAP score MIDIs (``corpora.asap_refs(source="score")``, one per
  work) of works other than those used. ``--n-pop909`` and ``--n-asap`` of them drawn with ``--seed``
  (``masker_picks.sample``, the exploratory script's draw).
* The same estimator: ``picks.label_table`` per piece, the pooled ``picks.class_effects`` table (label
  columns less ``role``), ``picks_null.random_head_test`` on the model's own encoder with ``--n-heads`` heads
  drawn at the model's initialisation (head seed ``--head-seed``), restricted to the hypotheses
  (``classes=``): Bonferroni over the hypotheses only.
* Confirmed (``decide``): corrected p below ``picks.ALPHA``, the trained effect on the same side of the random
  heads' median as in the exploratory run, and at least ``picks.MIN_EFFECT_SD`` from that median. A class
  with too few notes on the new pieces is not confirmed and still counts in the correction.

Needs the data root (``SMU_DATA_ROOT`` or ../shared/data); one CPU thread by default (``--threads``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: an exploratory class with an uncorrected p below this is a hypothesis of the confirmatory run
HYPOTHESIS_P = 0.05
#: the commit that fixed the rule before any run on new pieces
PREREGISTERED = "4165455"
EXPLORATORY = ROOT / "docs" / "masker_picks.json"

SET_NAMES = {"pop909": "POP909", "asap": "ASAP"}
#: the hypothesis classes in music's words (anything else: ``picks.phrase``)
MUSIC_WORDS = {
    ("harmony", "suspension/appoggiatura"): "suspensions and appoggiaturas (non-chord tones prepared by the same "
                                            "pitch or reached by a leap, left by a step)",
    ("harmony", "pedal"): "pedal notes (non-chord tones in the bass, repeated or held through the chord)",
    ("voice_position", "inner"): "inner-voice notes (neither the lowest nor the highest pitch sounding at their onset)",
    ("voice_position", "top"): "top-voice notes (the highest pitch sounding at their onset)",
    ("repeated", "repeated"): "repeated notes (the same pitch as the previous note of their voice)",
    ("duration", "< 1/8 (<0.5 q)"): "short notes (shorter than an eighth note)",
    ("duration", "1/8-1/4 (0.5-1 q)"): "notes from an eighth up to a quarter note long",
    ("duration", "1/4-1/2 (1-2 q)"): "notes from a quarter up to a half note long",
    ("duration", ">= 1/2 (>= 2 q)"): "long notes (a half note or longer)",
}


def load_masker_picks():
    """scripts/masker_picks.py as a module (its ``sample``: the exploratory draw of pieces)."""
    spec = importlib.util.spec_from_file_location("masker_picks_script", Path(__file__).with_name("masker_picks.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --------------------------------------------------------------------------- the rule (pure)

def side(trained: float, median: float) -> str:
    """Where a trained effect lies from the random heads' median: ``"above"`` or ``"below"``."""
    return "above" if trained > median else "below"


def hypotheses(null: Mapping[str, Any], p_below: float = HYPOTHESIS_P) -> list[dict[str, Any]]:
    """The exploratory run's classes (``null["classes"]``, a ``random_head_test`` result) with ``p < p_below``,
    in its order: ``{column, class, phrase, direction, exploratory: {trained_sd, random_median, p, p_corrected}}``."""
    return [{"column": f["column"], "class": f["class"], "phrase": f["phrase"],
             "direction": side(f["trained_sd"], f["random_median"]),
             "exploratory": {k: f[k] for k in ("trained_sd", "random_median", "p", "p_corrected")}}
            for f in null.get("classes", []) if f["p"] < p_below]


def used_groups(refs: Iterable, used_names: Iterable[str], trained_paths: Iterable[str | Path] = ()) -> set[str]:
    """The groups (song / work) of ``refs`` that hold a piece named in ``used_names`` or a file of
    ``trained_paths``. Every used name must be among ``refs`` (else the names have changed: ValueError)."""
    refs = list(refs)
    used = set(used_names)
    trained = {str(Path(p)) for p in trained_paths}
    missing = used - {r.name for r in refs}
    if missing:
        raise ValueError(f"{len(missing)} used pieces are not among the candidates, e.g. {sorted(missing)[:3]}")
    return {r.group for r in refs if r.name in used or str(Path(r.path)) in trained}


def new_pool(refs: Iterable, used_names: Iterable[str], trained_paths: Iterable[str | Path] = (),
             used_from: Iterable | None = None) -> list:
    """The refs of ``refs`` whose group (song / work) holds none of the pieces named ``used_names`` and none of
    the files ``trained_paths``, sorted by name. ``used_from``: the refs the used names are looked up in (default
    ``refs``), e.g. the whole corpus when ``refs`` is part of it."""
    refs, trained_paths = list(refs), list(trained_paths)
    drop = used_groups(refs, (), trained_paths) | used_groups(refs if used_from is None else used_from, used_names,
                                                               trained_paths)
    return sorted((r for r in refs if r.group not in drop), key=lambda r: r.name)


def training_paths(config: Mapping[str, Any], root: str | Path, repo: str | Path = ROOT) -> list[str]:
    """The files a model trained on (``config["training_data"]["paths"]``), ``<data_root>`` and ``<repo>``
    replaced by ``root`` and ``repo``."""
    out = []
    for p in (config.get("training_data") or {}).get("paths", []):
        out.append(str(Path(str(p).replace("<data_root>", str(root)).replace("<repo>", str(repo)))))
    return out


def decide(trained_sd: float, random_median: float, p_corrected: float, direction: str, *,
           alpha: float, min_sd: float) -> dict[str, Any]:
    """The three conditions of "confirmed" for one hypothesis and the verdict."""
    distance = abs(trained_sd - random_median)
    out = {"side": side(trained_sd, random_median), "distance_sd": float(distance),
           "significant": bool(p_corrected < alpha)}
    out["same_direction"] = out["side"] == direction
    out["beyond_bound"] = bool(distance >= min_sd)
    out["confirmed"] = bool(out["significant"] and out["same_direction"] and out["beyond_bound"])
    return out


def judge(hyps: Sequence[Mapping[str, Any]], null: Mapping[str, Any], table: Mapping[str, Any] | None = None
          ) -> list[dict[str, Any]]:
    """Each hypothesis with the confirmatory ``null`` (``random_head_test(..., classes=...)``) numbers and the
    verdict (``decide``); a hypothesis the null did not test is not confirmed. ``table``: the pooled
    ``class_effects`` result; adds each class's notes, pieces and the piece-bootstrap interval of the trained
    effect in SD (the table's interval over its score SD)."""
    found = {(f["column"], f["class"]): f for f in null.get("classes", [])}
    sd = ((table or {}).get("overall") or {}).get("score_sd")
    out = []
    for h in hyps:
        row = dict(h)
        f = found.get((h["column"], h["class"]))
        if f is None:
            row.update({"tested": False, "confirmed": False})
            out.append(row)
            continue
        row.update({"tested": True, "vs": f["vs"],
                    **{k: f[k] for k in ("trained_sd", "random_median", "random_lo", "random_hi", "random_min",
                                         "random_max", "p", "p_corrected", "n")}})
        row.update(decide(f["trained_sd"], f["random_median"], f["p_corrected"], h["direction"],
                          alpha=float(null["alpha"]), min_sd=float(null["min_sd"])))
        t = next((r for r in ((table or {}).get("columns") or {}).get(h["column"], []) if r["class"] == h["class"]),
                 None)
        if t is not None:
            iv = t["score_diff" if f["vs"] == "rest" else "score_adj"]
            row.update({"n_notes": t["n_notes"], "n_pieces": t["n_pieces"]})
            if sd and iv.get("lo") is not None:
                row["bootstrap_sd"] = {"lo": iv["lo"] / sd, "hi": iv["hi"] / sd, "level": iv.get("level", 0.95)}
        out.append(row)
    return out


def work_of(name: str) -> str:
    """An ASAP score's folder less a trailing movement or number (``asap/Schumann/Kreisleriana/7/midi_score`` ->
    ``asap/Schumann/Kreisleriana``): pieces of one multi-movement work or collection share it."""
    folder = name.rsplit("/", 1)[0]
    return re.sub(r"[/-]\d+$", "", folder)


def near_used(new: Iterable[str], used: Iterable[str]) -> list[str]:
    """The new ASAP pieces from the same multi-movement work or collection (``work_of``) as a used one."""
    seen = {work_of(n) for n in used if n.startswith("asap/")}
    return [n for n in new if n.startswith("asap/") and work_of(n) in seen]


def words(h: Mapping[str, Any]) -> str:
    from smu_explain.picks import phrase

    return MUSIC_WORDS.get((h["column"], h["class"]), phrase(h["column"], h["class"]))


def outcome(doc: Mapping[str, Any]) -> str:
    """The one-sentence outcome (also the line docs/MASKER_PICKS.md carries)."""
    hs = doc["hypotheses"]
    yes = [h for h in hs if h["confirmed"]]
    no = [h for h in hs if not h["confirmed"]]
    sets = " + ".join(f"{len(v)} {SET_NAMES.get(k, k)}" for k, v in doc["pieces"].items())
    head = (f"On {doc['n_pieces']} new pieces ({sets}), "
            f"{len(yes)} of the {len(hs)} pre-registered hypotheses held against {doc['null']['n_heads']:,} random "
            "heads (Bonferroni over the "
            f"{len(hs)})")
    if yes:
        head += ": " + "; ".join(f"{h['phrase']} {h['side']} a random read-out ({h['trained_sd']:+.2f} SD vs "
                                 f"{h['random_median']:+.2f}, corrected p = {h['p_corrected']:.3f})" for h in yes)
    if no:
        head += ("; not confirmed: " if yes else "; none confirmed: ") + ", ".join(h["phrase"] for h in no)
    return head + "."


# --------------------------------------------------------------------------- the page

def rule_lines(doc: Mapping[str, Any]) -> list[str]:
    r = doc["rule"]
    hs = doc["hypotheses"]
    k = len(hs)
    out = ["## The rule, fixed before running", "",
           f"Pre-registered in commit `{r['preregistered']}` (this page's first version), before any new piece was "
           f"measured. `docs/MASKER_PICKS.md` tested {doc['exploratory']['k']} classes of note against "
           f"{doc['exploratory']['n_heads']:,} random masker heads on {doc['model']}'s own encoder, on "
           f"{len(doc['exploratory']['pieces'])} fixed pieces: an exploratory run. Its hypotheses for this "
           f"confirmatory run are **every class with an uncorrected p < {r['hypothesis_p']:g} there**, each with the "
           "side of the random heads' median its trained effect fell on:", "",
           "| label | class | exploratory direction | exploratory effect, SD (random heads' median) | p | "
           f"corrected p (× {doc['exploratory']['k']}) |", "|---|---|---|---|---|---|"]
    for h in hs:
        e = h["exploratory"]
        out.append(f"| {h['column']} | {h['class']} | {h['direction']} | {e['trained_sd']:+.2f} "
                   f"({e['random_median']:+.2f}) | {e['p']:.3f} | {e['p_corrected']:.3f} |")
    pools = doc["pools"]
    out += ["", f"**New pieces, disjoint from the {len(doc['exploratory']['pieces'])}:** "
            f"{len(doc['pieces']['pop909'])} POP909 songs drawn (numpy `default_rng({r['seed']})`, the exploratory "
            "script's `sample`) from our validation and test splits (80/10/10 by song, seed 0) less the songs used "
            "and any song the demo models trained on (`training_data.paths` of "
            + " and ".join(f"models/{m}" for m in r["trained_models"]) + f"; pool {pools['pop909']['size']}); "
            f"{len(doc['pieces']['asap'])} ASAP score MIDIs (one per work, `asap_refs(source=\"score\")`) drawn the "
            f"same way from the works not used (pool {pools['asap']['size']}). {doc['n_pieces']} pieces in all.", "",
            "**The same estimator:** the masker's scores per note (`picks.label_table`, ratio "
            f"{r['ratio']:g}), the pooled `picks.class_effects` table (label columns less `role`; bootstrap "
            f"{r['n_boot']:,} resamples, seed {r['seed']}, reported only), and `picks_null.random_head_test` on the "
            f"model's own encoder: {r['n_heads']:,} heads drawn at their initialisation (`{r['init']}`), head seed "
            f"{r['head_seed']}, restricted to the {k} hypotheses.", "",
            f"**Confirmed** only when all three hold: the p-value corrected by Bonferroni over the {k} hypotheses "
            f"only (min(1, {k} p)) is below {r['alpha']:g}; the trained effect lies on the same side of the random "
            "heads' median as in the exploratory run; and it is at least "
            f"{r['min_sd']:g} SD (`picks.MIN_EFFECT_SD`) from that median. A class with too few notes on the new "
            f"pieces is not confirmed and still counts in the {k}. No other class is tested, and the run is not "
            "repeated with other pieces or seeds."]
    return out


def render(doc: Mapping[str, Any]) -> str:
    """docs/MASKER_PICKS_CONFIRM.md from the JSON this script writes."""
    hs = doc["hypotheses"]
    k = len(hs)
    nul = doc["null"]
    out = ["# Confirming what the demo masker learned, on new pieces", "",
           f"Made by `{doc.get('command', 'python scripts/masker_picks_confirm.py')}` ({doc['seconds'] / 60:.1f} min on "
           f"{doc['threads']} "
           f"CPU thread{'s' if doc['threads'] != 1 else ''}); numbers in `docs/masker_picks_confirm.json`. The "
           "exploratory run it checks: `docs/MASKER_PICKS.md`.", "", *rule_lines(doc), "", "## Result", "",
           f"> {doc['outcome']}", "",
           f"{doc['n_pieces']} pieces, {doc['n_notes']:,} notes; {nul['n_heads']:,} random heads "
           f"(score SD median {nul['random_score_sd']['median']:.3f}, {doc['model']}'s {nul['trained_score_sd']:.3f}; "
           f"the model's own head reproduces the table's scores to within {nul.get('trained_head_gap', 0):.0e}). "
           f"Effects in SD of each head's own scores; *vs* = what the class is compared with (duration classes: all "
           "other notes; the rest: notes of the same duration and register). Bootstrap: the trained effect's 95% "
           "interval over the new pieces (resampling pieces), for reference. With "
           f"{nul['n_heads']:,} heads the smallest corrected p is {k / (nul['n_heads'] + 1):.3f}.", "",
           "| class | vs | exploratory | new pieces: trained SD [bootstrap] | random heads: median [2.5%, 97.5%] | "
           "distance from median | p | corrected p | same direction | ≥ 0.2 SD | confirmed |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for h in hs:
        e = h["exploratory"]
        if not h.get("tested"):
            out.append(f"| {h['phrase']} | – | {h['direction']} ({e['trained_sd']:+.2f}) | too few notes | – | – | – | "
                       "– | – | – | no |")
            continue
        b = h.get("bootstrap_sd")
        bt = f" [{b['lo']:+.2f}, {b['hi']:+.2f}]" if b else ""
        out.append(f"| {h['phrase']} | {h['vs']} | {h['direction']} ({e['trained_sd']:+.2f}) | {h['trained_sd']:+.2f}"
                   f"{bt} | {h['random_median']:+.2f} [{h['random_lo']:+.2f}, {h['random_hi']:+.2f}] | "
                   f"{h['distance_sd']:.2f} | {h['p']:.4f} | {h['p_corrected']:.3f} | "
                   f"{'yes' if h['same_direction'] else 'no'} | {'yes' if h['beyond_bound'] else 'no'} | "
                   f"{'**confirmed**' if h['confirmed'] else 'no'} |")
    out += ["", "## In music's words", ""]
    for h in hs:
        out.append("- " + music_sentence(h))
    by = doc.get("by_set") or {}
    if by:
        out += ["", "The trained effect in each set on its own (descriptive, no test): "
                + "; ".join(f"{h['phrase']}: " + ", ".join(f"{SET_NAMES.get(s, s)} {by[s][h['column'] + ' | ' + h['class']]:+.2f}"
                                                          for s in by if by[s].get(h['column'] + ' | ' + h['class'])
                                                          is not None)
                            for h in hs) + " SD."]
    near = near_used(doc["pieces"].get("asap", []), doc["exploratory"]["pieces"])
    out += ["", "## What it does and does not cover", "",
            "The pieces are new (no song, and no ASAP work folder, of the exploratory 60; no song the demo models "
            "trained on), but they come from the same two collections, so the confirmation speaks for pop songs "
            "like POP909's and classical scores like ASAP's. The null is still a random read-out of "
            f"{doc['model']}'s own encoder, already shaped by adversarial training: a preference its features give "
            "every read-out is not called learned, and a confirmed class says the masker head reads the encoder "
            "unlike a random head does, not that the encoder learned nothing. ASAP works are the dataset's folders: "
            f"{len(near)} of the {len(doc['pieces'].get('asap', []))} new ASAP scores share a multi-movement work or "
            "collection with an exploratory one" + (f" ({', '.join(f'`{n}`' for n in near)})" if near else "")
            + ". p is two-sided, as in the exploratory run, with the direction checked separately.", "",
            f"## Pieces ({doc['n_pieces']})", ""]
    for key, names in doc["pieces"].items():
        out += [f"**{SET_NAMES.get(key, key)}** ({len(names)}): "
                + ", ".join(f"`{n}`" for n in names), ""]
    return "\n".join(out).rstrip("\n") + "\n"


def music_sentence(h: Mapping[str, Any]) -> str:
    w = words(h)
    e = h["exploratory"]
    then = f"the exploratory run had them {h['direction']} the random heads ({e['trained_sd']:+.2f} SD)"
    if not h.get("tested"):
        return f"**{w}**: not confirmed; the new pieces have too few of them to test ({then})."
    way = "higher" if h["side"] == "above" else "lower"
    now = (f"on the new pieces the masker scores them {way} than "
           + ("other notes" if h["vs"] == "rest" else "notes of the same length and register")
           + f" ({h['trained_sd']:+.2f} SD; random heads {h['random_median']:+.2f}, 95% of them in "
           f"[{h['random_lo']:+.2f}, {h['random_hi']:+.2f}]; corrected p = {h['p_corrected']:.3f})")
    if h["confirmed"]:
        return f"**{w}**: confirmed; {now}, as {then}."
    why = [x for x, ok in (("not significant after the correction", h["significant"]),
                           ("the other way round", h["same_direction"]),
                           (f"less than 0.2 SD from the random heads ({h['distance_sd']:.2f})", h["beyond_bound"]))
           if not ok]
    return f"**{w}**: not confirmed ({'; '.join(why)}); {now}; {then}."


# --------------------------------------------------------------------------- the run

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "models" / "demo-adversarial"))
    ap.add_argument("--trained-on", nargs="*", default=[str(ROOT / "models" / m) for m in ("demo-adversarial",
                                                                                           "demo-random")],
                    help="models whose training files are left out of the pool")
    ap.add_argument("--exploratory", default=str(EXPLORATORY))
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--n-pop909", type=int, default=60)
    ap.add_argument("--n-asap", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1, help="piece sample and bootstrap seed")
    ap.add_argument("--head-seed", type=int, default=1)
    ap.add_argument("--n-heads", type=int, default=1000)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--ratio", type=float, default=0.15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out-dir", default=str(ROOT / "docs"))
    args = ap.parse_args(argv)

    import torch

    from smu_explain import picks, picks_null
    from smu_explain.checkpoint import load_checkpoint
    from smu_explain.corpora import asap_refs, data_root, pop909_splits
    from smu_explain.harmony import LABEL_COLUMNS
    from smu_explain.io import atomic_write_text

    torch.set_num_threads(args.threads)
    t0 = time.time()
    mp = load_masker_picks()
    log = mp.log
    root = data_root(args.data_root)
    exp = json.loads(Path(args.exploratory).read_text())
    hyps = hypotheses(exp["null"])
    used = exp["results"]["all"]["pieces"]
    configs = [json.loads((Path(m) / "config.json").read_text()) for m in args.trained_on]
    trained = list(dict.fromkeys(p for c in configs for p in training_paths(c, root)))
    splits = pop909_splits(root)[0]
    every_pop = [r for part in splits.values() for r in part]
    every_asap = asap_refs(root, source="score")
    pools = {"pop909": new_pool([*splits["val"], *splits["test"]], [n for n in used if n.startswith("pop909/")],
                                trained, used_from=every_pop),
             "asap": new_pool(every_asap, [n for n in used if n.startswith("asap/")], trained)}
    sets = {"pop909": mp.sample(pools["pop909"], args.n_pop909, args.seed),
            "asap": mp.sample(pools["asap"], args.n_asap, args.seed)}
    names = {k: [r.name for r in v] for k, v in sets.items()}
    overlap = (set(used) | set(trained)) & {n for v in names.values() for n in v}
    if overlap:  # cannot happen by construction; checked all the same
        raise SystemExit(f"new pieces overlap the exploratory or training pieces: {sorted(overlap)[:5]}")
    log(f"code: {picks.__file__}; data: {root}")
    log(f"hypotheses: {[(h['column'], h['class'], h['direction']) for h in hyps]}")
    seen = {str(Path(r.path)) for r in [*every_pop, *every_asap]}
    log(f"pools: pop909 {len(pools['pop909'])}, asap {len(pools['asap'])}; drawing {args.n_pop909} + {args.n_asap}; "
        f"{sum(p in seen for p in trained)} of {len(trained)} training files are corpus files (left out with their song)")

    ckpt = load_checkpoint(args.model, kind="pretrained")
    model, tok = ckpt.encoder.eval(), ckpt.tokenizer
    name = Path(args.model).name
    frames: dict[str, list] = {}
    hidden: dict[str, list] = {}
    for key, refs in sets.items():
        for i, ref in enumerate(refs):
            piece = tok.read(ref.path, name=ref.name)
            frames.setdefault(key, []).append(picks.label_table(model, tok, piece, ratio=args.ratio))
            hidden.setdefault(key, []).append(picks_null.note_hidden(model, tok, piece))
            log(f"{key} {i + 1}/{len(refs)} {ref.name}: {len(piece)} notes")
    cols = [c for c in LABEL_COLUMNS if c != "role"]
    pooled = [f for k in sets for f in frames[k]]
    table = picks.class_effects(pooled, columns=cols, n_boot=args.n_boot, seed=args.seed)
    by_set = {}
    for key in sets:
        r = picks.class_effects(frames[key], columns=cols, n_boot=0)
        sd = r["overall"]["score_sd"]
        by_set[key] = {f"{h['column']} | {h['class']}": (row["score_diff" if h["column"] in picks.CONTROLS
                                                             else "score_adj"]["est"] / sd)
                       for h in hyps for row in r["columns"].get(h["column"], []) if row["class"] == h["class"]}
    t1 = time.time()
    null = picks_null.random_head_test(pooled, [h for k in sets for h in hidden[k]], model.masker_head,
                                       model.config.init, columns=cols, n_heads=args.n_heads, seed=args.head_seed,
                                       result=table, trained_head=model.masker_head, model=name,
                                       classes=[(h["column"], h["class"]) for h in hyps])
    null["seconds"] = round(time.time() - t1, 1)
    log(f"{args.n_heads} random heads in {null['seconds']:.0f} s")
    seconds = time.time() - t0
    doc: dict[str, Any] = {
        "model": name, "seconds": round(seconds, 1), "threads": args.threads,
        "command": " ".join(["python scripts/masker_picks_confirm.py", *(sys.argv[1:] if argv is None else argv)]),
        "rule": {"preregistered": PREREGISTERED, "hypothesis_p": HYPOTHESIS_P, "alpha": null["alpha"],
                 "min_sd": null["min_sd"], "n_heads": args.n_heads, "head_seed": args.head_seed, "init": null["init"],
                 "seed": args.seed, "n_boot": args.n_boot, "ratio": args.ratio,
                 "n_pop909": args.n_pop909, "n_asap": args.n_asap,
                 "trained_models": [Path(m).name for m in args.trained_on],
                 "correction": f"Bonferroni over the {len(hyps)} hypotheses"},
        "exploratory": {"json": str(Path(args.exploratory).relative_to(ROOT)) if Path(args.exploratory).is_relative_to(
            ROOT) else str(args.exploratory), "model": exp["null"]["model"], "pieces": used,
            "n_heads": exp["null"]["n_heads"], "seed": exp["null"]["seed"], "k": exp["null"]["k"]},
        "pools": {k: {"size": len(v), "drawn": len(sets[k])} for k, v in pools.items()},
        "pieces": names, "n_pieces": null["n_pieces"], "n_notes": null["n_notes"],
        "hypotheses": judge(hyps, null, table), "untested": null.get("untested", []),
        "by_set": by_set, "null": null, "table": table}
    doc["outcome"] = outcome(doc)
    log(doc["outcome"])
    out = Path(args.out_dir)
    atomic_write_text(out / "masker_picks_confirm.json", json.dumps(doc, indent=1, allow_nan=False) + "\n")
    atomic_write_text(out / "MASKER_PICKS_CONFIRM.md", render(doc))
    log(f"wrote {out / 'masker_picks_confirm.json'} and {out / 'MASKER_PICKS_CONFIRM.md'} in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
