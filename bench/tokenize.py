"""Benchmark: smu_explain's tokenizer vs MidiTok 3.1 CPWord on all POP909 files.

Prints one JSON object: files/s, notes/s, peak memory for both, the speed ratio and
both note counts. Each side runs in its own subprocess (clean peak memory, no shared
caches); imports and one warm-up file are excluded from the timing; every file is
read from disk and tokenised (path -> tokens) inside the timed loop.

    python bench/tokenize.py [--data-root DIR] [--limit N]
    python bench/tokenize.py --corpus-check      # read+tokenise every POP909/ASAP/EMOPIA/Pop1K7 file

Settings on both sides: pitch 22..107, 16th-note positions, velocity kept (32 bins),
one sequence per piece for ours / per track for MidiTok (use_programs=False, its
default time signatures on).

Data root: --data-root, else $SMU_DATA_ROOT, else ../shared/data from the repo root.
"""

from __future__ import annotations

import sys as _sys

# This file is named like the stdlib module ``tokenize``; when run as a script its folder
# is sys.path[0] and would shadow it for every library that imports tokenize (inspect,
# linecache, huggingface_hub...). Drop the folder and any stale import first.
_here = __import__("os").path.dirname(__import__("os").path.abspath(__file__))
_sys.path[:] = [p for p in _sys.path if __import__("os").path.abspath(p or ".") != _here]
if getattr(_sys.modules.get("tokenize"), "__file__", None) == __import__("os").path.abspath(__file__):
    del _sys.modules["tokenize"]

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def data_root(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    env = os.environ.get("SMU_DATA_ROOT")
    return Path(env) if env else REPO.parent / "shared" / "data"


def pop909_files(root: Path) -> list[Path]:
    return sorted((root / "pop909" / "POP909").glob("[0-9][0-9][0-9]/[0-9][0-9][0-9].mid"))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run_ours(files: list[Path]) -> dict:
    from smu_explain.errors import SMUInputError
    from smu_explain.tokenizer import Tokenizer
    from smu_explain.tokenizer_config import TokenizerConfig

    tok = Tokenizer(TokenizerConfig(use_velocity=True))
    tok.encode(tok.read(files[0]))  # warm-up
    rss0 = _peak_rss_mb()
    n_notes = n_files = 0
    errors: Counter = Counter()
    dt = 0.0
    for f in files:
        t0 = time.perf_counter()
        try:
            tokens = tok.encode(tok.read(f))
        except SMUInputError as e:
            dt += time.perf_counter() - t0
            errors[e.reason] += 1
            continue
        dt += time.perf_counter() - t0
        n_notes += tokens.shape[0]
        n_files += 1
    rss1 = _peak_rss_mb()
    # second, untimed pass: peak Python/numpy memory of one file at a time (tracemalloc)
    tracemalloc.start()
    for f in files:
        with contextlib.suppress(SMUInputError):
            tok.encode(tok.read(f))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"files": n_files, "notes": n_notes, "seconds": dt, "errors": dict(errors),
            "peak_rss_mb": rss1, "rss_after_imports_mb": rss0, "peak_traced_mb": peak / 1e6}


def run_miditok(files: list[Path]) -> dict:
    import miditok

    cfg = miditok.TokenizerConfig(pitch_range=(22, 108), beat_res={(0, 8): 4}, num_velocities=32,
                                  use_programs=False)
    tok = miditok.CPWord(cfg)
    pitch_idx = tok.vocab_types_idx["Pitch"]
    tok.encode(files[0])  # warm-up
    rss0 = _peak_rss_mb()
    n_notes = n_files = 0
    errors: Counter = Counter()
    dt = 0.0
    for f in files:
        t0 = time.perf_counter()
        try:
            seqs = tok.encode(f)
        except Exception as e:  # noqa: BLE001 - the peer may fail in any way; count it
            dt += time.perf_counter() - t0
            errors[f"{type(e).__name__}: {e}"[:80]] += 1
            continue
        dt += time.perf_counter() - t0
        n_files += 1
        # notes = compound tokens whose pitch field is a Pitch_ token (counted outside the timer)
        for s in (seqs if isinstance(seqs, list) else [seqs]):
            n_notes += sum(1 for t in s.tokens if t[pitch_idx].startswith("Pitch_"))
    return {"files": n_files, "notes": n_notes, "seconds": dt, "errors": dict(errors),
            "peak_rss_mb": _peak_rss_mb(), "rss_after_imports_mb": rss0}


def corpus_check(root: Path) -> dict:
    """Read + tokenise every file of the four corpora; count files, notes, errors by reason."""
    from smu_explain.errors import SMUInputError
    from smu_explain.tokenizer import N_SPECIAL, Tokenizer

    tok = Tokenizer()
    sets = {
        "pop909": pop909_files(root),
        "asap": sorted((root / "asap").rglob("*.mid")),
        "emopia": sorted((root / "emopia" / "midis").glob("*.mid")),
        "pop1k7": sorted((root / "pop1k7" / "midi_analyzed").rglob("*.mid")),
    }
    out = {}
    for name, files in sets.items():
        errors: Counter = Counter()
        dropped: Counter = Counter()
        metres: Counter = Counter()
        n_ok = n_notes = n_capped = n_ts_ignored = 0
        cap = tok.config.max_bar_skip + N_SPECIAL
        t0 = time.perf_counter()
        for f in files:
            try:
                piece = tok.read(f)
                tokens = tok.encode(piece)
            except SMUInputError as e:
                errors[e.reason] += 1
                continue
            n_notes += tokens.shape[0]
            n_capped += int((tokens[1:, 0] == cap).sum())
            n_ok += 1
            dropped.update(piece.dropped)
            n_ts_ignored += piece.stats["time_signatures_ignored"]
            metres.update({f"{n}/{d}" for _, n, d in piece.time_signatures})
        out[name] = {"files": len(files), "ok": n_ok, "notes": n_notes, "errors": dict(errors),
                     "dropped": dict(dropped), "bar_skips_at_cap": n_capped,
                     "time_signature_events_ignored": n_ts_ignored,
                     "files_per_metre_in_effect": dict(metres.most_common()),
                     "seconds": round(time.perf_counter() - t0, 2)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--limit", type=int, default=None, help="only the first N POP909 files")
    ap.add_argument("--side", choices=["ours", "miditok"], help=argparse.SUPPRESS)
    ap.add_argument("--corpus-check", action="store_true")
    args = ap.parse_args(argv)
    root = data_root(args.data_root)
    if args.corpus_check:
        print(json.dumps(corpus_check(root), indent=2))
        return 0
    files = pop909_files(root)[: args.limit]
    if not files:
        print(json.dumps({"error": f"no POP909 files under {root}/pop909/POP909 (set --data-root or SMU_DATA_ROOT)"}))
        return 2
    if args.side:
        res = run_ours(files) if args.side == "ours" else run_miditok(files)
        print(json.dumps(res))
        return 0
    sides = {}
    for side in ("ours", "miditok"):
        cmd = [sys.executable, __file__, "--side", side, "--data-root", str(root)]
        if args.limit:
            cmd += ["--limit", str(args.limit)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if proc.returncode != 0:
            print(json.dumps({"error": f"{side} failed", "stderr": proc.stderr[-2000:]}))
            return 1
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        r["files_per_s"] = r["files"] / r["seconds"]
        r["notes_per_s"] = r["notes"] / r["seconds"]
        sides[side] = r
    ours, peer = sides["ours"], sides["miditok"]
    report = {
        "dataset": "POP909",
        "n_files": len(files),
        "smu_explain": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in ours.items()},
        "miditok_cpword_3_1": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in peer.items()},
        "speed_ratio_files_per_s": round(ours["files_per_s"] / peer["files_per_s"], 2),
        "note_counts": {"smu_explain": ours["notes"], "miditok": peer["notes"],
                        "difference": ours["notes"] - peer["notes"]},
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
