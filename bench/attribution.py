"""Benchmark: note attributions (integrated gradients + occlusion) of a ~3-minute piece on CPU.

Prints one JSON object. For a sequence task (emotion, or the ``--model`` fine-tuned model's
task; every window counts) and a note task (melody; the windows holding one target note)
it times, side by side in one process, these modes of ``explain.attribution_agreement``:

- ``reference``: fp32, ``--ref-steps`` IG steps (default 32), occlusion of every note
  (the pre-speed-up behaviour; skip with ``--no-reference``);
- ``fast``: fp32, ``--steps`` IG steps (default 16), occlusion of a seeded sample of
  ``--occlusion-notes`` notes (default 64);
- ``fast_bf16``: the same with IG's path points in bf16 (``precision="bf16"``; occlusion
  is always fp32).

Per mode: seconds of IG and of occlusion, the model passes run, IG's completeness gap
relative to f(x) - f(baseline), the IG-vs-occlusion Spearman on the occluded notes, and
(fast modes) the fidelity to the reference: Spearman of the fast IG with the reference IG
over all notes, and the largest difference of the sampled occlusion values from the full
occlusion. Also the speed-up ratios against the reference, torch threads and the machine
load before and after.

    python bench/attribution.py [--notes 1500] [--size small] [--model FINETUNED_DIR] [--midi FILE]
                                [--steps 16] [--ref-steps 32] [--occlusion-notes 128]
                                [--threads N] [--batch-size 16] [--no-reference]

The piece: ``--midi FILE``, else a generated 2-hand piece of ``--notes`` notes over about
3 minutes at 120 qpm (360 quarters: a melody random walk with 2/3 of the notes and a
bass line with the rest, evenly spaced, seeded). The models: ``--model`` (a fine-tuned
folder, its tokenizer) for the sequence task, else freshly initialised ``FineTuneModel`` s
(weights do not change the cost, but a trained model makes the fidelity numbers
meaningful), default tokenizer (windows of 512). Loading and one warm-up forward are not
timed.
"""

from __future__ import annotations

import sys as _sys

# bench/ holds tokenize.py (named like the stdlib module): when this script runs, bench/ is
# sys.path[0] and would shadow it for torch's imports; drop the folder first.
_here = __import__("os").path.dirname(__import__("os").path.abspath(__file__))
_sys.path[:] = [p for p in _sys.path if __import__("os").path.abspath(p or ".") != _here]

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def generated_midi(n_notes: int, seed: int = 0, quarters: float = 360.0) -> bytes:
    """``n_notes`` notes over ``quarters`` quarter notes at 120 qpm (360 = 3 minutes)."""
    import numpy as np
    from symusic import Note, Score, Tempo, TimeSignature, Track

    rng = np.random.default_rng(seed)
    tpq = 480
    score = Score(tpq)
    score.tempos.append(Tempo(0, qpm=120.0))
    score.time_signatures.append(TimeSignature(0, 4, 4))
    n_mel = (2 * n_notes) // 3
    n_bass = n_notes - n_mel
    span = int(quarters * tpq)  # both hands spread evenly over the piece
    mel, bass = Track(name="right hand", program=0), Track(name="left hand", program=0)
    pitch = 72
    for i in range(n_mel):  # a random walk in small steps
        pitch = int(np.clip(pitch + rng.choice([-3, -2, -1, 1, 2, 3]), 60, 88))
        mel.notes.append(Note(i * span // n_mel, span // n_mel, pitch, int(rng.integers(50, 110))))
    for i in range(n_bass):
        bass.notes.append(Note(i * span // n_bass, span // n_bass, int(36 + (i * 7) % 19),
                               int(rng.integers(40, 90))))
    score.tracks.append(mel)
    score.tracks.append(bass)
    return bytes(score.dumps_midi())


def _mode(model, tok, piece, target, steps, occ_notes, precision, batch_size):
    from smu_explain.attribution import attribute_notes, spearman_agreement

    t0 = time.perf_counter()
    ig = attribute_notes(model, tok, piece, target, "ig", steps, batch_size=batch_size, precision=precision)
    t1 = time.perf_counter()
    occ = attribute_notes(model, tok, piece, target, "occlusion", batch_size=batch_size,
                          cls=ig.attrs["class_index"], max_notes=occ_notes, seed=0)
    t2 = time.perf_counter()
    delta = ig.attrs["value"] - ig.attrs["baseline_value"]
    res = {"steps": steps, "precision": precision, "occluded_notes": occ.attrs["n_measured"],
           "ig_s": round(t1 - t0, 3), "occlusion_s": round(t2 - t1, 3), "total_s": round(t2 - t0, 3),
           "ig_passes": ig.attrs["n_forward"], "occlusion_passes": occ.attrs["n_forward"],
           "ig_completeness_gap_rel": abs(ig.attrs["completeness_gap"]) / max(abs(delta), 1e-12),
           "f_x_minus_f_baseline": delta,
           "spearman_ig_occlusion": spearman_agreement(ig, occ)["spearman"]}
    return res, ig, occ


def _fidelity(ig, occ, ref_ig, ref_occ) -> dict:
    import numpy as np
    from scipy.stats import spearmanr

    sel = ref_ig["in_window"].to_numpy(bool)
    m = occ["measured"].to_numpy(bool)
    return {"spearman_ig_vs_reference_ig": float(spearmanr(ig["attribution"][sel], ref_ig["attribution"][sel]).statistic),
            "max_abs_occlusion_diff_on_sample": float(np.max(np.abs(
                occ["attribution"].to_numpy()[m] - ref_occ["attribution"].to_numpy()[m]))) if m.any() else None,
            "reference_occlusion_scale": float(np.nanmax(np.abs(ref_occ["attribution"].to_numpy()[sel])))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--notes", type=int, default=1500)
    ap.add_argument("--midi", default=None)
    ap.add_argument("--model", default=None, help="a fine-tuned model folder (its task becomes the sequence task)")
    from smu_explain.names import SIZES

    ap.add_argument("--size", default="small", choices=SIZES)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--ref-steps", type=int, default=32)
    ap.add_argument("--occlusion-notes", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--no-reference", action="store_true", help="skip the slow reference mode")
    args = ap.parse_args()

    import torch

    from smu_explain.checkpoint import load_checkpoint
    from smu_explain.finetune import build_model
    from smu_explain.reading import read_piece
    from smu_explain.tokenizer import Tokenizer
    from smu_explain.tokenizer_config import TokenizerConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    tok = Tokenizer(TokenizerConfig())
    loaded = None
    if args.model:
        ckpt = load_checkpoint(args.model, kind="finetuned")
        loaded, tok = ckpt.model.eval(), ckpt.tokenizer
    piece = read_piece(Path(args.midi) if args.midi else generated_midi(args.notes), name="bench",
                       config=tok.config)
    n_windows = len(tok.encode_windows(piece))
    out = {"piece": {"source": args.midi or f"generated, {args.notes} notes", "notes": len(piece),
                     "quarters": float(piece.onset_q.max()), "seconds": float(piece.end_sec.max()),
                     "windows": n_windows, "max_len": tok.config.max_len},
           "size": args.size if not loaded else f"{args.model} ({sum(p.numel() for p in loaded.parameters()):,} params)",
           "batch_size": args.batch_size,
           "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
           "loadavg_before": [round(x, 2) for x in load_before], "baseline": "all-MASK token embeddings"}
    seq = (loaded.task, loaded.classes, None) if loaded else ("emotion", ["Q1", "Q2", "Q3", "Q4"], None)
    for task, classes, target in (seq, ("melody", ["melody", "bridge", "piano"], len(piece) // 2)):
        if loaded is not None and task == loaded.task:
            model = loaded
        else:
            model = build_model(task, classes, vocab_sizes=tok.vocab_sizes, attributes=tok.attributes,
                                size=args.size, max_len=tok.config.max_len, seed=0).eval()
        with torch.no_grad():  # warm-up
            w = torch.from_numpy(tok.encode_windows(piece)[0][0])[None]
            model(w, torch.ones(w.shape[:2], dtype=torch.bool))
        res = {"level": model.level, "target": target, "trained": model is loaded}
        ref = None
        if not args.no_reference:
            res["reference"], ref_ig, ref_occ = _mode(model, tok, piece, target, args.ref_steps, None, "fp32",
                                                      args.batch_size)
            ref = (ref_ig, ref_occ)
        for name, prec in (("fast", "fp32"), ("fast_bf16", "bf16")):
            res[name], ig, occ = _mode(model, tok, piece, target, args.steps, args.occlusion_notes, prec,
                                       args.batch_size)
            if ref:
                res[name]["fidelity"] = _fidelity(ig, occ, *ref)
                res[name]["speedup_vs_reference"] = round(res["reference"]["total_s"] / res[name]["total_s"], 2)
        res["windows_explained"] = ig.attrs["n_windows"]
        out[task] = res
    out["target_s"] = 5.0
    out["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
