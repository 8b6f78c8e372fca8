"""``smu study``: its argparse parser and command (torch is imported only when it runs)."""

from __future__ import annotations

import argparse
from typing import Any

from .plan import PRESETS, StudyPaths, estimate_minutes, read_json, select_stages

# ============================================================================ CLI

def add_study_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``smu study`` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "study", help="run the reproduction study (resumable stages) and write docs/RESULTS.md",
        description="Pre-train (random / adversarial / bar masks), fine-tune on melody, velocity, composer, "
                    "emotion with and without mask fine-tuning over several seeds, measure data efficiency "
                    "and costs, analyse the masker, and write docs/study/*.json + docs/RESULTS.md. Stages whose "
                    "result JSON exists are skipped; delete one to re-run it.")
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS),
                   help="size of the study: cpu (about 5 h on 2 cores, stages of <= 30 min), gpu (larger), tiny (seconds, fixture data)")
    p.add_argument("--runs-dir", default=None,
                   help="checkpoints and run folders (default $SMU_RUNS_DIR or ~/smu_runs/study)")
    p.add_argument("--data-root", default=None,
                   help="datasets (default $SMU_DATA_ROOT or ../shared/data; tiny: generated fixture data)")
    p.add_argument("--results-dir", default=None,
                   help="stage results (default docs/study; tiny: <runs-dir>/results)")
    p.add_argument("--results-md", default=None,
                   help="the report (default docs/RESULTS.md; tiny: <runs-dir>/RESULTS.md)")
    p.add_argument("--cache-dir", default=None, help="token cache (default $SMU_CACHE_DIR or ~/.cache/smu_explain)")
    p.add_argument("--only", action="append", default=None, metavar="STAGE",
                   help="run only this stage (a name, a kind like 'pretrain', or a prefix like "
                        "'finetune-melody'); repeatable")
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda[:N]")
    p.add_argument("--list", action="store_true", help="list the stages, their status and estimates; run nothing")
    p.add_argument("--quiet", action="store_true", help="no progress display (the log file is still written)")
    p.set_defaults(func=cmd_study)
    return p


def cmd_study(args: argparse.Namespace) -> int:
    """``smu study``: list or run the stages; prints the summary lines at the end."""
    from .runner import Study  # torch: only when the command runs

    paths = StudyPaths.make(args.runs_dir, args.results_dir, args.results_md, args.data_root,
                            getattr(args, "cache_dir", None), preset=args.preset)
    study = Study(args.preset, paths, quiet=args.quiet, device=args.device)
    if args.list:
        est = estimate_minutes(study.preset)
        for s in select_stages(study.stages, args.only):
            print(f"{'done ' if study.is_done(s) else 'to do'}  {s.name:32s} ~{s.est_min:6.1f} min")
        print(f"estimated total {est['total']:.0f} min (pre-training {est.get('pretrain', 0):.0f} min) "
              f"on {study.preset.machine}")
        return 0
    executed = study.run(args.only)
    print(f"executed {len(executed)} stage(s): {', '.join(executed) or 'none (all finished)'}")
    res = paths.results_dir / "results.json"
    if res.is_file():
        for line in read_json(res).get("summary", []):
            print(line)
    return 0
