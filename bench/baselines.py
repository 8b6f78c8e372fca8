"""The no-model rules (docs/METHOD.md 9) and pre-trained models' recovery on POP909 validation songs.

Prints one JSON object: for each tokenizer setting (the models' own, or the demo models'
default: windows of 256) the three rules of ``smu_explain.baselines`` on a seeded random
15% of the notes of every window of the POP909 validation songs (ours: 80/10/10 by song,
split seed 0), and for every ``--model``: its recovery accuracy on exactly the same masked
notes (``explain.recovery_accuracy``, the same batches and seed), whether it beats every
rule per attribute (``baselines.beats_rules``) and, unless ``--no-context-check``, the
accuracy with the unmasked context replaced by random tokens
(``baselines.context_destroyed_accuracy``, ``--context-mode`` uniform or shuffle) and the drop.

    python bench/baselines.py [--model DIR ...] [--data-root /work/shared/data]
                              [--split val] [--ratio 0.15] [--seed 0] [--batch-size 16]
                              [--max-batches N] [--threads N] [--no-context-check]
                              [--context-mode uniform|shuffle]

Re-run it on new models: ``python bench/baselines.py --model models/demo-random
--model models/demo-adversarial``.
"""

from __future__ import annotations

import sys as _sys

# bench/ holds tokenize.py (named like the stdlib module): drop bench/ from sys.path first
_here = __import__("os").path.dirname(__import__("os").path.abspath(__file__))
_sys.path[:] = [p for p in _sys.path if __import__("os").path.abspath(p or ".") != _here]

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEMO_TOKENIZER = {"max_len": 256}  # the demo models' windows (models/demo_config.json)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", default=[], help="pre-trained model folder (repeatable)")
    ap.add_argument("--data-root", default=None, help="datasets root (default $SMU_DATA_ROOT or ../shared/data)")
    ap.add_argument("--split", default="val", choices=("train", "val", "test"))
    ap.add_argument("--ratio", type=float, default=0.15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-batches", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--no-context-check", action="store_true")
    ap.add_argument("--context-mode", default="uniform", choices=("uniform", "shuffle"),
                    help="context destroyed by uniform random tokens or by shuffling the unmasked tokens")
    args = ap.parse_args(argv)

    import torch

    from smu_explain import baselines as B
    from smu_explain import corpora, datasets
    from smu_explain.checkpoint import load_checkpoint
    from smu_explain.explain import recovery_accuracy
    from smu_explain.readable import RULE_LABELS
    from smu_explain.tokenizer import Tokenizer
    from smu_explain.tokenizer_config import TokenizerConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    task = corpora.melody_task(args.data_root)
    refs = task.splits[args.split]
    kw = dict(ratio=args.ratio, seed=args.seed, batch_size=args.batch_size, max_batches=args.max_batches)

    sets: dict[str, dict] = {}  # tokenizer config json -> {dataset, rules, ...}

    def dataset_for(cfg: TokenizerConfig) -> dict:
        key = cfg.to_json()
        if key not in sets:
            tok = Tokenizer(cfg)
            t0 = time.perf_counter()
            pieces, skipped = datasets.encode_refs(refs, tok, "melody", datasets.TokenCache())
            ds = datasets.TokenDataset(pieces, "pretrain", tokenizer=tok)
            t1 = time.perf_counter()
            stats = B.rule_stats(ds, attributes=tok.attributes, **kw)
            sets[key] = {"ds": ds, "out": {
                "tokenizer": cfg.to_dict(), "songs": len(pieces), "skipped": len(skipped), "windows": len(ds),
                "masked_notes": stats["n_tokens"], "rules": stats["rules"],
                "most_frequent_ids": stats["most_frequent_ids"], "counts_from": stats["counts_from"],
                "seconds": {"tokenize": round(t1 - t0, 2), "rules": round(time.perf_counter() - t1, 2)}}}
        return sets[key]

    if not args.model:
        dataset_for(TokenizerConfig(**DEMO_TOKENIZER))
    models = {}
    for path in args.model:
        ckpt = load_checkpoint(path, kind="pretrained")
        cfg = ckpt.tokenizer.config
        entry = dataset_for(cfg)
        model = ckpt.model.eval()
        t0 = time.perf_counter()
        acc = recovery_accuracy(model, entry["ds"], **kw)
        res = {"tokenizer": list(sets).index(cfg.to_json()), "recovery": acc,
               "beats_rules": B.beats_rules(acc, entry["out"]["rules"]),
               "verdict": B.verdict(acc, entry["out"]["rules"])[1]}
        t1 = time.perf_counter()
        res["seconds"] = {"recovery": round(t1 - t0, 2)}
        if not args.no_context_check:
            ruined = B.context_destroyed_accuracy(model, entry["ds"], mode=args.context_mode, **kw)
            res["context_destroyed"] = ruined
            res["context_drop"] = {a: acc[a] - ruined[a] for a in acc}
            res["seconds"]["context_destroyed"] = round(time.perf_counter() - t1, 2)
        models[path] = res
    out = {"data": f"POP909 {args.split} songs (melody task split: {task.split_info})", "ratio": args.ratio,
           "seed": args.seed, "batch_size": args.batch_size, "context_mode": args.context_mode, "max_batches": args.max_batches,
           "torch_threads": torch.get_num_threads(),
           "rules_are": {r: RULE_LABELS[r] for r in B.RULES}, "window": B.WINDOW,
           "tokenizers": [s["out"] for s in sets.values()], "models": models}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
