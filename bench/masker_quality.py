"""Does the adversarial masker find what is hard? On POP909 validation songs.

For every song, ``explain.explain_piece`` runs on the adversarial model (its masker's
``score`` per note) and on the random-mask model (its per-note recovery loss: the sum over
attributes of the cross-entropy with the note masked once, under the seeded groups of
``explain_piece``). Prints one JSON object: the Spearman correlation of score vs the random
model's loss (and vs the adversarial model's own loss), over all notes and per song
(median), and how spread the scores are (range, interquartile range, share of distinct
values) so a flat masker is visible.

    python bench/masker_quality.py --adversarial models/demo-adversarial --random models/demo-random
                                   [--songs N] [--threads N] [--data-root DIR]
"""

from __future__ import annotations

import sys as _sys

_here = __import__("os").path.dirname(__import__("os").path.abspath(__file__))
_sys.path[:] = [p for p in _sys.path if __import__("os").path.abspath(p or ".") != _here]

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--adversarial", default=str(REPO / "models" / "demo-adversarial"))
    ap.add_argument("--random", default=str(REPO / "models" / "demo-random"))
    ap.add_argument("--songs", type=int, default=None, help="at most N validation songs (default all)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    from scipy.stats import spearmanr

    from smu_explain import corpora
    from smu_explain.checkpoint import load_checkpoint
    from smu_explain.errors import SMUInputError
    from smu_explain.explain import explain_piece

    if args.threads:
        torch.set_num_threads(args.threads)
    adv_ckpt = load_checkpoint(args.adversarial, kind="pretrained")
    rnd_ckpt = load_checkpoint(args.random, kind="pretrained")
    adv, rnd, tok = adv_ckpt.model.eval(), rnd_ckpt.model.eval(), adv_ckpt.tokenizer
    if rnd_ckpt.tokenizer.config.to_dict() != tok.config.to_dict():
        raise SystemExit("the two models were trained with different tokenizers")
    attrs = list(tok.attributes)
    refs = corpora.melody_task(args.data_root).splits["val"][: args.songs]
    t0 = time.perf_counter()
    scores, rloss, oloss, per_song = [], [], [], []
    for ref in refs:
        try:
            piece = corpora.read_ref(ref, tok)
        except SMUInputError:
            continue
        da = explain_piece(adv, tok, piece, seed=0)
        dr = explain_piece(rnd, tok, piece, seed=0)
        sc = da["score"].to_numpy()
        rl = dr[[f"loss_{a}" for a in attrs]].sum(axis=1).to_numpy()
        scores.append(sc)
        rloss.append(rl)
        oloss.append(da[[f"loss_{a}" for a in attrs]].sum(axis=1).to_numpy())
        if len(sc) > 2:
            per_song.append(float(spearmanr(sc, rl).statistic))
    s, r, o = (np.concatenate(x) for x in (scores, rloss, oloss))
    q1, q3 = np.percentile(s, [25, 75])
    out = {
        "data": "POP909 validation songs (ours, split seed 0)", "songs": len(scores), "notes": int(len(s)),
        "adversarial": args.adversarial, "random": args.random,
        "spearman_score_vs_random_loss": round(float(spearmanr(s, r).statistic), 4),
        "spearman_score_vs_own_loss": round(float(spearmanr(s, o).statistic), 4),
        "per_song_spearman_median": round(float(np.median(per_song)), 4) if per_song else None,
        "score": {"min": round(float(s.min()), 4), "q1": round(float(q1), 4), "median": round(float(np.median(s)), 4),
                  "q3": round(float(q3), 4), "max": round(float(s.max()), 4), "iqr": round(float(q3 - q1), 4),
                  "distinct_share": round(len(np.unique(np.round(s, 4))) / len(s), 4)},
        "seconds": round(time.perf_counter() - t0, 1), "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
