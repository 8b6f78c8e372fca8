"""Runs the study's stages: ``Study`` (data, pre-training chunks, fine-tuning, learning curves,
probes, efficiency, analysis, report), with its stage display.

Its parts: ``cost`` (``CostMeter``), ``callbacks`` (the trainer callbacks), ``fixture`` (the tiny
preset's data), ``subsets`` (data subsets). Imports the trainer's callbacks (torch) at import
time: ``smu_explain.study`` loads it lazily."""

from __future__ import annotations

import logging
import math
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SMUInputError
from ..io import atomic_write_text
from .analysis import SNAPSHOT_GLOB, load_freeze_snapshot, masker_analysis
from .callbacks import FreezeSnapshots, StopAtStep, TokenCounter
from .cost import CostMeter
from .figures import analysis_figures, data_efficiency_figure, save_figures
from .fixture import make_fixture_data
from .plan import (
    ANALYSIS_SOURCES,
    REPO_ROOT,
    RESULT_FORMAT,
    Stage,
    StudyPaths,
    StudyPreset,
    get_preset,
    log,
    machine_info,
    now_iso,
    plan_stages,
    pretrain_stage_names,
    read_json,
    select_stages,
    write_json,
)
from .report import render_results_md, study_summary
from .results import build_results
from .stats import aggregate_runs, efficiency_summary
from .subsets import spread_refs, subset_dataset, validation_subset

# ============================================================================ the study

class _Display:
    """Stage-level progress lines on stderr plus the log file."""

    def __init__(self, total: int, quiet: bool):
        self.total, self.quiet, self.t0, self.i = total, quiet, time.time(), 0

    def start(self, st: Stage) -> None:
        self.i += 1
        msg = f"[{self.i}/{self.total}] {st.name}: running (estimate {st.est_min:.1f} min, elapsed " \
              f"{(time.time() - self.t0) / 60:.1f} min)"
        log.info(msg)
        if not self.quiet:
            print(msg, file=sys.stderr, flush=True)

    def skip(self, st: Stage, why: str) -> None:
        self.i += 1
        log.info(f"[{self.i}/{self.total}] {st.name}: skipped ({why})")
        if not self.quiet:
            print(f"[{self.i}/{self.total}] {st.name}: skipped ({why})", file=sys.stderr, flush=True)

    def done(self, st: Stage, cost: Mapping[str, Any]) -> None:
        msg = f"    {st.name}: done in {cost['wall_s']:.1f} s, {cost['steps']} steps, " \
              f"{cost['tokens']} tokens, peak RSS {cost['peak_rss_mb']} MiB"
        log.info(msg)
        if not self.quiet:
            print(msg, file=sys.stderr, flush=True)


@dataclass
class _Chunk:
    """One pre-training chunk's plan (``Study._chunk_plan``); ``ck_step`` / ``ledger`` change
    when a fresh first chunk clears the run, ``resumed_within`` is set by ``_train_chunk``."""

    strategy: str
    k: int
    n: int
    encoder: str
    seed: int
    settings: dict[str, Any]
    run_dir: Path
    target: int
    prev_target: int
    ledger: dict[str, Any]
    ckpt: Path
    ck_step: int | None
    resumed_within: bool = False


class Study:
    """Runs the stages of one preset (see the module docstring)."""

    def __init__(self, preset: StudyPreset | str, paths: StudyPaths | None = None, *, quiet: bool = False,
                 device: str | None = None):
        self.preset = get_preset(preset)
        self.paths = paths or StudyPaths.make()
        self.quiet = quiet
        self.device = device or self.preset.device
        self.stages = plan_stages(self.preset)
        self._cache: dict[str, Any] = {}
        self.executed: list[str] = []

    # ------------------------------------------------------------------ data
    @property
    def data_root(self) -> Path:
        if self.paths.data_root is not None:
            return self.paths.data_root
        if self.preset.fixture_data:
            root = self.paths.runs_dir / "fixture_data"
            if not (root / "FIXTURE.txt").is_file():
                make_fixture_data(root)
            return root
        from ..corpora import data_root

        return data_root()

    def tokenizer(self):
        if "tok" not in self._cache:
            from ..datasets import make_tokenizer

            self._cache["tok"] = make_tokenizer("velocity", max_len=self.preset.max_len)
        return self._cache["tok"]

    def token_cache(self):
        from ..datasets import TokenCache, cache_dir

        d = self.paths.cache_dir or (self.paths.runs_dir / "token_cache" if self.preset.fixture_data else cache_dir())
        return TokenCache(d)

    def task_data(self, task: str):
        """``BuiltTask`` of ``task`` (pretrain or a fine-tuning task), built once per process."""
        key = f"task:{task}"
        if key not in self._cache:
            from ..corpora import build_task
            from ..datasets import build_datasets

            root = self.data_root
            if not root.is_dir():
                raise SMUInputError(root, "data root not found (pass --data-root or set SMU_DATA_ROOT)")
            t = build_task(task, root, seed=0, asap_source=self.preset.asap_source)
            limit = self.preset.pretrain_limit if task == "pretrain" else self.preset.ft_limit
            self._cache[key] = build_datasets(t, self.tokenizer(), self.token_cache(),
                                              augment_train=task == "pretrain", seed=self.preset.pretrain_seed,
                                              progress=not self.quiet, limit=limit)
        return self._cache[key]

    def model_config(self):
        from ..model import ModelConfig

        tok = self.tokenizer()
        return ModelConfig(vocab_sizes=list(tok.vocab_sizes), attributes=list(tok.attributes),
                           max_len=self.preset.max_len, **self.preset.model)

    def pretrain_dir(self, encoder: str) -> Path:
        """The run folder of one encoder (``Encoder.name``; the strategy's name with one seed)."""
        return self.paths.runs_dir / "pretrain" / encoder

    @property
    def bf16(self) -> bool:
        if self.preset.bf16 == "auto":
            from ..precision import fast_precision

            return fast_precision(self.device if self.device != "auto" else "cpu") == "bf16"
        return bool(self.preset.bf16)

    # ------------------------------------------------------------------ status
    def is_done(self, st: Stage) -> bool:
        res = self.paths.result(st.name)
        if st.kind != "report":
            return res.is_file()
        if not res.is_file():
            return False
        t = res.stat().st_mtime
        return all(not self.paths.result(o.name).is_file() or self.paths.result(o.name).stat().st_mtime <= t
                   for o in self.stages if o.kind != "report")

    def check_results_dir(self) -> None:
        """Refuse to mix presets: every existing result of this plan, and the runs folder
        (its ``PRESET`` file), must come from this preset."""
        mark = self.paths.runs_dir / "PRESET"
        if mark.is_file() and mark.read_text().strip() != self.preset.name:
            raise SMUInputError(mark, f"the runs folder belongs to preset {mark.read_text().strip()!r}, not "
                                      f"{self.preset.name!r}; use another --runs-dir")
        for st in self.stages:
            f = self.paths.result(st.name)
            if f.is_file():
                other = read_json(f).get("preset")
                if other != self.preset.name:
                    raise SMUInputError(f, f"holds a result of preset {other!r}, not {self.preset.name!r}; "
                                           "use another --results-dir (and --runs-dir) or delete those results")

    def status(self) -> list[dict[str, Any]]:
        return [{"stage": s.name, "kind": s.kind, "done": self.is_done(s), "est_min": s.est_min,
                 "result": str(self.paths.result(s.name))} for s in self.stages]

    # ------------------------------------------------------------------ run
    def run(self, only: Sequence[str] | None = None) -> list[str]:
        """Run every unfinished selected stage in order; returns the names executed."""
        chosen = select_stages(self.stages, only)
        self.check_results_dir()
        self.paths.runs_dir.mkdir(parents=True, exist_ok=True)
        (self.paths.runs_dir / "PRESET").write_text(self.preset.name + "\n")
        handler = logging.FileHandler(self.paths.runs_dir / "study.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        disp = _Display(len(chosen), self.quiet)
        log.info(f"study preset {self.preset.name}: runs {self.paths.runs_dir}, results {self.paths.results_dir}")
        try:
            for st in chosen:
                if self.is_done(st):
                    disp.skip(st, "result exists")
                    continue
                missing = [d for d in st.deps if not self.paths.result(d).is_file()]
                if missing:
                    raise SMUInputError(self.paths.result(missing[0]),
                                        f"stage {st.name} needs {missing} first (run without --only, "
                                        f"or with --only {missing[0]})")
                disp.start(st)
                started = now_iso()
                try:
                    with CostMeter() as meter:
                        result = getattr(self, f"_run_{st.kind}")(st, meter)
                except BaseException as e:
                    log.error(f"    {st.name}: {type(e).__name__}: {e} (re-run to resume)")
                    raise
                cost = meter.to_dict()
                doc = {"format": RESULT_FORMAT, "stage": st.name, "kind": st.kind, "preset": self.preset.name,
                       "started": started, "finished": now_iso(), "cost": cost, "machine": machine_info(),
                       "result": result}
                write_json(self.paths.result(st.name), doc)
                marker = self.paths.runs_dir / "stages" / st.name / "STARTED"
                if marker.exists():
                    marker.unlink()
                self.executed.append(st.name)
                disp.done(st, cost)
        finally:
            log.removeHandler(handler)
            handler.close()
        return list(self.executed)

    def _stage_dir(self, st: Stage) -> Path:
        """The stage's run folder; cleared when the stage starts fresh (no STARTED marker)."""
        d = self.paths.runs_dir / "stages" / st.name
        marker = d / "STARTED"
        if not marker.exists():
            if d.exists():
                shutil.rmtree(d)
            d.mkdir(parents=True)
            marker.write_text(now_iso() + "\n")
        return d

    # ------------------------------------------------------------------ stage: data
    def _run_data(self, st: Stage, meter: CostMeter) -> dict[str, Any]:
        tok = self.tokenizer()
        out: dict[str, Any] = {"data_root": str(self.data_root), "tokenizer": tok.config.to_dict(),
                               "attributes": list(tok.attributes), "vocab_sizes": list(tok.vocab_sizes),
                               "tasks": {}}
        for task in ("pretrain",) + tuple(self.preset.tasks):
            built = self.task_data(task)
            out["tasks"][task] = {"classes": built.task.classes, "level": built.task.level,
                                  "split_info": built.task.split_info, "splits": built.summary(),
                                  "skipped": [{"path": p, "reason": r} for p, r in built.skipped]}
        return out

    # ------------------------------------------------------------------ stage: pretrain
    def _pretrain_config(self, run_dir: Path, seed: int):
        from ..train_config import TrainConfig

        p = self.preset
        return TrainConfig(steps=p.pretrain_steps, batch_size=p.pretrain_batch, eval_batch_size=p.eval_batch,
                           lr=p.pretrain_lr, warmup_steps=p.pretrain_warmup, schedule="cosine", min_lr_ratio=0.1,
                           seed=seed, device=self.device, bf16=self.bf16,
                           checkpoint_every=max(1, p.pretrain_steps // max(4 * p.pretrain_chunks, 1)),
                           eval_every=p.pretrain_eval_every, eval_batches=p.pretrain_eval_batches,
                           log_every=max(1, min(50, p.pretrain_steps // 20)), out_dir=str(run_dir))

    def _run_pretrain(self, st: Stage, meter: CostMeter) -> dict[str, Any]:
        """One chunk of one encoder's pre-training: plan it, resume or start it, train it to
        the chunk's target step, record it (the last chunk also measures the encoder)."""
        c = self._chunk_plan(st)
        rec = c.ledger["chunks"].get(str(c.k))
        if rec is not None and c.ck_step is not None and c.ck_step >= c.target:
            # this chunk's training is already in the checkpoint (its result was deleted): re-derive it
            return dict(rec, reused=True, note="training of this chunk already in the run's checkpoint; "
                                               "result re-derived from the run's ledger")
        self._prepare_chunk(st, c)
        model, trainer, strategy, counter, res, events = self._train_chunk(st, c)
        meter.add(counter.tokens, counter.steps)
        rec = self._chunk_record(c, trainer, strategy, counter, res, events)
        if c.k == c.n:
            rec.update(self._final_measures(model, c, counter, trainer, rec["wall_s"]))
        c.ledger["chunks"][str(c.k)] = rec
        write_json(c.run_dir / "ledger.json", c.ledger)
        return rec

    def _chunk_plan(self, st: Stage) -> _Chunk:
        """Where the chunk stands: its encoder, steps, ledger and the run's checkpoint step."""
        from ..resume import CHECKPOINT_NAME, load_train_state

        p = self.preset
        strat, k, n = st.param("strategy"), st.param("chunk"), st.param("chunks")
        enc_name = st.param("encoder", strat)
        run_dir = self.pretrain_dir(enc_name)
        ledger_path = run_dir / "ledger.json"
        ckpt = run_dir / CHECKPOINT_NAME
        return _Chunk(strategy=strat, k=k, n=n, encoder=enc_name, seed=int(st.param("seed", p.pretrain_seed)),
                      settings=dict(st.param("settings", ()) or ()), run_dir=run_dir,
                      target=int(round(k * p.pretrain_steps / n)), prev_target=int(round((k - 1) * p.pretrain_steps / n)),
                      ledger=read_json(ledger_path) if ledger_path.is_file() else {"chunks": {}}, ckpt=ckpt,
                      ck_step=int(load_train_state(ckpt)["step"]) if ckpt.is_file() else None)

    def _prepare_chunk(self, st: Stage, c: _Chunk) -> None:
        """A first chunk started fresh clears the run folder; a later chunk needs the previous
        chunk's checkpoint. The stage's STARTED marker tells an interrupted stage (resume)
        from a fresh one."""
        marker = self.paths.runs_dir / "stages" / st.name / "STARTED"
        resuming = marker.exists()
        self._stage_dir(st)
        if c.k == 1:
            if not (resuming and c.ck_step is not None):
                if c.run_dir.exists():
                    shutil.rmtree(c.run_dir)
                c.ck_step, c.ledger = None, {"chunks": {}}
        elif c.ck_step is None or c.ck_step < c.prev_target:
            raise SMUInputError(c.ckpt, f"{st.name} resumes the run at step {c.prev_target}, but the checkpoint "
                                        f"is at {c.ck_step}; run "
                                        f"{pretrain_stage_names(self.preset, c.encoder)[c.k - 2]} first")

    def _train_chunk(self, st: Stage, c: _Chunk):
        """Build the encoder, strategy and trainer; train to the chunk's target (or reload the
        checkpoint that already got there). Returns (model, trainer, strategy, counter,
        fit result, freeze events or None)."""
        import torch

        from ..callbacks import ProgressFile, TqdmProgress
        from ..checkpoint import load_model
        from ..errors import SMUTrainingError
        from ..masker import make_strategy
        from ..model import MidiBert
        from ..resume import load_train_state
        from ..trainer import Trainer, install_stop_signals

        p = self.preset
        built = self.task_data("pretrain")
        train, val = built.datasets["train"], built.datasets["val"]
        torch.manual_seed(c.seed)
        model = MidiBert(self.model_config())
        strategy = make_strategy(c.strategy, **{"ratio": p.mask_ratio, "seed": c.seed,
                                                "freeze_every": p.freeze_every, "freeze_top": p.freeze_top,
                                                "unfreeze_frac": p.unfreeze_frac, **c.settings})
        counter = TokenCounter(c.run_dir / f"counts_chunk{c.k}.json")
        c.resumed_within = (c.ck_step is not None and c.prev_target < c.ck_step < c.target
                            and counter.load(c.ck_step))
        cbs = [ProgressFile(c.run_dir / "progress.jsonl"), counter, StopAtStep(c.target)]
        if c.strategy == "adversarial":
            cbs.append(FreezeSnapshots(c.run_dir / "freeze_snapshots"))
        if not self.quiet:
            cbs.append(TqdmProgress())
        trainer = Trainer(model, strategy, train, val if len(val) else None,
                          self._pretrain_config(c.run_dir, c.seed), cbs)
        trainer.save_extra = {"tokenizer": self.tokenizer().config.to_dict(),
                              "strategy": strategy.config.to_dict() if hasattr(strategy, "config") else c.strategy,
                              "study": {"preset": p.name, "strategy": c.strategy, "encoder": c.encoder,
                                        "seed": c.seed}}
        if c.ck_step is not None and c.ck_step >= c.target:
            # trained to the chunk's end before (stopped after its final checkpoint, before its
            # result was written): nothing to train; the counts were saved with that checkpoint
            counter.load(c.ck_step)
            state = load_train_state(c.ckpt)
            model = load_model(c.run_dir)  # the weights saved with that checkpoint
            trainer.step, trainer.epoch = int(state["step"]), int(state["epoch"])
            res = {"status": "done", "message": f"already trained to step {c.ck_step} (checkpoint)",
                   "metrics": dict(state.get("last_metrics") or {})}
            events = [load_freeze_snapshot(f)["stats"]
                      for f in sorted((c.run_dir / "freeze_snapshots").glob(SNAPSHOT_GLOB))]
            return model, trainer, strategy, counter, res, events
        try:  # SIGTERM / Ctrl-C: checkpoint, then stop (only possible in the main thread)
            restore = install_stop_signals(trainer)
        except ValueError:
            restore = (lambda: None)
        try:
            res = trainer.fit(resume=c.ck_step is not None and c.ck_step > 0)
        finally:
            restore()
        if res["status"] != "done":
            raise SMUTrainingError(f"{st.name} stopped at step {trainer.step} ({res['message']}); the "
                                   f"checkpoint in {c.run_dir} is kept: run the study again to resume")
        return model, trainer, strategy, counter, res, None

    @staticmethod
    def _chunk_record(c: _Chunk, trainer, strategy, counter: TokenCounter, res: Mapping[str, Any],
                      events: list | None) -> dict[str, Any]:
        """The chunk's result (and ledger entry)."""
        return {"strategy": c.strategy, "encoder": c.encoder, "seed": c.seed, "settings": c.settings,
                "chunk": c.k, "chunks": c.n, "from_step": c.prev_target, "to_step": trainer.step,
                "target_step": c.target, "steps": counter.steps, "tokens": counter.tokens,
                "wall_s": counter.wall_s,  # includes the time before an interruption of this chunk, if resumed
                "resumed_within_chunk_at": c.ck_step if c.resumed_within else None,
                "epoch": trainer.epoch, "status": res["status"], "message": res["message"],
                "val_metrics": res["metrics"], "run_dir": str(c.run_dir),
                "freeze_events": events if events is not None else
                list(getattr(getattr(strategy, "freeze_book", None), "history", []) or [])}

    def _final_measures(self, model, c: _Chunk, counter: TokenCounter, trainer, wall: float) -> dict[str, Any]:
        """After the last chunk: parameters, recovery accuracy beside the no-model rules on the
        same masked notes (docs/METHOD.md 9), and the run's totals over its chunks."""
        from ..baselines import beats_rules, corpus_leads, lead_record, rule_stats
        from ..explain import recovery_with_tokens

        p = self.preset
        built = self.task_data("pretrain")
        train, val = built.datasets["train"], built.datasets["val"]
        out: dict[str, Any] = {"n_params": int(sum(q.numel() for q in model.parameters()))}
        out["recovery_accuracy"], out["rules"], out["beats_rules"] = {}, {}, {}
        if len(val):
            acc, notes = recovery_with_tokens(model, val, ratio=p.mask_ratio, seed=0, batch_size=p.eval_batch)
            # (most frequent value: counted on the evaluated windows themselves)
            stats = rule_stats(val, ratio=p.mask_ratio, seed=0, batch_size=p.eval_batch, keep_tokens=True)
            lead = corpus_leads(notes, stats["tokens"], list(acc))
            out.update(recovery_accuracy=acc, rules=stats["rules"], beats_rules=beats_rules(acc, stats["rules"]),
                       lead_interval=lead_record(lead))
        prev = [c.ledger["chunks"][k] for k in sorted(c.ledger["chunks"], key=int) if int(k) < c.k]
        out["total"] = {"steps": sum(x["steps"] for x in prev) + counter.steps,
                        "tokens": sum(x["tokens"] for x in prev) + counter.tokens,
                        "wall_s": sum(x["wall_s"] for x in prev) + wall,
                        "epochs": trainer.step / max(trainer.batches_per_epoch, 1),
                        "train_windows": len(train), "batches_per_epoch": trainer.batches_per_epoch}
        return out

    # ------------------------------------------------------------------ fine-tuning
    def _encoder_model(self, task: str, classes: Sequence[str], encoder: str, seed: int):
        """The fine-tuning model: a pre-trained encoder (``finetune.build_model``) or, for
        ``none``, a fresh encoder of the study's size (build_model only knows named sizes)."""
        import torch

        from ..finetune import build_model
        from ..heads import FineTuneModel
        from ..model import MidiBert

        if encoder == "none":
            torch.manual_seed(seed)
            enc = MidiBert(self.model_config())
            torch.manual_seed(seed + 1)
            return FineTuneModel(enc, task, classes, info={"pretrained": None})
        return build_model(task, classes, pretrained=self.pretrain_dir(encoder), seed=seed)

    def _ft_train_config(self, steps: int, eval_every: int, bs: int, seed: int, out: Path):
        from ..train_config import TrainConfig

        p = self.preset
        return TrainConfig(steps=steps, batch_size=bs, eval_batch_size=p.eval_batch, lr=p.ft_lr,
                           warmup_steps=min(p.ft_warmup, max(0, steps // 10)), schedule="linear", seed=seed,
                           device=self.device, bf16=self.bf16, checkpoint_every=0, eval_every=eval_every,
                           eval_batches=p.ft_eval_batches, log_every=max(1, steps // 10), out_dir=str(out))

    def ft_budget(self, task: str) -> tuple[int, int]:
        """(steps, eval_every) of the task's fine-tuning runs: the preset's, or with learning
        curves the budget read off ``curve-<task>`` (evaluations every budget / 5 steps)."""
        p = self.preset
        if not p.curve_steps:
            return p.ft_steps, p.ft_eval_every
        steps = int(read_json(self.paths.result(f"curve-{task}"))["result"]["budget_steps"])
        return steps, max(1, min(p.ft_eval_every, steps // 5))

    def finetune_run(self, task: str, model_name: str, mask_ft: bool, seed: int, fraction: float,
                     stage_dir: Path) -> dict[str, Any]:
        """One fine-tuning run (cached in ``stage_dir`` while the stage is in progress).
        ``model_name``: an encoder name (``Encoder.name``) or ``none``."""
        from ..finetune import finetune

        p = self.preset
        name = f"{model_name}-mask{'on' if mask_ft else 'off'}-s{seed}-f{int(round(fraction * 100)):03d}"
        run_dir = stage_dir / name
        done = run_dir / "study_run.json"
        if done.is_file():  # finished before the stage was interrupted
            return {**read_json(done), "earlier_sitting": True}
        built = self.task_data(task)
        train = subset_dataset(built.datasets["train"], fraction, seed)
        classes = built.task.classes
        model = self._encoder_model(task, classes, model_name, seed)
        bs = max(1, min(p.ft_batch, len(train)))
        steps, eval_every = self.ft_budget(task)
        cfg = self._ft_train_config(steps, eval_every, bs, seed, run_dir / "train")
        counter = TokenCounter()
        t0 = time.perf_counter()
        val = validation_subset(built.datasets["val"], p.ft_val_windows)
        res = finetune(task, model, train, val, cfg, test_set=built.datasets["test"],
                       mask_ratio=p.mask_ratio if mask_ft else 0.0, eval_mask=False, patience=p.ft_patience,
                       callbacks=[counter], out_dir=run_dir)
        wall = time.perf_counter() - t0
        test = res.get("test", {})
        enc = p.encoder(model_name) if model_name != "none" else None
        rec = {"task": task, "model": enc.strategy if enc else "none", "encoder": model_name,
               "pretrain_seed": enc.seed if enc else None, "mask_ft": bool(mask_ft), "seed": int(seed),
               "fraction": float(fraction), "n_train_pieces": len(train.pieces), "n_train_windows": len(train),
               "n_val_pieces": len(val.pieces), "n_val_windows": len(val),
               "batch_size": bs, "budget_steps": steps, "steps": counter.steps, "tokens": counter.tokens,
               "wall_s": wall, "best_step": res.get("best_step"), "stopped": res.get("stopped"),
               "val_acc": res["val"]["acc"], "val_macro_f1": res["val"]["macro_f1"],
               "test_acc": test.get("acc"), "test_macro_f1": test.get("macro_f1"),
               "test_confusion": test.get("confusion"), "test_n": test.get("n"),
               "test_unit": test.get("unit")}
        if not p.keep_finetuned:
            shutil.rmtree(run_dir / "train", ignore_errors=True)
            (run_dir / "model.safetensors").unlink(missing_ok=True)
        write_json(done, rec)
        return rec

    def _runs(self, st: Stage, meter: CostMeter, specs: Sequence[tuple[str, bool, int, float]]
              ) -> list[dict[str, Any]]:
        task = st.param("task")
        stage_dir = self._stage_dir(st)
        bar = None
        if not self.quiet:
            from tqdm import tqdm

            bar = tqdm(total=len(specs), desc=st.name, unit="run", file=sys.stderr)
        runs = []
        try:
            for model_name, mask, seed, frac in specs:
                r = self.finetune_run(task, model_name, mask, seed, frac, stage_dir)
                if r.get("earlier_sitting"):
                    meter.resumed_runs += 1
                    meter.resumed_wall_s += float(r["wall_s"])
                meter.add(r["tokens"], r["steps"])
                runs.append(r)
                log.info(f"    {st.name} {model_name} mask={mask} seed={seed} fraction={frac}: "
                         f"test acc {r['test_acc']}, {r['wall_s']:.1f} s")
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(last=f"{model_name}/{'m' if mask else '-'}/s{seed}: {r['test_acc'] or 0:.3f}")
        finally:
            if bar is not None:
                bar.close()
        return runs

    def _majority(self, task: str, split: str = "test") -> dict[str, Any]:
        """The majority-class rate of the task's ``split``, in the scoring unit."""
        from ..heads import task_spec
        from ..probe import majority_rate

        built = self.task_data(task)
        return majority_rate(built.datasets[split], task_spec(task).level, len(built.task.classes))

    def _run_finetune(self, st: Stage, meter: CostMeter) -> dict[str, Any]:
        p = self.preset
        encoders = [e.name for e in p.encoders() if not e.variant] + ["none"]
        specs = [(m, mk, s, 1.0) for m in encoders for mk in p.mask_modes for s in p.seeds]
        runs = self._runs(st, meter, specs)
        built = self.task_data(st.param("task"))
        steps, eval_every = self.ft_budget(st.param("task"))
        return {"task": st.param("task"), "classes": built.task.classes, "split_info": built.task.split_info,
                "budget_steps": steps, "eval_every": eval_every, "majority": self._majority(st.param("task")),
                "runs": runs, "rows": aggregate_runs(runs)}

    def _run_curve(self, st: Stage, meter: CostMeter) -> dict[str, Any]:
        """Learning curves: one long fine-tuning run per curve model (seed 0, mask fine-tuning
        on, no early stopping), validation accuracy every ``curve_eval_every`` steps. The
        budget: the first evaluated step within ``curve_tol`` of the curve's best, the
        latest over the models, plus one evaluation interval."""
        from ..callbacks import Callback
        from ..finetune import finetune

        class _Curve(Callback):
            def __init__(self):
                self.points: list[dict[str, float]] = []

            def on_eval(self, trainer, metrics):
                self.points.append({"step": int(trainer.step), "val_acc": float(metrics.get("val_acc", "nan")),
                                    "val_loss": float(metrics.get("val_loss", "nan"))})

        p = self.preset
        task = st.param("task")
        stage_dir = self._stage_dir(st)
        built = self.task_data(task)
        val = validation_subset(built.datasets["val"], p.ft_val_windows)
        train = built.datasets["train"]
        curves, plateaus = {}, {}
        for m in p.curve_models:
            enc = "none" if m == "none" else p.main_encoder(m)
            done = stage_dir / f"{enc}.json"
            if done.is_file():
                rec = read_json(done)
            else:
                model = self._encoder_model(task, built.task.classes, enc, 0)
                bs = max(1, min(p.ft_batch, len(train)))
                cfg = self._ft_train_config(p.curve_steps, p.curve_eval_every, bs, 0, stage_dir / enc / "train")
                curve, counter = _Curve(), TokenCounter()
                t0 = time.perf_counter()
                finetune(task, model, train, val, cfg, test_set=None, mask_ratio=p.mask_ratio, eval_mask=False,
                         patience=10**9, callbacks=[curve, counter], out_dir=stage_dir / enc)
                shutil.rmtree(stage_dir / enc, ignore_errors=True)
                rec = {"model": m, "encoder": enc, "points": curve.points, "steps": counter.steps,
                       "tokens": counter.tokens, "wall_s": time.perf_counter() - t0,
                       "epochs": counter.steps * bs / max(len(train), 1)}
                write_json(done, rec)
            meter.add(rec["tokens"], rec["steps"])
            pts = [q for q in rec["points"] if math.isfinite(q["val_acc"])]
            best = max((q["val_acc"] for q in pts), default=float("nan"))
            plateaus[m] = next((q["step"] for q in pts if q["val_acc"] >= best - p.curve_tol), p.curve_steps)
            curves[m] = {**rec, "best_val_acc": best, "plateau_step": plateaus[m]}
        budget = min(p.curve_steps, max(plateaus.values(), default=p.curve_steps) + p.curve_eval_every)
        return {"task": task, "curves": curves, "budget_steps": int(budget), "tol": p.curve_tol,
                "rule": f"first evaluation within {p.curve_tol:.0%} of the curve's best validation accuracy, "
                        f"latest over {list(p.curve_models)}, plus {p.curve_eval_every} steps",
                "n_val_windows": len(val), "majority_val": self._majority(task, "val")}

    def _run_probe(self, st: Stage, meter: CostMeter) -> dict[str, Any]:
        """A linear probe per frozen encoder (every encoder, variants included, and a randomly
        initialised encoder as the control), on the task's full train/val/test splits."""
        import torch

        from ..checkpoint import load_model
        from ..heads import task_spec
        from ..model import MidiBert
        from ..probe import linear_probe

        p = self.preset
        task = st.param("task")
        stage_dir = self._stage_dir(st)
        built = self.task_data(task)
        level = task_spec(task).level
        ds = built.datasets
        out = {}
        for enc in [e.name for e in p.encoders()] + ["none"]:
            done = stage_dir / f"{enc}.json"
            if done.is_file():
                out[enc] = read_json(done)
                continue
            if enc == "none":
                torch.manual_seed(0)
                model = MidiBert(self.model_config())
            else:
                model = load_model(self.pretrain_dir(enc))
            t0 = time.perf_counter()
            res = linear_probe(model, ds["train"], ds["val"], ds["test"], built.task.classes, level,
                               max_train_rows=p.probe_max_rows, batch_size=p.eval_batch, seed=0)
            rec = {"encoder": enc, "model": p.encoder(enc).strategy if enc != "none" else "none",
                   "l2": res["l2"], "by_l2": res["by_l2"], "n_train_rows": res["n_train_rows"],
                   "val_acc": res["val"]["acc"], "val_macro_f1": res["val"]["macro_f1"],
                   "test_acc": res["test"]["acc"], "test_macro_f1": res["test"]["macro_f1"],
                   "test_unit": res["test"].get("unit"), "test_n": res["test"].get("n"),
                   "wall_s": time.perf_counter() - t0}
            write_json(done, rec)
            out[enc] = rec
        return {"task": task, "probes": out, "majority": self._majority(task)}

    def _run_efficiency(self, st: Stage, meter: CostMeter) -> dict[str, Any]:
        """Fractions of the labelled data, on the first pre-training seed's encoders."""
        p = self.preset
        task = st.param("task")
        enc = {m: ("none" if m == "none" else p.main_encoder(m)) for m in p.efficiency_models}
        specs = [(enc[m], True, s, f) for m in p.efficiency_models for f in p.fractions if f < 1.0 for s in p.seeds]
        runs = self._runs(st, meter, specs)
        full = [r for r in read_json(self.paths.result(f"finetune-{task}"))["result"]["runs"]
                if r["mask_ft"] and r["model"] in p.efficiency_models and r.get("encoder", r["model"]) in enc.values()
                and r["seed"] in p.seeds]
        return {"task": task, "runs": runs, "full_data_runs_from": f"finetune-{task}",
                **efficiency_summary(runs + full, p.efficiency_models)}

    # ------------------------------------------------------------------ analysis
    def _run_analysis(self, st: Stage, meter: CostMeter) -> dict[str, Any]:
        from ..checkpoint import load_model
        from ..corpora import build_task

        p = self.preset
        tok = self.tokenizer()
        adv_name, rnd_name = p.main_encoder("adversarial"), p.main_encoder("random")
        adv = load_model(self.pretrain_dir(adv_name)).eval()
        rnd = load_model(self.pretrain_dir(rnd_name)).eval()
        pieces = []
        for source, task in ANALYSIS_SOURCES:
            if task in p.tasks:
                refs = build_task(task, self.data_root, seed=0, asap_source=p.asap_source).splits["val"]
                pieces.append((source, spread_refs(refs, p.analysis_pieces)))
        # the freeze history: the first adversarial encoder that froze (with the paper's cadence
        # a short run has no freeze event; the ablation variant has)
        snaps, frozen_by = [], None
        for e in p.encoders():
            found = sorted((self.pretrain_dir(e.name) / "freeze_snapshots").glob(SNAPSHOT_GLOB))
            if e.strategy == "adversarial" and found:
                snaps, frozen_by = found, e.name
                break
        snapshots = [load_freeze_snapshot(s) for s in snaps]
        pre_refs = {r.name: r for r in build_task("pretrain", self.data_root, seed=0,
                                                  asap_source=p.asap_source).splits["train"]}
        out = masker_analysis(adv, rnd, tok, pieces, snapshots=snapshots, pretrain_refs=pre_refs,
                              ratio=p.mask_ratio, freeze_top=p.freeze_top, n_examples=p.analysis_examples)
        out.update({"adversarial_encoder": adv_name, "random_encoder": rnd_name, "freeze_snapshots_of": frozen_by,
                    "step_cost": self._step_cost()})
        return out

    def _step_cost(self, rounds: int = 5) -> dict[str, Any]:
        """What a pre-training step of each strategy costs, measured side by side (the stages'
        wall times depend on what else the machine ran): the study's model, a batch of its
        pre-training windows, the strategies with the study's settings (freezing off: the freeze
        book changes which notes are picked, not the work), its bf16 setting."""
        import torch

        from ..datasets import collate
        from ..distributed import resolve_device
        from ..masker import make_strategy
        from ..model import MidiBert
        from ..trainer import step_seconds

        p = self.preset
        train = self.task_data("pretrain").datasets["train"]
        n = max(1, min(p.pretrain_batch, len(train)))
        batch = collate([train[i] for i in range(n)])
        batch["sample_index"] = torch.arange(n)
        torch.manual_seed(0)
        model = MidiBert(self.model_config()).to(resolve_device(self.device))
        strategies = {s: make_strategy(s, **{"ratio": p.mask_ratio, "seed": 0, **p.strategy_settings.get(s, {}),
                                             "freeze": False})
                      for s in p.strategies}
        times = step_seconds(model, strategies, batch, rounds=rounds, warmup=1, steps=2, bf16=self.bf16)
        best = {s: min(t) for s, t in times.items()}
        out: dict[str, Any] = {"step_s": {s: round(v, 4) for s, v in best.items()},
                               "step_s_all": {s: [round(x, 4) for x in t] for s, t in times.items()},
                               "batch": n, "max_len": p.max_len, "bf16": self.bf16, "rounds": rounds,
                               "how": "interleaved rounds, best round per strategy"}
        if "random" in best and best["random"] > 0:
            out["over_random"] = {s: round(v / best["random"], 3) for s, v in best.items()}
        return out

    # ------------------------------------------------------------------ report
    def _run_report(self, st: Stage, meter: CostMeter) -> dict[str, Any]:
        results = build_results(self.paths, self.preset, self.stages)
        figures = {f"masker_{name}": fig for name, fig in analysis_figures(results.get("analysis", {})).items()}
        if results.get("efficiency"):
            figures = {"data_efficiency": data_efficiency_figure(results["efficiency"]), **figures}
        saved = save_figures(figures, self.paths.results_dir)
        results["figures"] = {"data_efficiency": [], **{n: [_rel(f) for f in ps] for n, ps in saved.items()}}
        figs = [str(f) for ps in saved.values() for f in ps]
        results["summary"] = study_summary(results)
        write_json(self.paths.results_dir / "results.json", results)
        atomic_write_text(self.paths.results_md, render_results_md(results))
        return {"results": str(self.paths.results_dir / "results.json"), "results_md": str(self.paths.results_md),
                "figures": figs, "summary": results["summary"]}


def _rel(path: str | Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
