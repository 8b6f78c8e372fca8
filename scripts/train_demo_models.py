"""Re-train the two demo models shipped in models/ (``make demo-models``).

Both models get the same data, size, budget and seed; only the masking strategy
differs. Data: the POP909 training split (MIT licence; its validation and test
songs stay out) plus sample_midi/ (public domain). Not Pop1K7 (licence unstated)
and not ASAP/EMOPIA (non-commercial share-alike), so the weights can be shipped.

The settings live in models/demo_config.json: the model (size and overrides,
e.g. rotary positions), the training schedule, and per-strategy settings (the
adversarial demo may use options of the method, stated there and in
models/README.md). Runs go side by side (``threads_per_run`` CPU threads each),
or one at a time with ``--only``; bf16 autocast is used where the CPU has bf16
units (``bf16: "auto"``). Training state (optimizer, checkpoint.pt) stays in the
work folder, so a stopped run resumes where it was; only config.json, the
weights cast to float16 (to keep the repo lean; they load back into float32) and
the progress log are copied into models/demo-<strategy>/.

    python scripts/train_demo_models.py [--config models/demo_config.json] [--work DIR]
                                        [--only random|adversarial] [--steps N] [--no-ship]
                                        [--finetune-only] [--scores-only] [--threads N]

After the encoders, the demo task head of ``finetune`` (melody on POP909, on the random
demo encoder) is fine-tuned and shipped into models/demo-random/finetuned/melody/, so
the Why page's attributions work out of the box. Beside each shipped encoder,
masker_scores.json holds its masker's view of the sample pieces (tied to the weights by
their sha256; ``--scores-only`` re-makes it), so the app's first roll needs no model pass.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smu_explain import corpora  # noqa: E402
from smu_explain.io import default_file_mode  # noqa: E402


def training_files(cfg: dict) -> list[str]:
    task = corpora.melody_task(seed=cfg["pop909_split_seed"])
    files = [str(r.path) for r in task.splits["train"]]
    files += sorted(str(p) for p in (ROOT / "sample_midi").glob("*.mid"))
    return files


def _portable(path: str) -> str:
    p = Path(path).resolve()
    for base, tag in ((corpora.data_root().resolve(), "<data_root>"), (ROOT, "<repo>")):
        if p.is_relative_to(base):
            return f"{tag}/{p.relative_to(base)}"
    return p.name


def _portable_pretrained(d: dict) -> None:
    """Fine-tuned configs name their encoder folder ("pretrained"): keep it machine-independent."""
    for k, v in d.items():
        if k == "pretrained" and isinstance(v, str) and v != "none":
            d[k] = _portable(v)
        elif isinstance(v, dict):
            _portable_pretrained(v)


def ship(run_dir: Path, dest: Path, cfg: dict, scores: bool = True) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = load_file(str(run_dir / "model.safetensors"))
    dtype = getattr(torch, cfg["ship_dtype"])
    save_file({k: v.to(dtype).contiguous() for k, v in state.items()}, str(tmp / "model.safetensors"))
    os.chmod(tmp / "model.safetensors", default_file_mode())  # safetensors writes 0600
    meta = json.loads((run_dir / "config.json").read_text())
    td = meta.get("training_data", {})
    if "paths" in td:  # machine-specific absolute paths -> names relative to their source
        td["paths"] = [_portable(p) for p in td["paths"]]
    _portable_pretrained(meta)
    (tmp / "config.json").write_text(json.dumps(meta, indent=1))
    shutil.copy(run_dir / "progress.jsonl", tmp / "progress.jsonl")
    if (run_dir / "tokenizer.json").is_file():  # checkpoint.py's format (older runs keep it in config.json)
        shutil.copy(run_dir / "tokenizer.json", tmp / "tokenizer.json")
    if (run_dir / "results.json").is_file():
        res = json.loads((run_dir / "results.json").read_text())
        _portable_pretrained(res)
        (tmp / "results.json").write_text(json.dumps(res, indent=1))
    if scores:  # an encoder: the sample pieces' masker view beside it
        store_scores(tmp)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)


def store_scores(model_dir: Path) -> None:
    """The masker's view of every sample piece, stored beside the shipped weights
    (masker_scores.json): the app draws its first roll from it before loading torch."""
    from smu_explain.stored_scores import store_masker_scores

    samples = sorted((ROOT / "sample_midi").glob("*.mid"))
    path = store_masker_scores(model_dir, samples)
    print(f"{model_dir.name}: masker scores of {len(samples)} sample pieces in {path.name}", flush=True)


def finetune_demo_head(cfg: dict, work: Path, env: dict, bf16: bool) -> int:
    """Fine-tune the task head of ``cfg["finetune"]`` on the shipped demo encoder and ship it
    into models/demo-<from>/finetuned/<task>/ (where the app's Why page finds it)."""
    ft = cfg["finetune"]
    encoder = ROOT / "models" / f"demo-{ft['from']}"
    out = work / f"finetune-{ft['from']}-{ft['task']}"
    shutil.rmtree(out, ignore_errors=True)  # early stopping state is not resumable: start clean
    cmd = [sys.executable, "-m", "smu_explain.cli", "finetune", "--task", ft["task"], "--from", str(encoder),
           "--out", str(out), "--steps", str(ft["steps"]), "--batch-size", str(ft["batch_size"]),
           "--lr", str(ft["lr"]), "--seed", str(cfg["seed"]), "--split-seed", str(cfg["pop909_split_seed"]),
           "--eval-every", str(ft["eval_every"]), "--no-bar"] + (["--bf16"] if bf16 else [])
    with open(work / f"finetune-{ft['task']}.log", "a") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if rc != 0:
        print(f"fine-tuning {ft['task']} failed with exit code {rc}; see the log", flush=True)
        return rc
    ship(out, encoder / "finetuned" / ft["task"], cfg, scores=False)
    print(f"{ft['task']}: shipped to {encoder / 'finetuned' / ft['task']}", flush=True)
    return 0


def run_config(cfg: dict, strategy: str) -> dict:
    """The ``smu pretrain --config`` JSON of one strategy's run."""
    return {"size": cfg["model_config"], "model": dict(cfg.get("model", {})),
            "tokenizer": {"max_len": cfg["max_len"]}, "train": dict(cfg.get("train", {})),
            "strategy": dict(cfg.get("strategy_settings", {}).get(strategy, {}))}


def steps_of(cfg: dict, strategy: str) -> int:
    """The step budget of one strategy's demo model: ``steps_by_strategy`` where the config has
    one for it (a model trained on after the other was shipped), else ``steps``."""
    return int(cfg.get("steps_by_strategy", {}).get(strategy, cfg["steps"]))


def use_bf16(cfg: dict) -> bool:
    want = cfg.get("bf16", "auto")
    if want == "auto":
        from smu_explain.precision import fast_precision
        return fast_precision("cpu") == "bf16"
    return bool(want)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "models" / "demo_config.json"))
    ap.add_argument("--work", default=str(Path.home() / "smu_runs" / "demo"))
    ap.add_argument("--steps", type=int, help="override the config's step budget (quick checks)")
    ap.add_argument("--only", choices=["random", "adversarial"], help="train one of the two")
    ap.add_argument("--no-ship", action="store_true", help="train only; do not copy into models/")
    ap.add_argument("--finetune-only", action="store_true",
                    help="only fine-tune the demo task head on the shipped encoder (config 'finetune')")
    ap.add_argument("--threads", type=int,
                    help="CPU threads per run (default: the config's threads_per_run, sized for both side by side)")
    ap.add_argument("--scores-only", action="store_true",
                    help="only store the sample pieces' masker scores beside the shipped encoders")
    args = ap.parse_args()
    cfg = json.loads(Path(args.config).read_text())
    if args.scores_only:
        for strategy in [args.only] if args.only else list(cfg["strategies"]):
            store_scores(ROOT / "models" / f"demo-{strategy}")
        return 0
    if args.steps:
        cfg["steps"] = args.steps
        cfg.pop("steps_by_strategy", None)
    strategies = [args.only] if args.only else list(cfg["strategies"])
    files = training_files(cfg)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads or cfg["threads_per_run"]))
    bf16 = use_bf16(cfg)
    procs = {}
    t0 = time.time()
    if args.finetune_only:
        return finetune_demo_head(cfg, work, env, bf16)
    for strategy in strategies:
        out = work / strategy
        resume = (out / "checkpoint.pt").exists()
        run_cfg = work / f"{strategy}.run.json"
        run_cfg.write_text(json.dumps(run_config(cfg, strategy), indent=1))
        cmd = [sys.executable, "-m", "smu_explain.cli", "pretrain", "--strategy", strategy,
               "--config", str(run_cfg), "--steps", str(steps_of(cfg, strategy)),
               "--batch-size", str(cfg["batch_size"]), "--max-len", str(cfg["max_len"]),
               "--lr", str(cfg["lr"]), "--seed", str(cfg["seed"]),
               "--eval-every", str(cfg["eval_every"]), "--log-every", str(cfg["log_every"]),
               "--checkpoint-every", str(cfg["eval_every"]), "--no-bar", "--out", str(out),
               "--data", *files] + (["--bf16"] if bf16 else []) + (["--resume"] if resume else [])
        log = open(work / f"{strategy}.log", "a")  # noqa: SIM115  handed to the training subprocess, open while it runs
        procs[strategy] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT), out)
        print(f"{strategy}: training in {out} ({len(files)} files, bf16 {bf16}, "
              f"log {work / (strategy + '.log')})", flush=True)
    failed = False
    for strategy, (proc, out) in procs.items():
        rc = proc.wait()
        if rc != 0:
            print(f"{strategy}: failed with exit code {rc}; see the log", flush=True)
            failed = True
            continue
        if not args.no_ship:
            ship(out, ROOT / "models" / f"demo-{strategy}", cfg)
            print(f"{strategy}: shipped to models/demo-{strategy}", flush=True)
    ft = cfg.get("finetune")
    if ft and not failed and not args.no_ship and ft["from"] in strategies:
        failed = finetune_demo_head(cfg, work, env, bf16) != 0
    print(f"wall time {time.time() - t0:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
