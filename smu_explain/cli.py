"""The ``smu`` console script: pretrain, finetune, evaluate, explain, tokenize, import, picks, study.

Rules:

- Every command has ``--help``; long work shows a tqdm progress bar on stderr.
- Errors the user can fix (``SMUInputError`` and its ``SMUCheckpointError``, missing
  files) print one line ``error: <file>: <reason>`` on stderr and exit with code 2;
  a training that cannot go on (``SMUTrainingError``, e.g. a NaN loss) prints one
  ``error:`` line and exits with 1. No traceback for either.
- ``smu pretrain`` writes its progress JSONL (``--progress``, default
  ``OUT/progress.jsonl``). SIGTERM / SIGINT stop it cleanly: a checkpoint of the
  last finished step, a final ``cancelled`` status line, exit code 143 (SIGTERM)
  or 130 (SIGINT). A failure before or during training writes a ``failed`` status line.
- ``--config`` of pretrain: ``tiny`` | ``small`` | ``base`` or a JSON file
  ``{"size": "small", "model": {ModelConfig overrides}, "train": {TrainConfig fields},
  "strategy": {StrategyConfig fields}, "tokenizer": {TokenizerConfig fields}}``;
  command-line flags win over the file.
- ``--resume`` continues the run in ``--out`` exactly (model, tokenizer and strategy
  settings are read back from that folder; ``--steps`` may extend it).
- ``pretrain`` / ``finetune`` hold an exclusive lock on ``--out`` (``OUT/.smu.lock``):
  a second run on the same folder is refused. ``--progress`` must be a regular file.
- Numeric flags are range-checked (``check_flags``); any OSError (disk full, ...) is one
  ``error:`` line with exit 2, like ``SMUWriteError``.

The setup the commands share (run configs, music files and datasets, the training config and
flags, progress files, the run lock) is in ``cli_setup``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .cli_setup import (
    MAX_LR,
    MAX_SEED,
    add_task_data_flags,
    add_train_flags,
    check_progress_path,
    fail_status,
    file_datasets,
    fit_batch,
    is_tokenized_dir,
    load_json,
    print_skipped,
    progress_callbacks,
    resolve_run_config,
    run_lock,
    short_int,
    task_datasets,
    token_cache,
    tokenizer_from_dict,
    train_config,
)
from .errors import SMUCheckpointError, SMUInputError, SMUTrainingError
from .limits import MAX_NOTES
from .names import FINETUNE_TASKS, SIZES, SPLIT_SCHEMES, STRATEGIES, TASKS

EXIT_INPUT, EXIT_TRAINING, EXIT_SIGTERM, EXIT_SIGINT = 2, 1, 143, 130


class _Cancelled(BaseException):
    """Raised by the early signal handler (before the trainer exists)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_cancelled(signum, frame):
    raise _Cancelled(signum)


# ============================================================================ pretrain

def add_pretrain_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("pretrain", help="pre-train a MidiBERT-style model (random / adversarial / bar masking)",
                       description="Pre-train an encoder with a masking strategy on MIDI files/folders or a "
                                   "tokenized dataset folder (smu tokenize). Writes OUT/config.json + "
                                   "model.safetensors (loadable while training runs), checkpoint.pt and a "
                                   "progress JSONL. SIGTERM/SIGINT: checkpoint, 'cancelled' status, exit.")
    p.add_argument("--strategy", required=True, choices=STRATEGIES)
    p.add_argument("--data", required=True, nargs="+", metavar="PATH",
                   help="MIDI files and/or folders, or one tokenized dataset folder (manifest.json)")
    p.add_argument("--config", default="small", help="tiny | small | base | a JSON file (see smu --help)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from checkpoint.pt")
    p.add_argument("--ratio", type=float, default=None, help="masking ratio (default 0.15)")
    p.add_argument("--max-len", type=int, default=None, help="tokens per window (default 512)")
    p.add_argument("--val-fraction", type=float, default=0.05, help="files held out for validation (default 0.05)")
    p.add_argument("--no-augment", action="store_true", help="no random transposition of training windows")
    p.add_argument("--limit", type=int, default=None, help="use at most N files (quick looks)")
    p.add_argument("--cache-dir", default=None, help="token cache folder")
    p.add_argument("--no-cache", action="store_true", help="do not use the token cache")
    add_train_flags(p, "default 1000")
    p.set_defaults(func=cmd_pretrain)
    return p


def cmd_pretrain(args) -> int:
    out = Path(args.out)
    progress_path = Path(args.progress) if args.progress else out / "progress.jsonl"
    check_progress_path(progress_path)
    with run_lock(out):
        return _cmd_pretrain_locked(args, out, progress_path)


def _cmd_pretrain_locked(args, out: Path, progress_path: Path) -> int:
    if not args.resume and (out / "checkpoint.pt").is_file():  # checked before touching any progress file
        raise SMUInputError(out, "already holds a training run (checkpoint.pt); use --resume to continue "
                                 "it or choose another --out")
    previous = {s: signal.signal(s, _raise_cancelled) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _pretrain(args, out, progress_path)
    except _Cancelled as c:
        fail_status(progress_path, "cancelled", f"cancelled by {c} before training started")
        print(f"cancelled by {c}", file=sys.stderr)
        return EXIT_SIGTERM if c.signum == signal.SIGTERM else EXIT_SIGINT
    except (SMUInputError, SMUTrainingError, OSError) as e:
        fail_status(progress_path, "failed", str(e))
        raise
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


SKIPPED_NAMED = 10  # skipped files named (with their reasons) in config.json and the progress file


def _pretrain(args, out: Path, progress_path: Path) -> int:
    import torch

    from . import datasets
    from .checkpoint import check_memory, load_checkpoint
    from .masker import StrategyConfig, make_strategy
    from .model import MidiBert, ModelConfig, estimated_parameters
    from .trainer import Trainer, install_stop_signals

    run = resolve_run_config(args.config)
    if args.resume:
        # the run folder's model: its config, tokenizer and strategy (the weights come from checkpoint.pt)
        ckpt = load_checkpoint(out, kind="pretrained")
        if not (out / "checkpoint.pt").is_file():
            raise SMUCheckpointError(out, "no checkpoint.pt to resume from")
        model_cfg, tokenizer = ckpt.model.config, ckpt.tokenizer
        strat_cfg = dict(ckpt.meta.get("strategy") or {})
        if strat_cfg.get("name", args.strategy) != args.strategy:
            raise SMUInputError(out, f"this run used --strategy {strat_cfg.get('name')}, not {args.strategy}")
        prev_train = out / "train_config.json"
        train_base = load_json(prev_train, "train config") if prev_train.is_file() else run["train"]
    else:
        tok_kw = dict(run["tokenizer"])
        if args.max_len is not None:
            tok_kw["max_len"] = args.max_len
        if is_tokenized_dir(args.data):
            tokenizer = datasets.tokenizer_from_manifest(args.data[0])
        else:
            tokenizer = tokenizer_from_dict(tok_kw, args.config)
        model_kw = dict(run["model"])
        model_kw.setdefault("max_len", tokenizer.config.max_len)
        try:
            model_cfg = ModelConfig.named(run["size"], tokenizer.vocab_sizes, tokenizer.attributes, **model_kw)
        except (TypeError, ValueError) as e:
            raise SMUInputError(args.config, f"bad model settings ({e})") from None
        strat_cfg = dict(run["strategy"])
        train_base = run["train"]
    if args.ratio is not None:
        strat_cfg["ratio"] = args.ratio
    cfg = train_config(args, train_base, str(out), {"steps": 1000})
    strat_cfg.update(name=args.strategy, seed=cfg.seed)
    try:
        strategy = make_strategy(StrategyConfig.from_dict(strat_cfg))
    except (TypeError, ValueError) as e:
        raise SMUInputError(args.config, f"bad strategy settings ({e})") from None
    if model_cfg.max_len < tokenizer.config.max_len:
        raise SMUInputError(args.config, f"model max_len {model_cfg.max_len} < tokenizer windows "
                                         f"{tokenizer.config.max_len}")
    # the weights, gradients and Adam's moments must fit the machine's memory: checked before any is made
    check_memory(estimated_parameters(model_cfg), out if args.resume else (args.config or "--config"),
                 purpose="training_loaded" if args.resume else "training", device=_device(cfg.device),
                 error=SMUInputError)

    augment = not args.no_augment
    if is_tokenized_dir(args.data):
        src = args.data[0]
        man = datasets.read_manifest(src)
        if man.get("tokenizer_config") != tokenizer.config.to_dict():
            raise SMUInputError(src, "tokenized with other tokenizer settings than this run")
        train = datasets.load_tokenized(src, "train", augment=augment, seed=cfg.seed, tokenizer=tokenizer)
        val = datasets.load_tokenized(src, "val") if (Path(src) / "val.npz").is_file() else None
        val = val if val is not None and len(val) else None
        skipped = []
    else:
        train, val, skipped = file_datasets(args.data, tokenizer, args.val_fraction, cfg.seed, augment,
                                            token_cache(args), args.limit)
    print_skipped(skipped)
    asked = cfg.batch_size
    cfg.batch_size = fit_batch(cfg.batch_size, len(train))
    torch.manual_seed(cfg.seed)
    model = MidiBert(model_cfg)
    # what the data came to, in config.json and in the progress file's start record (the Train page says it)
    data_facts = {"paths": [str(p) for p in args.data], "train_windows": len(train),
                  "val_windows": 0 if val is None else len(val), "skipped": len(skipped),
                  "skipped_files": [[Path(p).name, str(r)] for p, r in skipped[:SKIPPED_NAMED]],
                  "batch_size_asked": asked}
    extra = {"tokenizer": tokenizer.config.to_dict(), "strategy": strategy.config.to_dict(),
             "training_data": data_facts}
    trainer = Trainer(model, strategy, train, val, cfg, callbacks=progress_callbacks(args, progress_path),
                      collate_fn=datasets.collate, save_extra=extra)
    restore = install_stop_signals(trainer)
    try:
        res = trainer.fit(resume=args.resume)
    finally:
        restore()
    if trainer.dist.rank == 0:
        _report_run(res, out)
    if res["status"] == "cancelled":
        return EXIT_SIGINT if "SIGINT" in res["message"] else EXIT_SIGTERM
    return 0


def _report_run(res: dict[str, Any], out: Path) -> None:
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in sorted(res.get("metrics", {}).items())
                        if k in ("val_loss", "val_acc", "val_acc_pitch"))
    print(f"{res['status']}: {res['message']} (step {res['step']}){'; ' + metrics if metrics else ''}; "
          f"model in {out}")


# ============================================================================ finetune

def add_finetune_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("finetune", help="fine-tune on melody / velocity / composer / emotion / a labelled folder",
                       description="Fine-tune a pre-trained encoder (--from DIR) or a fresh one (--from none, "
                                   "the no-pre-training control) with mask fine-tuning (15% of input tokens "
                                   "masked while training) and early stopping on validation accuracy. Writes the "
                                   "best model (config.json + model.safetensors) and results.json to --out.")
    p.add_argument("--task", required=True, choices=FINETUNE_TASKS)
    p.add_argument("--from", dest="pretrained", required=True, metavar="DIR|none",
                   help="pre-trained model folder, or 'none' for a fresh encoder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--size", default="small", choices=SIZES, help="encoder size with --from none")
    p.add_argument("--max-len", type=int, default=None, help="window length with --from none (default 512)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 10, unless --steps)")
    p.add_argument("--patience", type=int, default=3, help="evaluations without improvement before stopping")
    p.add_argument("--mask-ratio", type=float, default=0.15, help="mask fine-tuning ratio (0 = off)")
    p.add_argument("--eval-mask", action="store_true", help="also mask inputs at evaluation (off by default)")
    p.add_argument("--augment", action="store_true", help="random transposition of training windows")
    add_task_data_flags(p)
    add_train_flags(p, "default: --epochs")
    p.set_defaults(func=cmd_finetune)
    return p


def cmd_finetune(args) -> int:
    progress = Path(args.progress) if args.progress else Path(args.out) / "progress.jsonl"
    check_progress_path(progress)
    with run_lock(Path(args.out)):
        return _cmd_finetune_locked(args)


def _cmd_finetune_locked(args) -> int:
    from . import datasets
    from .checkpoint import check_memory, load_checkpoint
    from .finetune import build_model, finetune
    from .model import ModelConfig, estimated_parameters

    out = Path(args.out)
    if args.pretrained.lower() == "none":
        try:
            tokenizer = datasets.make_tokenizer(args.task, max_len=args.max_len)
        except ValueError as e:
            raise SMUInputError("--max-len", str(e)) from None
        pre = None
    else:
        pre = load_checkpoint(Path(args.pretrained), kind="pretrained")
        tokenizer = pre.tokenizer
    defaults = {"epochs": 10, "steps": None, "eval_every": 0, "checkpoint_every": 0, "batch_size": 16}
    cfg = train_config(args, {}, str(out), defaults)
    sets, classes = task_datasets(args, args.task, tokenizer, augment=args.augment, seed=cfg.seed)
    train, val, test = sets.get("train"), sets.get("val"), sets.get("test")
    if train is None or len(train) == 0:
        raise SMUInputError(args.data or args.data_root or args.folder or args.task, "no training windows")
    cfg.batch_size = fit_batch(cfg.batch_size, len(train))
    # weights, gradients and Adam's moments against the machine's memory, before the model is made
    n_params = (pre.model.num_parameters() if pre is not None else
                estimated_parameters(ModelConfig.named(args.size, tokenizer.vocab_sizes, tokenizer.attributes,
                                                        max_len=tokenizer.config.max_len)))
    check_memory(n_params, args.pretrained if pre is not None else f"--size {args.size}",
                 purpose="training_loaded" if pre is not None else "training", device=_device(cfg.device),
                 error=SMUInputError)
    model = build_model(args.task, classes, pretrained=pre, vocab_sizes=tokenizer.vocab_sizes,
                        attributes=tokenizer.attributes, size=args.size, max_len=tokenizer.config.max_len,
                        seed=cfg.seed)
    model.checkpoint_info["tokenizer"] = tokenizer.config.to_dict()
    progress = Path(args.progress) if args.progress else out / "progress.jsonl"
    res = finetune(args.task, model, train, val, cfg, test_set=test, mask_ratio=args.mask_ratio,
                   eval_mask=args.eval_mask, patience=args.patience, collate_fn=datasets.collate,
                   callbacks=progress_callbacks(args, progress), out_dir=out)
    _print_scores(res, ("val", "test"))
    print(f"model and results.json in {out}")
    return 0


def _device(name: str) -> str:
    """The device a run's ``device`` setting means (``auto``: cuda when there is one)."""
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _print_scores(res: dict[str, Any], splits: Sequence[str]) -> None:
    print(f"task {res['task']} ({res['level']} level), mask fine-tuning {res.get('mask_finetune_ratio', 0):.0%}, "
          f"eval masking {'on' if res['eval_mask'] else 'off'}")
    for s in splits:
        if s not in res:
            continue
        r = res[s]
        extra = f", window acc {r['window_acc']:.4f}" if "window_acc" in r else ""
        truth = [sum(row) for row in r["confusion"]]  # what always answering the most frequent class scores
        if sum(truth):
            k = max(range(len(truth)), key=truth.__getitem__)
            r["majority"] = {"class": res["classes"][k], "acc": truth[k] / sum(truth)}
            extra += f"; the most frequent class ({r['majority']['class']}) alone: acc {r['majority']['acc']:.4f}"
        print(f"{s}: acc {r['acc']:.4f}, macro-F1 {r['macro_f1']:.4f} over {r['n']} {r['unit'].split()[0]}s{extra}")
        _print_confusion(r["confusion"], res["classes"])


def _print_confusion(conf: list[list[int]], classes: Sequence[str]) -> None:
    w = max(6, *(len(c) for c in classes)) + 1
    print("  true\\pred".ljust(w + 2) + "".join(c.rjust(w) for c in classes))
    for c, row in zip(classes, conf, strict=False):
        print(f"  {c}".ljust(w + 2) + "".join(str(v).rjust(w) for v in row))


# ============================================================================ evaluate

def add_evaluate_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("evaluate", help="score a fine-tuned model (acc/F1/confusion) or a pre-trained one "
                                        "(recovery accuracy per attribute)",
                       description="A fine-tuned model folder is scored on its task's split (accuracy, "
                                   "macro-F1, confusion; sequence tasks: piece level = mean of the window "
                                   "probabilities, plus window level). A pre-trained model folder gets the "
                                   "recovery accuracy per attribute of a fixed-seed random 15% of tokens "
                                   "masked, on --paths music files or a task split.")
    p.add_argument("--model", required=True, help="model folder")
    p.add_argument("--task", default=None, choices=FINETUNE_TASKS + ("pretrain",),
                   help="task (fine-tuned: defaults to the model's)")
    p.add_argument("--paths", nargs="+", default=None, help="pre-trained model: music files/folders to score")
    p.add_argument("--on", default="test", choices=("train", "val", "test"), help="split to score (default test)")
    p.add_argument("--eval-mask", action="store_true", help="fine-tuned: mask 15%% of inputs at evaluation")
    p.add_argument("--ratio", type=float, default=0.15, help="pre-trained: masked fraction (default 0.15)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the scores to this JSON file")
    add_task_data_flags(p)
    p.set_defaults(func=cmd_evaluate)
    return p


def cmd_evaluate(args) -> int:
    from .checkpoint import load_checkpoint
    from .finetune import evaluate_model
    from .io import atomic_write_text

    where = Path(args.model)
    ckpt = load_checkpoint(where)
    model, tokenizer = ckpt.model, ckpt.tokenizer
    if ckpt.kind == "finetuned":
        task = args.task or model.task
        if task != model.task:
            raise SMUInputError(where, f"this model was fine-tuned for {model.task}, not {task}")
        sets, classes = task_datasets(args, task, tokenizer, classes=model.classes if task == "folder" else None)
        ds = sets.get(args.on)
        if ds is None or len(ds) == 0:
            raise SMUInputError(args.data or args.data_root or args.folder or task, f"the {args.on} split is empty")
        if classes and list(classes) != list(model.classes):
            raise SMUInputError(args.data or args.labels or task, f"classes {classes} differ from the model's "
                                                                  f"{model.classes}")
        res = evaluate_model(model, ds, batch_size=args.batch_size, eval_mask=args.eval_mask, seed=args.seed)
        full = {"task": task, "level": model.level, "classes": model.classes, "eval_mask": args.eval_mask,
                "mask_finetune_ratio": (ckpt.meta.get("finetune") or {}).get("mask_finetune_ratio", 0.0), args.on: res}
        _print_scores(full, (args.on,))
    else:
        from .explain import recovery_with_tokens

        if args.paths:
            ds, _, skipped = file_datasets(args.paths, tokenizer, 0.0, args.seed, False, token_cache(args), args.limit,
                                           purpose="evaluate on")
            print_skipped(skipped)
        elif args.task or args.data:
            sets, _ = task_datasets(args, args.task or "pretrain", tokenizer)
            ds = sets.get(args.on)
            if ds is None or len(ds) == 0:
                raise SMUInputError(args.data or args.data_root or "data", f"the {args.on} split is empty")
        else:
            raise SMUInputError(where, "a pre-trained model needs --paths FILES or --task/--data to score on")
        acc, notes = recovery_with_tokens(model, ds, ratio=args.ratio, seed=args.seed, batch_size=args.batch_size)
        full = {"kind": "pretrained", "ratio": args.ratio, "windows": len(ds), "recovery_accuracy": acc}
        print(f"recovery accuracy ({args.ratio:.0%} of tokens masked, fixed seed {args.seed}, {len(ds)} windows):")
        _print_with_rules(full, ds, args, model.config.attributes, notes)
    if args.json:
        atomic_write_text(args.json, json.dumps(full, indent=2, default=str))
    return 0


def _print_with_rules(full: dict[str, Any], ds, args, attributes, notes: dict[str, Any]) -> None:
    """Recovery accuracy per attribute next to the no-model rules (METHOD.md 9) on the same
    masked notes, the model's lead over the best rule with a paired 95% interval over pieces
    (else windows), and the verdict: "learned" only where the interval excludes 0; adds them to
    ``full``."""
    from .baselines import RULES, beats_rules, corpus_leads, lead_record, lead_word, rule_stats
    from .verdict import MIN_UNITS

    acc = full["recovery_accuracy"]
    stats = rule_stats(ds, ratio=args.ratio, seed=args.seed, batch_size=args.batch_size, attributes=attributes,
                       keep_tokens=True)
    rules = stats["rules"]
    lead = corpus_leads(notes, stats["tokens"], list(acc), seed=args.seed)
    above = beats_rules(acc, rules)
    said = {a: lead_word(above[a], lead["leads"].get(a)) for a in acc}
    full.update(rules=rules, beats_rules={a: w == "learned" for a, w in said.items()}, lead_interval=lead_record(lead))
    print(f"  {'attribute':<10} {'model':>7} " + " ".join(f"{r:>14}" for r in RULES)
          + f"  {'lead over the best rule':<30} verdict")
    for a, v in acc.items():
        iv = lead["leads"].get(a)
        lead_txt = f"{100 * (v - max(rules[r][a] for r in RULES)):+.1f} pts " + (
            f"[{100 * iv[0]:+.1f}, {100 * iv[1]:+.1f}]" if iv else "(no interval)")
        print(f"  {a:<10} {v:7.4f} " + " ".join(f"{rules[r][a]:14.4f}" for r in RULES) + f"  {lead_txt:<30} {said[a]}")
    if lead["unit"]:
        print(f"  (lead: model minus the best rule, points; [95% interval] from a paired bootstrap over "
              f"{lead['n_units']} {lead['unit']}s; 'learned' only where it excludes 0)")
    else:
        print(f"  (only {lead['n_units']} window(s): at least {MIN_UNITS['piece']} pieces or windows are needed "
              "for an interval, so no attribute is called learned)")
    print("  (rules use no model: most frequent value in these windows, copy the nearest unmasked note "
          "before (else after), most frequent of the unmasked notes within 8 places; smu_explain/baselines.py)")


# ============================================================================ explain

EXPLAIN_COLUMNS = ["note", "pitch", "start_sec", "bar", "beat", "score", "picked", "frozen"]


def add_explain_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("explain", help="per-note table: masker score, picked/frozen, recovery per attribute",
                       description="Explain one piece with a pre-trained model: one row per note with the "
                                   "masker score, whether it would be picked / frozen, and how well each "
                                   "attribute is recovered when the note is masked. Prints a table, or "
                                   "writes JSON (one object per note) or CSV.")
    p.add_argument("piece", help="a MIDI or MusicXML file")
    p.add_argument("--model", required=True, help="pre-trained model folder")
    p.add_argument("--ratio", type=float, default=0.15, help="fraction of notes picked (default 0.15)")
    p.add_argument("--top-k", type=int, default=3, help="predictions kept per attribute (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", type=int, default=40, help="rows printed (0 = all; default 40)")
    p.add_argument("--max-notes", type=int, default=MAX_NOTES,
                   help=f"refuse pieces with more notes (default {MAX_NOTES:,}, the app's limit)")
    g = p.add_mutually_exclusive_group()
    p.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32",
                   help="model passes in fp32 (default) or under bf16 autocast; auto = bf16 where the CPU has "
                        "bf16 units (faster for published-size models, numbers differ in the last digits)")
    g.add_argument("--json", default=None, help="write the table as JSON records")
    g.add_argument("--csv", default=None, help="write the table as CSV")
    p.set_defaults(func=cmd_explain)
    return p


def cmd_explain(args) -> int:
    from .checkpoint import load_checkpoint
    from .explain import explain_piece
    from .io import atomic_write_text

    if not 0 < args.ratio <= 1:
        raise SMUInputError("--ratio", f"must be in (0, 1], got {args.ratio}")
    # a fine-tuned folder is refused: explain needs the masker and attribute heads of a pre-trained one
    ckpt = load_checkpoint(Path(args.model), kind="pretrained")
    model, tokenizer = ckpt.model, ckpt.tokenizer
    from .tokenizer_config import TokenizerConfig

    if isinstance(tokenizer.config, TokenizerConfig):  # bounded in memory and time (sandbox.py)
        from .sandbox import read_piece_bounded

        piece = read_piece_bounded(args.piece, config=tokenizer.config, max_notes=None)
    else:  # Octuple tokens read tempo events in process (bounded by the parsed-value checks)
        piece = tokenizer.read(args.piece)
    if len(piece.pitch) > args.max_notes:
        raise SMUInputError(args.piece, f"{len(piece.pitch):,} notes: more than the limit of {args.max_notes:,} "
                                        "notes per piece (explaining masks every note once: minutes to hours). "
                                        "Cut it into shorter excerpts, or raise --max-notes.")
    print(f"explaining {len(piece.pitch)} notes of {args.piece} ...", file=sys.stderr)
    imported = (getattr(model, "checkpoint_info", None) or {}).get("imported")
    if isinstance(imported, dict):
        for has, what in (("has_masker", "a masker head: score, picked and frozen"),
                          ("has_recovery_heads", "recovery heads: loss, correct and pred")):
            if imported.get(has) is False:
                print(f"warning: {args.model} is a published checkpoint without {what} carry no meaning",
                      file=sys.stderr)
    from .precision import fast_precision

    precision = fast_precision("cpu") if args.precision == "auto" else args.precision
    df = explain_piece(model.eval(), tokenizer, piece, ratio=args.ratio, top_k=args.top_k, seed=args.seed,
                       precision=precision)
    if args.json:
        atomic_write_text(args.json, df.to_json(orient="records", indent=1))
        print(f"wrote {len(df)} rows to {args.json}")
    elif args.csv:
        atomic_write_text(args.csv, df.to_csv(index=False))
        print(f"wrote {len(df)} rows to {args.csv}")
    else:
        cols = EXPLAIN_COLUMNS + [c for a in model.config.attributes for c in (f"correct_{a}", f"pred_{a}")]
        cols = [c for c in cols if c in df.columns]
        shown = df if args.rows == 0 else df.head(args.rows)
        import pandas as pd

        with pd.option_context("display.max_columns", None, "display.width", 200, "display.precision", 3):
            print(shown[cols].to_string(index=False))
        if len(shown) < len(df):
            print(f"... {len(df) - len(shown)} more rows (--rows 0 for all, or --json/--csv)")
        accs = ", ".join(f"{a} {df[f'correct_{a}'].mean():.3f}" for a in model.config.attributes)
        print(f"{len(df)} notes; picked {int(df['picked'].sum())}, frozen {int(df['frozen'].sum())}; "
              f"recovery accuracy: {accs}")
        print(_explain_rules_line(tokenizer, piece, args.ratio, args.seed, model.config.max_len))
    return 0


def _explain_rules_line(tokenizer, piece, ratio: float, seed: int, max_len: int) -> str:
    """The best no-model rule per attribute on the very notes explain masked (METHOD.md 9), for the
    recovery accuracies above (an accuracy alone says nothing of what the context gives away)."""
    from .baselines import best_rule, piece_rules
    from .readable import RULE_LABELS
    from .windows import recovery_group_count

    try:
        rules = piece_rules(tokenizer, piece, ratio=1.0 / recovery_group_count(ratio), seed=seed, max_len=max_len)
    except (AttributeError, KeyError, ValueError, TypeError) as e:  # a tokenizer the rules do not read
        return f"no-model rules: not available for this model's tokens ({e.__class__.__name__})"
    best = best_rule(rules)
    return "best no-model rule on the same masked notes: " + ", ".join(
        f"{a} {acc:.3f} ({RULE_LABELS.get(r, r)})" for a, (r, acc) in best.items())


# ============================================================================ tokenize

def _cmd_tokenize(args: argparse.Namespace) -> int:
    from .datasets import cmd_tokenize

    return cmd_tokenize(args)


def add_tokenize_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``smu tokenize`` on an argparse subparsers object (no torch until it runs)."""
    p = subparsers.add_parser(
        "tokenize", help="tokenize a task's dataset into npz + manifest",
        description="Read a dataset (data root for pretrain/melody/velocity/composer/emotion, "
                    "or a MIDI folder with --labels for folder), encode it and write "
                    "<split>.npz, tokenizer.json and manifest.json in --out. Bad files are "
                    "skipped and reported.")
    p.add_argument("path", nargs="?", default=None,
                   help="data root (default $SMU_DATA_ROOT or ../shared/data) or MIDI folder")
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--labels", default=None, help="labels CSV (file,label[,group]) for --task folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument("--split", default="ours", choices=SPLIT_SCHEMES,
                   help="split scheme (default ours: 80/10/10 by song/work)")
    p.add_argument("--asap-source", default="both", choices=("score", "performance", "both"),
                   help="ASAP files: score MIDIs, beat-re-timed performances, or both (default)")
    p.add_argument("--max-len", type=int, default=None, help="window length (tokenizer default)")
    p.add_argument("--stride", type=int, default=None, help="window stride (tokenizer default)")
    p.add_argument("--cache-dir", default=None, help="token cache (default $SMU_CACHE_DIR or ~/.cache/smu_explain)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the token cache")
    p.add_argument("--limit", type=int, default=None, help="at most N files per split (quick looks)")
    p.set_defaults(func=_cmd_tokenize)
    return p


# ============================================================================ import

def add_import_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "import", help="open a published checkpoint (Adversarial-MidiBERT, MidiBERT-Piano) as a smu_explain model",
        description="Read a publisher's weights - a Hugging Face snapshot folder (config.json + "
                    "model.safetensors) or a .ckpt/.pth/.pt/.bin file (torch.load weights_only) or a "
                    ".safetensors file - check every tensor against the published architecture and write "
                    "this project's checkpoint folder to --out (see smu_explain/published.py).")
    p.add_argument("src", help="snapshot folder or weights file")
    p.add_argument("--out", required=True, help="output folder (a smu_explain checkpoint)")
    p.add_argument("--layout", choices=("midibert-cp", "adversarial-octuple"), default=None,
                   help="force the layout (default: from the number of attributes)")
    p.add_argument("--position", choices=("absolute", "relative_key", "relative_key_query"), default=None,
                   help="the checkpoint's position scheme when config.json does not say (default "
                        "relative_key_query when the weights have distance embeddings)")
    p.add_argument("--heads", type=int, default=None, help="attention heads (absolute positions only)")
    p.set_defaults(func=cmd_import)
    return p


def cmd_import(args) -> int:
    from .published import import_checkpoint

    if Path(args.out).exists() and any(Path(args.out).iterdir()):
        raise SMUInputError(args.out, "the output folder exists and is not empty; choose a new one")
    report = import_checkpoint(args.src, args.out, layout=args.layout, position=args.position, heads=args.heads)
    for line in report.lines():
        print(line)
    print(f"written: {args.out} (open it in the app's model picker or with any smu command)")
    return 0


# ============================================================================ picks

def add_picks_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "picks", help="what the masker picks per class of note (harmony, voice, metre), with intervals",
        description="Run a pre-trained model's masker on music files and measure, per class of note "
                    "(chord / non-chord tone and its kind, voice position, metric weight, repeated note, "
                    "duration, register, POP909 role: smu_explain/harmony.py), the mean score and the shares "
                    "picked and frozen, raw and controlled for duration x register, with bootstrap 95% "
                    "intervals over pieces, and one sentence that names a class only when its interval "
                    "excludes no difference (smu_explain/picks.py).")
    p.add_argument("inputs", nargs="+", help="MIDI/MusicXML files or folders (searched recursively)")
    p.add_argument("--model", required=True, help="pre-trained model folder")
    p.add_argument("--ratio", type=float, default=0.15, help="masking ratio (default 0.15)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--max-pieces", type=int, default=None, help="at most N pieces (quick looks)")
    p.add_argument("--json", default=None, help="write the result as JSON (default: print it)")
    p.add_argument("--markdown", default=None, help="write the sentence and the table as markdown")
    p.set_defaults(func=cmd_picks)
    return p


def cmd_picks(args) -> int:
    from .picks import run_command

    res = run_command(args.model, args.inputs, ratio=args.ratio, n_boot=args.n_boot, seed=args.seed,
                      max_pieces=args.max_pieces, json_out=args.json, markdown_out=args.markdown)
    if not args.json:
        print(json.dumps(res, indent=1))
    for name, why in res.get("skipped", []):
        print(f"skipped {name}: {why}", file=sys.stderr)
    print(res["sentence"], file=sys.stderr)
    return 0


# ============================================================================ main

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smu", description="smu_explain: pre-train, fine-tune, evaluate and explain BERT-style "
                                "symbolic-music models.",
        epilog="pretrain --config JSON: {\"size\": \"small\", \"model\": {...}, \"train\": {...}, "
               "\"strategy\": {...}, \"tokenizer\": {...}}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_pretrain_parser(sub)
    add_finetune_parser(sub)
    add_evaluate_parser(sub)
    add_explain_parser(sub)
    add_tokenize_parser(sub)
    add_import_parser(sub)
    add_picks_parser(sub)
    from .study import add_study_parser  # torch-free: the runner is imported when `smu study` runs

    add_study_parser(sub)
    return parser


def check_flags(args) -> None:
    """Range checks of the numeric flags argparse cannot express (SMUInputError naming the flag)."""
    import math

    def bad(flag: str, rule: str, v) -> SMUInputError:
        return SMUInputError(flag, f"must be {rule}, got {v}")

    v = getattr(args, "val_fraction", None)
    if v is not None and not (math.isfinite(v) and 0 <= v < 1):
        raise bad("--val-fraction", "in [0, 1)", v)
    for flag, low in (("top_k", 1), ("rows", 0), ("limit", 1), ("batch_size", 1), ("patience", 1),
                      ("max_len", 1), ("epochs", 1), ("steps", 1), ("max_notes", 1)):
        v = getattr(args, flag, None)
        if v is not None and v < low:
            raise bad("--" + flag.replace("_", "-"), f">= {low}", v)
    for flag, hi_open in (("ratio", False), ("mask_ratio", True)):
        v = getattr(args, flag, None)
        if v is not None and not (math.isfinite(v) and 0 <= v <= 1 and not (hi_open and v == 1)):
            raise bad("--" + flag.replace("_", "-"), "in [0, 1)" if hi_open else "in [0, 1]", v)
    v = getattr(args, "lr", None)
    if v is not None and not (math.isfinite(v) and 0 < v <= MAX_LR):
        raise bad("--lr", f"a number in (0, {MAX_LR:g}]", v)
    for flag in ("seed", "split_seed"):
        v = getattr(args, flag, None)
        if v is not None and not 0 <= v <= MAX_SEED:
            raise bad("--" + flag.replace("_", "-"), f"in 0..{MAX_SEED} (2**32 - 1)", short_int(v))


OUTPUT_FLAGS = ("json", "csv", "markdown")  # the flags that name one output file


def check_outputs(args) -> None:
    """Output files that cannot be written are refused before any work (``io.check_writable``)."""
    from .io import check_writable

    for flag in OUTPUT_FLAGS:
        if getattr(args, flag, None):
            check_writable(getattr(args, flag))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_flags(args)
        check_outputs(args)
        return int(args.func(args) or 0)
    except SMUInputError as e:  # includes SMUCheckpointError
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    except SMUTrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_TRAINING
    except OSError as e:  # missing files, permissions, a full disk ...
        print(f"error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_SIGINT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
