"""Benchmark: note attributions (integrated gradients + occlusion) of a ~3-minute piece on CPU.

Prints one JSON object: the piece (notes, quarters, windows), the model size, the seconds of
IG and of occlusion for a sequence task (every window counts) and for a note task (the
windows holding one target note), their Spearman agreement, torch threads and the machine
load (``os.getloadavg()``) before and after.

    python bench/attribution.py [--notes 1500] [--size small] [--steps 32] [--threads N]
                                [--batch-size 16] [--midi FILE]

The piece: ``--midi FILE``, else a generated 2-hand piece of ``--notes`` notes over about
3 minutes at 120 qpm (360 quarters: a melody random walk with 2/3 of the notes and a
bass line with the rest, evenly spaced, seeded). The models are
freshly initialised ``FineTuneModel`` s (weights do not change the cost): emotion (sequence
level, 4 classes) and melody (note level, 3 classes), default tokenizer (windows of 512).
Model loading and one warm-up forward are not timed.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--notes", type=int, default=1500)
    ap.add_argument("--midi", default=None)
    ap.add_argument("--size", default="small", choices=["tiny", "small", "base"])
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args()

    import torch

    from smu_explain.explain import attribute_notes, spearman_agreement
    from smu_explain.finetune import build_model
    from smu_explain.tokenizer import Tokenizer, TokenizerConfig, read_piece

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    tok = Tokenizer(TokenizerConfig())
    piece = read_piece(Path(args.midi) if args.midi else generated_midi(args.notes), name="bench",
                       config=tok.config)
    n_windows = len(tok.encode_windows(piece))
    out = {"piece": {"notes": len(piece), "quarters": float(piece.onset_q.max()),
                     "seconds": float(piece.end_sec.max()), "windows": n_windows,
                     "max_len": tok.config.max_len},
           "size": args.size, "steps": args.steps, "batch_size": args.batch_size,
           "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
           "loadavg_before": [round(x, 2) for x in load_before], "baseline": "all-MASK token embeddings"}
    for task, classes, target in (("emotion", ["Q1", "Q2", "Q3", "Q4"], None),
                                  ("melody", ["melody", "bridge", "piano"], len(piece) // 2)):
        model = build_model(task, classes, vocab_sizes=tok.vocab_sizes, attributes=tok.attributes,
                            size=args.size, max_len=tok.config.max_len, seed=0).eval()
        with torch.no_grad():  # warm-up
            w = torch.from_numpy(tok.encode_windows(piece)[0][0])[None]
            model(w, torch.ones(w.shape[:2], dtype=torch.bool))
        t0 = time.perf_counter()
        ig = attribute_notes(model, tok, piece, target, "ig", args.steps, batch_size=args.batch_size)
        t1 = time.perf_counter()
        occ = attribute_notes(model, tok, piece, target, "occlusion", batch_size=args.batch_size,
                              cls=ig.attrs["class_index"])
        t2 = time.perf_counter()
        out[task] = {"level": model.level, "target": target, "windows_explained": ig.attrs["n_windows"],
                     "ig_s": round(t1 - t0, 3), "occlusion_s": round(t2 - t1, 3),
                     "total_s": round(t2 - t0, 3),
                     "ig_completeness_gap": ig.attrs["completeness_gap"],
                     "spearman": spearman_agreement(ig, occ)["spearman"]}
    out["target_s"] = 5.0
    out["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
