"""What the demo masker picks, in music's words: docs/masker_picks.json and docs/MASKER_PICKS.md.

    python scripts/masker_picks.py                      # demo-adversarial, 30 POP909 val + 30 ASAP scores
    python scripts/masker_picks.py --n-pop909 5 --n-asap 5 --out-dir /tmp/picks   # a quick look

Pieces: a seeded sample (``--seed``) of our POP909 validation split (``data.pop909_splits``:
80/10/10 by song, seed 0; the demo models never saw these songs) and of the ASAP score MIDIs
(``corpora.asap_refs(source="score")``, one per work; the demo models saw no ASAP). Each set is
measured on its own and pooled (``picks.class_effects``: bootstrap over pieces; the pooled
table leaves out ``role``, which there would only tell the two data sets apart). The chord
check compares ``harmony.chords`` with Pop1K7's chord markers on ``--chord-check`` pieces
that were not used to choose the template weights. ``--control`` (demo-random, whose masker head
was never trained) is measured on the same pieces as a baseline, and each class's preference of the
two compared (``picks.compare_effects``: the difference of the standardised effects, paired bootstrap
over the same pieces; ``comparison`` in the JSON). ``--null-heads`` (1,000) masker heads drawn at their
initialisation on the model's OWN encoder score the same pooled pieces (``picks_null.random_head_test``:
per class, the trained effect's Monte Carlo p-value among theirs, Bonferroni over the classes; ``null`` in
the JSON; the verdict the page stands by). Needs the data root (``SMU_DATA_ROOT`` or ../shared/data); one
CPU thread by default (``--threads``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sample(refs, n: int, seed: int):
    refs = sorted(refs, key=lambda r: r.name)
    if n >= len(refs):
        return refs
    idx = np.sort(np.random.default_rng(seed).choice(len(refs), n, replace=False))
    return [refs[i] for i in idx]


def chord_check(root, n: int) -> dict:
    """Root accuracy of harmony.chords on ``n`` Pop1K7 pieces outside the 60 used for tuning."""
    from smu_explain import harmony
    from smu_explain.corpora import pop1k7_refs
    from smu_explain.reading import read_piece

    files = [r.path for r in pop1k7_refs(root)]
    tuned = set(np.random.default_rng(0).choice(len(files), 60, replace=False).tolist())
    rest = [i for i in range(len(files)) if i not in tuned]
    pick = sorted(np.random.default_rng(1).choice(rest, min(n, len(rest)), replace=False).tolist())
    out = {}
    for unit in harmony.UNITS:
        hits = units = 0
        for i in pick:
            r = harmony.chord_accuracy(read_piece(files[i]), harmony.marker_chords(files[i]), unit)
            hits += r.get("root_hits", 0)
            units += r["n_beats"]
        out[unit] = {"root_accuracy": hits / units if units else None, "beats": units, "hits": hits}
    return {"pieces": len(pick), "by_unit": out,
            "rule": "beat by beat: the chord of the unit holding the beat's middle vs the Pop1K7 marker in effect "
                    "there; beats with no marker chord left out; "
                    "pieces: 100 drawn (seed 1) from those outside the 60 (seed 0) used to tune the weights"}


def corrected_in_sd(r: dict) -> dict:
    """Each label class a sentence may name (``picks.candidates``, not duration or register) of
    result ``r``: its difference vs notes of the same duration and register with the interval the
    sentence decides on (corrected for the classes tested, ``picks.named_interval``), in units of
    the scores' standard deviation, and whether the sentence names it."""
    from smu_explain import picks

    cands = picks.candidates(r)
    units, level, sd = int(r.get("n_groups", r["n_pieces"])), float(r.get("level", 0.95)), picks.effect_sd(r)
    named = {(f["column"], f["class"]) for f in picks.significant(r)}
    out = {}
    for c in cands:
        if c["column"] in picks.CONTROLS:
            continue
        wide = picks.named_interval(c["effect"], units, len(cands), level=level)
        out[(c["column"], c["class"])] = {"sd": picks.in_sd(wide, sd), "excludes_zero": picks.excludes_zero(wide),
                                          "named": (c["column"], c["class"]) in named, "level": wide and wide["level"]}
    return out


def headline(res: dict, control: dict, comparison: dict | None = None, null: dict | None = None) -> list[str]:
    """The pooled sentences of the model and the control, and a table of every label class whose
    interval, corrected for the classes tested, excludes 0 for either model: the difference in units
    of each model's score standard deviation (the control head's scores spread far less) with that
    corrected interval, and whether the sentence names it (the interval lies beyond
    ``picks.MIN_EFFECT_SD``)."""
    from smu_explain import picks

    found = {"a": corrected_in_sd(res), "c": corrected_in_sd(control)}
    keys = [k for k in dict.fromkeys([*found["a"], *found["c"]])
            if any((found[m].get(k) or {}).get("excludes_zero") for m in "ac")]
    keys.sort(key=lambda k: -max(abs(((found[m].get(k) or {}).get("sd") or {}).get("est") or 0) for m in "ac"))
    sa, sc = res["overall"]["score_sd"], control["overall"]["score_sd"]
    bound = picks.MIN_EFFECT_SD

    def cell(f):
        if not f or not f.get("sd"):
            return "– | –"
        d = f["sd"]
        star = " *" if f["excludes_zero"] else ""
        return f"{d['est']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}]{star} | {'**named**' if f['named'] else 'no'}"

    level = next((f["level"] for m in "ac" for f in found[m].values() if f["level"]), None)
    out = [f"## Headline (both sets pooled: {res['n_pieces']} pieces, {res['n_notes']:,} notes)", "",
           f"> {res['sentence']}", "", "Control, a masker head that was never trained (see the last section):", "",
           f"> {control['sentence']}", "",
           "Every class (other than duration and register) whose difference from notes of the same duration and "
           "register has an interval, corrected for the classes tested "
           + (f"({level:.1%}, Bonferroni), " if level else "(Bonferroni), ")
           + "that excludes 0 for either model (`*`), in units of each model's score standard deviation "
           f"({res['model']}: {sa:.3f}, {control['model']}: {sc:.3f}); *named* = the whole interval lies beyond "
           f"±{bound:g} SD (Cohen's 'small' effect), the sentences' minimum effect size. Before that bound "
           "was added, every `*` class could be named (a sentence shows its largest three above and two below).",
           "", f"| label | class | {res['model']}: SD [corrected interval] | named | "
               f"{control['model']} (untrained head): SD [corrected interval] | named |", "|---|---|---|---|---|---|"]
    out += [f"| {col} | {cls} | {cell(found['a'].get((col, cls)))} | {cell(found['c'].get((col, cls)))} |"
            for col, cls in keys]
    out += ["", "In SD units each head's preferences are sized in its own spread: an untrained head's raw score "
            "differences look small because its scores are squeezed, not because its preferences are. A minimum "
            "effect size tells a real, sizeable preference from a tiny one; it cannot tell a learned preference from "
            "one any read-out of the encoder would have. A class both heads favour the same way is evidence about "
            "the encoder and the notes, not about what adversarial training taught the masker."]
    return out + [""] + (learned(comparison, superseded=bool(null)) if comparison else []) + (
        random_heads(null, comparison) if null else [])


def learned(cmp: dict, superseded: bool = False) -> list[str]:
    """The comparison of the two heads (``picks.compare_effects``): its sentence and, per class, each
    head's standardised effect, the difference with its corrected paired interval, and the verdict.
    ``superseded``: a note that the random-heads test below is the verdict the page stands by."""
    a, b = cmp["models"]
    level = 1 - 0.05 / max(cmp["k"], 1)
    note = ([f"**Superseded** by the next subsection, whose verdict this page stands by: one untrained head is one "
             f"draw, and {a}'s own encoder read out by many random heads shows that a single head's class effects "
             "vary from draw to draw by more than this interval allows for (the next table puts this head's effect "
             "beside their range). The numbers are kept for reference.", ""] if superseded else [])

    def verdict(f):
        return "**learned**" if f["clear"] else "differs, not beyond the bound" if f["excludes_zero"] else "no"

    out = [f"### Learned, or a random read-out? ({a} vs the untrained head of {b}, the same {cmp['n_pieces']} pieces)",
           "", *note, f"> {cmp['sentence']}", "",
           f"Per class: each head's difference in units of its own score standard deviation (as above), and "
           f"{a}'s minus {b}'s with a paired bootstrap interval ({cmp['n_boot']:,} resamples of the pieces, seed "
           f"{cmp['seed']}, each drawn once for both heads; each effect divided by its head's SD on that resample), "
           f"corrected for the {cmp['k']} classes compared ({level:.1%}, Bonferroni, as the sentences are). "
           f"*learned* = that interval lies wholly beyond ±{cmp['min_sd']:g} SD, the sentences' minimum effect; "
           "*differs* = it excludes 0 but reaches inside the bound. Duration and register classes: the raw "
           "difference from all other notes (they are the controls of the rest). Caveats: the untrained head sits "
           f"on {b}'s own encoder (pre-trained on the same data with random masks), so a difference mixes what "
           f"{a}'s masker learned with how adversarial masking changed its encoder; and it is one random head, so "
           "the interval covers the choice of pieces, not the draw of the head.", "",
           f"| label | class | vs | {a}: SD | {b}: SD | difference, SD [corrected paired interval] | learned |",
           "|---|---|---|---|---|---|---|"]
    for f in cmp["classes"]:
        iv = f["named"]
        out.append(f"| {f['column']} | {f['class']} | {f['vs']} | {f['model_sd']:+.2f} | {f['control_sd']:+.2f} | "
                   f"{f['diff']['est']:+.2f} [{iv['lo']:+.2f}, {iv['hi']:+.2f}] | {verdict(f)} |")
    return out + [""]


def random_heads(null: dict, cmp: dict | None = None) -> list[str]:
    """The trained head against many random heads on its own encoder (``picks_null.random_head_test``): the
    sentence, the rule, and per class the trained effect, the random heads' median and 2.5-97.5% range, the
    p-values and the verdict (and the single untrained head's effect of ``cmp``, where given)."""
    n, k, a = null["n_heads"], null["k"], null["model"]
    single = {(f["column"], f["class"]): f["control_sd"] for f in (cmp or {}).get("classes", [])}
    b = (cmp or {}).get("models", ["", ""])[1]
    inside = [(f["random_lo"] <= single[key] <= f["random_hi"]) for f in null["classes"]
              if (key := (f["column"], f["class"])) in single]
    rsd = null["random_score_sd"]
    out = [f"### Learned, against {n:,} random read-outs of {a}'s own encoder (the verdict this page stands by)", "",
           f"> {null['sentence']}", "",
           f"The null for \"the masker learned to prefer a class\" is what a random read-out of the same encoder "
           f"shows: {n:,} masker heads of {a}'s architecture drawn at their initialisation (`{null['init']}`: as a new "
           f"model's head is initialised; head i under torch seed SeedSequence([{null['seed']}, i])) score the same "
           f"{null['n_pieces']} pieces from the same hidden states (the encoder run once; the model's own head on them "
           f"gives the table's scores to within {null.get('trained_head_gap', 0):.0e}), and each head's class effects "
           "are computed exactly as the trained head's (difference from notes of the same duration x register, raw for "
           "duration and register; in SD of that head's own scores: random heads' score SD median "
           f"{rsd['median']:.3f} [{rsd['lo']:.3f}, {rsd['hi']:.3f}], {a}'s {null['trained_score_sd']:.3f}). "
           "p = (1 + number of random heads at least as far from the centre as the trained head) / (1 + heads), "
           "two-sided around the median of all the effects (the random heads' and the trained one): a random "
           "read-out need not be centred on 0, and the median of all of them keeps p exact. Here the random heads' "
           f"medians are all within {max(abs(f['random_median']) for f in null['classes']):.2f} SD of 0, as they "
           "should be (a head and its negated last layer are equally likely, so the null is symmetric about 0). "
           f"*learned* = p corrected for the "
           f"{k} classes (Bonferroni, × {k}) below {null['alpha']:g} and the trained effect at least "
           f"±{null['min_sd']:g} SD from the random heads' median. With {n:,} heads the smallest corrected p is "
           f"{k / (n + 1):.3f}. The pieces are fixed: this covers the draw of the head, not the choice of pieces (the "
           "tables' bootstrap intervals do that, for one head)."]
    if inside:
        wide = sorted(null["classes"], key=lambda f: f["random_lo"] - f["random_hi"])[:3]
        out += ["", f"{b}'s single untrained head (the previous subsection's control, on its own encoder) lies inside "
                f"these random heads' 95% range for {sum(inside)} of {len(inside)} classes: as a random read-out it is "
                "unremarkable, and its effects are one draw of a distribution that is wide for some classes (widest: "
                + ", ".join(f"{f['phrase']} [{f['random_lo']:+.2f}, {f['random_hi']:+.2f}]" for f in wide) + ")."]
    ctl = f" | {b}'s head: SD" if single else ""
    out += ["", f"| label | class | vs | {a}: SD | random heads: median [2.5%, 97.5%] (min, max){ctl} | p | "
            f"corrected p | learned |", "|---|---|---|---|---|" + ("---|" if single else "") + "---|---|---|"]
    for f in null["classes"]:
        s = single.get((f["column"], f["class"]))
        cell = (f" | {s:+.2f}" if s is not None else " | –") if single else ""
        out.append(f"| {f['column']} | {f['class']} | {f['vs']} | {f['trained_sd']:+.2f} | {f['random_median']:+.2f} "
                   f"[{f['random_lo']:+.2f}, {f['random_hi']:+.2f}] ({f['random_min']:+.2f}, {f['random_max']:+.2f})"
                   f"{cell} | {f['p']:.4f} | {f['p_corrected']:.3f} | {'**learned**' if f['learned'] else 'no'} |")
    return out + [""]


def confirm_line(confirm: dict | None, null: dict | None, pieces: list[str]) -> list[str]:
    """The line pointing to docs/MASKER_PICKS_CONFIRM.md (``scripts/masker_picks_confirm.py``'s JSON
    ``confirm``) with its outcome, when it confirms THIS run: the same model and pieces, and its hypotheses
    are this ``null``'s classes below its p threshold. Else nothing (a confirmation of another run)."""
    from smu_explain.picks_null import confirms

    if not confirms(confirm, null, pieces):
        return []
    p_below, hyps = confirm["rule"]["hypothesis_p"], confirm["hypotheses"]
    return [f"**Confirmed on new pieces?** The {len(hyps)} classes with an uncorrected p < {p_below:g} in the "
            "random-head test below were tested again, as pre-registered hypotheses, on pieces this page does not "
            f"use (see [MASKER_PICKS_CONFIRM.md](MASKER_PICKS_CONFIRM.md)). {confirm['outcome']}", ""]


def render(results: dict, args, chords: dict | None, seconds: float, control: dict | None = None,
           comparison: dict | None = None, null: dict | None = None, confirm: dict | None = None) -> str:
    """docs/MASKER_PICKS.md. ``confirm``: docs/masker_picks_confirm.json, when there (``confirm_line``)."""
    from smu_explain import picks

    lines = ["# What the demo masker picks, in music's words", "",
             f"Made by `{' '.join(['python scripts/masker_picks.py', *sys.argv[1:]])}`"
             + f" ({seconds / 60:.1f} min "
             f"on {args.threads} CPU thread{'s' if args.threads != 1 else ''}); numbers in `docs/masker_picks.json`. "
             "Labels: `smu_explain/harmony.py` (its docstring states every rule); measurement and sentence: "
             "`smu_explain/picks.py`. Pieces: a seeded sample of our POP909 validation split (songs the demo "
             "models never saw) and of the ASAP score MIDIs (one per work; the demo models saw no ASAP).", "",
             "**How to read it.** Per class of note: mean masker score (0-1), share picked at the ratio (the top "
             f"{results[next(iter(results))]['ratio']:.0%} of the not-frozen notes), share frozen (no freeze book: the "
             "top 30% of each piece by score; so the picked notes are the next slice of the ranking, and picked % "
             "varies little: the frozen share is where the masker's preference shows), then the differences: "
             "*vs rest* = the class minus all other notes; "
             "*vs same duration x register* = within each duration x register bin (4 x 5), the class minus the bin's "
             "other notes, averaged with the class's notes as weights: what is left once duration and register are "
             f"accounted for. Brackets: 95% percentile bootstrap intervals over pieces ({args.n_boot:,} resamples, "
             f"seed {args.seed}); "
             "`*` = the interval excludes 0 (95% each, not corrected: with ~30 classes, one or two of them can "
             "exclude 0 by chance, and a `*` can mark a real but tiny difference). The sentence names a class only "
             "when its controlled score interval, corrected for the number of classes it tests (Bonferroni), lies "
             f"wholly beyond ±{picks.MIN_EFFECT_SD:g} standard deviations of the model's scores (Cohen's 'small' "
             "effect; a difference whose interval reaches inside that bound is not named, however sure its sign), with >= 20 notes in >= 3 pieces.",
             ""]
    if chords:
        acc = chords["by_unit"]
        lines += ["**Chord labels checked:** root accuracy against Pop1K7's chord markers (made by a rule-based "
                  f"recogniser, not by hand) on {chords['pieces']} pieces: "
                  + ", ".join(f"{u} units {v['root_accuracy']:.3f}" for u, v in acc.items())
                  + f" (beat by beat, {acc['auto']['beats']:,} beats); the analysis uses `auto` units.", ""]
    lines += confirm_line(confirm, null, (results.get("all") or {}).get("pieces") or [])
    if control:
        lines += headline(results["all"], control, comparison, null)
    elif null:
        lines += random_heads(null)
    for key, res in results.items():
        title = {"pop909": "POP909 validation songs", "asap": "ASAP scores", "all": "Both sets pooled"}.get(key, key)
        lines += [f"## {title} ({res['n_pieces']} pieces, {res['n_notes']:,} notes; model `{res['model']}`)", "",
                  f"> {res['sentence']}", "",
                  f"Overall: mean score {res['overall']['score']:.3f}, picked {res['overall']['picked']:.1%}, "
                  f"frozen {res['overall']['frozen']:.1%}.", "", picks.markdown_table(res)]
    if control:
        lines += [f"## Control: `{control['model']}`, a masker head that was never trained (same {control['n_pieces']} "
                  "pieces, pooled)", "",
                  "demo-random was pre-trained with random masks, so its masker head is still its random "
                  "initialisation: a random read-out of the encoder's features. What it 'prefers' is what any "
                  "read-out of these features would show; a pattern of demo-adversarial's that this head shares is "
                  "a property of the encoder and of the notes, not something the adversarial masker learned. Its "
                  "scores are squeezed into a narrow band, so compare differences in units of each model's score "
                  "standard deviation (the headline table) or the frozen % (a rank: the top 30% of each piece), "
                  "not raw score sizes.", "",
                  f"> {control['sentence']}", "", picks.markdown_table(control)]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "models" / "demo-adversarial"))
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--n-pop909", type=int, default=30)
    ap.add_argument("--n-asap", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0, help="piece sample and bootstrap seed")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--ratio", type=float, default=0.15)
    ap.add_argument("--chord-check", type=int, default=100, help="Pop1K7 pieces for the chord check (0: skip)")
    ap.add_argument("--control", default=str(ROOT / "models" / "demo-random"),
                    help="a model whose masker head was never trained, measured on the same pieces (pooled); '' = none")
    ap.add_argument("--null-heads", type=int, default=1000,
                    help="random masker heads on the model's own encoder to test 'learned' against (0: skip)")
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
    root = data_root(args.data_root)
    sets = {"pop909": sample(pop909_splits(root)[0]["val"], args.n_pop909, args.seed),
            "asap": sample(asap_refs(root, source="score"), args.n_asap, args.seed)}
    names = {key: [r.name for r in refs] for key, refs in sets.items()}

    def frames_of(folder, hidden=None):
        """The note tables of every set; ``hidden``: a dict that gets each piece's hidden states (and the model)."""
        ckpt = load_checkpoint(folder, kind="pretrained")
        model, tok = ckpt.encoder.eval(), ckpt.tokenizer
        frames: dict[str, list] = {}
        for key, refs in sets.items():
            frames[key] = []
            for i, ref in enumerate(refs):
                piece = tok.read(ref.path, name=ref.name)
                frames[key].append(picks.label_table(model, tok, piece, ratio=args.ratio))
                if hidden is not None:
                    hidden.setdefault(key, []).append(picks_null.note_hidden(model, tok, piece))
                log(f"{Path(folder).name} {key} {i + 1}/{len(refs)} {ref.name}: {len(piece)} notes")
        if hidden is not None:
            hidden["model"] = model
        return frames

    def effects(frames, key, name):
        fr = frames[key] if key != "all" else [f for k in sets for f in frames[k]]
        cols = [c for c in LABEL_COLUMNS if not (key == "all" and c == "role")]  # pooled, role = the data set
        res = picks.class_effects(fr, columns=cols, n_boot=args.n_boot, seed=args.seed)
        res.update({"model": name, "ratio": args.ratio, "freeze_top": 0.3,
                    "pieces": names[key] if key != "all" else [n for k in sets for n in names[k]],
                    "frozen_rule": "top 30% of each piece by score (no freeze book)"})
        res["sentence"] = picks.summary_sentence(res)
        log(f"{name} {key}: {res['sentence']}")
        return res

    def compare(frames, cframes, res, name, cname):
        """The model's pooled preferences against the control's, paired over the same pieces."""
        pooled = [f for k in sets for f in frames[k]], [f for k in sets for f in cframes[k]]
        cmp = picks.compare_effects(*pooled, columns=[c for c in LABEL_COLUMNS if c != "role"], n_boot=args.n_boot,
                                    seed=args.seed, models=(name, cname))
        cmp["named"] = [[f["column"], f["class"]] for f in picks.significant(res)]
        cmp["control_text"] = (f"a masker head that was never trained ({cname}'s: a random read-out of an encoder "
                               "pre-trained on the same data with random masks)")
        cmp["sentence"] = picks.comparison_sentence(cmp, map(tuple, cmp["named"]), cmp["control_text"])
        log(f"{name} vs {cname}: {cmp['sentence']}")
        return cmp

    def nulls(frames, hidden, res, name):
        """The model's pooled preferences against random heads on its own encoder (picks_null)."""
        model, t1 = hidden["model"], time.time()
        out = picks_null.random_head_test([f for k in sets for f in frames[k]], [h for k in sets for h in hidden[k]],
                                          model.masker_head, model.config.init,
                                          columns=[c for c in LABEL_COLUMNS if c != "role"], n_heads=args.null_heads,
                                          seed=args.seed, result=res, trained_head=model.masker_head, model=name)
        out["named"] = [[f["column"], f["class"]] for f in picks.significant(res)]
        out["sentence"] = picks_null.null_sentence(out, map(tuple, out["named"]))
        out["seconds"] = round(time.time() - t1, 1)
        log(f"{name} vs {args.null_heads} random heads ({out['seconds']:.0f} s): {out['sentence']}")
        return out

    name = Path(args.model).name
    hidden: dict | None = {} if args.null_heads > 0 else None
    frames = frames_of(args.model, hidden)
    results = {key: effects(frames, key, name) for key in [*sets, "all"]}
    control = comparison = None
    if args.control:
        cname = Path(args.control).name
        cframes = frames_of(args.control)
        control = effects(cframes, "all", cname)
        comparison = compare(frames, cframes, results["all"], name, cname)
    null = nulls(frames, hidden, results["all"], name) if hidden is not None else None
    chords = None
    if args.chord_check > 0:
        try:
            chords = chord_check(root, args.chord_check)
            log(f"chord check: {chords['by_unit']}")
        except Exception as exc:  # the chord check is optional: Pop1K7 may be absent
            log(f"chord check skipped: {exc}")
    seconds = time.time() - t0
    out = Path(args.out_dir)
    doc = {"results": results, "control": control, "chord_check": chords, "seconds": round(seconds, 1),
           "threads": args.threads, "seed": args.seed, "model": name, "comparison": comparison}
    if null is not None:
        doc["null"] = null
    atomic_write_text(out / "masker_picks.json", json.dumps(doc, indent=1, allow_nan=False) + "\n")
    confirmed = out / "masker_picks_confirm.json"
    confirm = json.loads(confirmed.read_text()) if confirmed.exists() else None
    atomic_write_text(out / "MASKER_PICKS.md", render(results, args, chords, seconds, control, comparison, null,
                                                      confirm))
    log(f"wrote {out / 'masker_picks.json'} and {out / 'MASKER_PICKS.md'} in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
