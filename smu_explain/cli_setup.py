"""What the ``smu`` commands share to set up a run (the bodies of the commands are in ``cli``).

Owns: reading a JSON settings file and a run config (``--config``), the music files under
paths and the datasets built from them or from a task's data flags, the training config and
its flags (with the learning-rate and seed bounds), the progress file's callbacks and final
status line, and the exclusive lock on a run folder. Torch-free at import (``smu --help``
stays fast): ``tokenizer``, ``corpora``, ``datasets``, ``trainer`` and ``checkpoint`` are imported inside the
functions that need them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import SMUInputError
from .names import SIZES, SPLIT_SCHEMES

MUSIC_SUFFIXES = (".mid", ".midi", ".kar", ".smf", ".xml", ".musicxml", ".mxl", ".krn", ".abc")
LOCK_NAME = ".smu.lock"
MAX_LR = 1.0  # a peak learning rate above this is a typo (Adam diverges at once)
MAX_SEED = 2**32 - 1  # numpy's legacy seeding (and the data loaders') takes at most 32 bits


def load_json(path: str | Path, what: str) -> dict[str, Any]:
    """A JSON object from a file (``SMUInputError`` naming ``what`` when missing or not an object)."""
    p = Path(path)
    if not p.is_file():
        raise SMUInputError(p, f"{what} not found")
    from .checkpoint import loads_json

    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SMUInputError(p, f"{what} is not valid JSON ({e})") from None
    d = loads_json(text, p, SMUInputError)  # not JSON, numbers over the digit limit, too deep
    if not isinstance(d, dict):
        raise SMUInputError(p, f"{what} must be a JSON object")
    return d


def resolve_run_config(config: str) -> dict[str, Any]:
    """``tiny|small|base`` or a JSON file -> {"size", "model", "train", "strategy", "tokenizer"}."""
    if config in SIZES:
        return {"size": config, "model": {}, "train": {}, "strategy": {}, "tokenizer": {}}
    d = load_json(config, "config file")
    unknown = sorted(set(d) - {"size", "model", "train", "strategy", "tokenizer"})
    if unknown:
        raise SMUInputError(config, f"unknown sections {unknown}; allowed: size, model, train, strategy, tokenizer")
    size = d.get("size", "small")
    if size not in SIZES:
        raise SMUInputError(config, f"size must be one of {SIZES}, got {size!r}")
    out = {"size": size}
    for k in ("model", "train", "strategy", "tokenizer"):
        v = d.get(k, {})
        if not isinstance(v, dict):
            raise SMUInputError(config, f'"{k}" must be an object')
        out[k] = v
    return out


def music_files(paths: Sequence[str]) -> list[tuple[Path, str]]:
    """(file, name) of every music file under ``paths`` (files or folders, recursive, sorted)."""
    out: list[tuple[Path, str]] = []
    for raw in paths:
        p = Path(raw)
        if p.is_file():
            out.append((p, p.name))
        elif p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in MUSIC_SUFFIXES)
            if not found:
                raise SMUInputError(p, "no MIDI or score files in this folder")
            out += [(f, f"{p.name}/{f.relative_to(p).as_posix()}") for f in found]
        else:
            raise SMUInputError(p, "no such file or folder")
    return out


def is_tokenized_dir(paths: Sequence[str]) -> bool:
    """``paths`` is one tokenized dataset folder (``smu tokenize``: it holds manifest.json)."""
    return len(paths) == 1 and (Path(paths[0]) / "manifest.json").is_file()


def tokenizer_from_dict(d: dict[str, Any], where: str | Path):
    from .tokenizer import Tokenizer
    from .tokenizer_config import TokenizerConfig

    try:
        return Tokenizer(TokenizerConfig.from_dict(d))
    except (TypeError, ValueError) as e:
        raise SMUInputError(where, f"bad tokenizer settings ({e})") from None


def token_cache(args):
    """The token cache of the ``--cache-dir`` / ``--no-cache`` flags."""
    from .datasets import TokenCache

    return TokenCache(getattr(args, "cache_dir", None), enabled=not getattr(args, "no_cache", False))


def file_datasets(paths: Sequence[str], tokenizer, val_fraction: float, seed: int, augment: bool,
                  cache=None, limit: int | None = None, purpose: str = "train on"):
    """Pre-training data from music files/folders, split by file (``val_fraction`` to val).

    Returns (train, val or None, skipped [(path, reason)]). Unusable files are skipped;
    no usable file at all is an ``SMUInputError`` ("no usable music to ``purpose``").
    """
    from . import corpora, datasets

    files = music_files(paths)
    if limit is not None:
        files = files[:limit]
    refs = [corpora.PieceRef(f, name, name, "files") for f, name in files]
    if val_fraction > 0 and len(refs) >= 2:
        assign = corpora.split_groups([r.group for r in refs], seed, (1 - val_fraction, val_fraction, 0.0))
        if all(v == "train" for v in assign.values()):  # fewer than 3 files: hold out one anyway
            assign[sorted(assign)[-1]] = "val"
    else:
        assign = {r.group: "train" for r in refs}
    splits = {s: [r for r in refs if assign[r.group] == s] for s in corpora.SPLITS}
    task = corpora.TaskData("pretrain", "pretrain", [], splits, f"files: {1 - val_fraction:.0%}/{val_fraction:.0%} "
                                                            f"by file, seed {seed}")
    built = datasets.build_datasets(task, tokenizer, cache, augment_train=augment, seed=seed, progress=True)
    train, val = built.datasets["train"], built.datasets["val"]
    if len(train) == 0:
        reasons = "; ".join(f"{Path(p).name}: {r}" for p, r in built.skipped[:3])
        raise SMUInputError(paths[0] if len(paths) == 1 else ", ".join(paths),
                            f"no usable music to {purpose} ({reasons or 'no files'})")
    return train, (val if len(val) else None), built.skipped


def print_skipped(skipped) -> None:
    """List (the first 10) unusable files on stderr."""
    if skipped:
        print(f"skipped {len(skipped)} unusable file(s):", file=sys.stderr)
        for p, r in skipped[:10]:
            print(f"  {p}: {r}", file=sys.stderr)


def fit_batch(batch_size: int, n_train: int) -> int:
    """The batch size a run can use: ``batch_size``, or, when the training set is smaller, the whole set
    rounded down to a multiple of the ranks under torchrun (``$WORLD_SIZE``: the trainer splits a batch
    evenly over them), with a note on stderr; an input error when there are fewer windows than ranks."""
    try:
        ranks = max(1, int(os.environ.get("WORLD_SIZE") or 1))
    except ValueError:
        ranks = 1
    if n_train >= batch_size:
        return batch_size
    fit = n_train // ranks * ranks
    if fit == 0:
        raise SMUInputError("training data", f"{n_train} training windows are fewer than the {ranks} ranks")
    split = f" (a multiple of the {ranks} ranks)" if ranks > 1 else ""
    print(f"note: {n_train} training windows < batch size {batch_size}; using batch size {fit}{split}",
          file=sys.stderr)
    return fit


def train_config(args, base: dict[str, Any], out: str, defaults: dict[str, Any]):
    """The ``TrainConfig`` of ``defaults`` < ``base`` (a config file) < the command-line flags, range-checked."""
    from .train_config import TrainConfig

    d = dict(defaults)
    d.update(base)
    for flag, key in (("steps", "steps"), ("epochs", "epochs"), ("batch_size", "batch_size"), ("lr", "lr"),
                      ("seed", "seed"), ("device", "device"), ("checkpoint_every", "checkpoint_every"),
                      ("eval_every", "eval_every"), ("num_workers", "num_workers"), ("log_every", "log_every")):
        v = getattr(args, flag, None)
        if v is not None:
            d[key] = v
    if getattr(args, "epochs", None) is not None and getattr(args, "steps", None) is None:
        d["steps"] = None
    if getattr(args, "bf16", False):
        d["bf16"] = True
    d["out_dir"] = out
    cfg = TrainConfig.from_dict(d).validate()
    where = getattr(args, "config", None) or "train config"
    if not cfg.lr <= MAX_LR:
        raise SMUInputError(where, f"lr must be in (0, {MAX_LR:g}], got {cfg.lr:g}")
    if not 0 <= cfg.seed <= MAX_SEED:
        raise SMUInputError(where, f"seed must be in 0..{MAX_SEED} (2**32 - 1), got {short_int(cfg.seed)}")
    return cfg


def add_train_flags(p: argparse.ArgumentParser, steps_default: str) -> None:
    """The training flags of pretrain and finetune."""
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int, default=None, help=f"optimizer steps ({steps_default})")
    g.add_argument("--batch-size", type=int, default=None, help="global batch size (split over GPUs)")
    g.add_argument("--lr", type=float, default=None, help="peak learning rate (default 1e-4)")
    g.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    g.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    g.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPU and GPU)")
    g.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints (0 = end only)")
    g.add_argument("--eval-every", type=int, default=None, help="steps between validations (0 = end only)")
    g.add_argument("--log-every", type=int, default=None, help="steps per progress line (default 10)")
    g.add_argument("--num-workers", type=int, default=None, help="data loader worker processes (default 0)")
    g.add_argument("--progress", default=None, help="progress JSONL file (default OUT/progress.jsonl)")
    g.add_argument("--no-bar", action="store_true", help="no terminal progress bar")


def progress_callbacks(args, progress_path: Path):
    """The progress JSONL writer, and a terminal bar unless ``--no-bar``."""
    from .callbacks import ProgressFile, TqdmProgress

    cbs = [ProgressFile(progress_path)]
    if not getattr(args, "no_bar", False):
        cbs.append(TqdmProgress())
    return cbs


def fail_status(progress_path: Path | None, status: str, message: str) -> None:
    """Write a final status line to the progress file unless the trainer already did (best effort)."""
    if progress_path is None:
        return
    from .callbacks import ProgressFile, read_progress

    try:  # best effort: never hide the error being reported
        recs = read_progress(progress_path)
        if recs and recs[-1].get("event") == "status":
            return  # the trainer already wrote the final line
        pf = ProgressFile(progress_path)
        try:
            pf.write("status", status=status, message=message, step=0)
        finally:
            pf.close()
    except OSError:
        pass


def check_progress_path(path: Path) -> None:
    """A progress file must be a regular file (or not exist yet): refuse devices, FIFOs, folders."""
    import stat

    try:
        st = path.stat()
    except FileNotFoundError:
        return
    except OSError as e:
        raise SMUInputError(path, f"--progress: cannot use this path ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise SMUInputError(path, "--progress must be a regular file (not a folder, device or pipe)")


@contextmanager
def run_lock(out: Path):
    """Hold an exclusive lock on the run folder ``out`` (``out/.smu.lock``, fcntl.flock).

    A second ``smu pretrain``/``finetune`` on the same ``--out`` while one is running is
    refused with ``SMUInputError`` instead of interleaving progress files and overwriting
    the model. Under torchrun only rank 0 takes the lock. The lock file is left in place,
    except when the run fails having written nothing into a folder it made itself: then the
    folder goes too (a failed command leaves no trace).
    """
    import fcntl
    import os

    if os.environ.get("RANK", "0") != "0":
        yield
        return
    made = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise SMUInputError(out, f"cannot use this output folder ({e.strerror or e})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            with contextlib.suppress(OSError):
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            raise SMUInputError(out, "another smu run is writing to this folder"
                                     + (f" (pid {holder})" if holder else "")
                                     + "; wait for it to finish or choose another --out") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        except OSError:
            pass
        try:
            yield
        except BaseException:
            if made:
                with contextlib.suppress(OSError):
                    if os.listdir(out) == [LOCK_NAME]:
                        os.unlink(out / LOCK_NAME)  # still ours: the flock is held until the close below
                        os.rmdir(out)
            raise
    finally:
        os.close(fd)  # releases the lock


def add_task_data_flags(p: argparse.ArgumentParser) -> None:
    """The data flags of finetune and evaluate (a task's data root, a tokenized folder or a labelled folder)."""
    g = p.add_argument_group("data")
    g.add_argument("--data-root", default=None, help="datasets root (default $SMU_DATA_ROOT or ../shared/data)")
    g.add_argument("--data", default=None, help="a tokenized dataset folder (smu tokenize) instead of --data-root")
    g.add_argument("--folder", default=None, help="--task folder: the MIDI folder")
    g.add_argument("--labels", default=None, help="--task folder: labels CSV (file,label[,group])")
    g.add_argument("--split", default="ours", choices=SPLIT_SCHEMES, help="split scheme")
    g.add_argument("--split-seed", type=int, default=0, help="seed of the 80/10/10 split (default 0)")
    g.add_argument("--limit", type=int, default=None, help="at most N files per split (quick looks)")
    g.add_argument("--cache-dir", default=None, help="token cache folder")
    g.add_argument("--no-cache", action="store_true", help="do not use the token cache")


def task_datasets(args, task: str, tokenizer, classes: Sequence[str] | None = None, augment: bool = False,
                  seed: int = 0):
    """{split: TokenDataset} and the class names of ``task`` (data flags of ``args``)."""
    from . import corpora, datasets

    if args.data:
        man = datasets.read_manifest(args.data)
        if man.get("task") != task:
            raise SMUInputError(args.data, f"tokenized for task {man.get('task')!r}, not {task!r}")
        if man.get("tokenizer_config") != tokenizer.config.to_dict():
            raise SMUInputError(args.data, "tokenized with other tokenizer settings than the model's")
        sets = {s: datasets.load_tokenized(args.data, s, augment=augment and s == "train", seed=seed,
                                       tokenizer=tokenizer)
                for s in corpora.SPLITS if (Path(args.data) / f"{s}.npz").is_file()}
        return sets, list(man.get("classes") or [])
    try:
        if task == "folder":
            if not args.folder or not args.labels:
                raise SMUInputError(args.folder or ".", "--task folder needs --folder DIR and --labels CSV")
            td = corpora.folder_task(args.folder, args.labels, args.split_seed, classes=classes)
        else:
            td = corpora.build_task(task, args.data_root, seed=args.split_seed, split=args.split)
        datasets.check_tokenizer_for_task(tokenizer, task)
    except ValueError as e:
        if isinstance(e, SMUInputError):
            raise
        raise SMUInputError(args.data_root or args.folder or task, str(e)) from None
    built = datasets.build_datasets(td, tokenizer, token_cache(args), augment_train=augment, seed=seed, progress=True,
                                limit=args.limit)
    print_skipped(built.skipped)
    return built.datasets, list(td.classes)


def short_int(v: int) -> str:
    """An integer for a message: in full up to 30 digits, else its size in bits."""
    return str(v) if abs(v) < 10 ** 30 else f"{'-' if v < 0 else ''}a {abs(v).bit_length()}-bit number"
