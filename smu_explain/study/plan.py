"""The study's plan: constants, presets, stages, paths and result files (no torch)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import math
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SMUInputError
from ..io import atomic_write_text
from ..names import FINETUNE_TASKS, STRATEGIES

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULT_FORMAT = "smu_explain.study/1"
#: The study's fine-tuning tasks: every fine-tuning task except a user's own folder.
FT_TASKS = tuple(t for t in FINETUNE_TASKS if t != "folder")
DEFAULT_FRACTIONS = (0.1, 0.25, 0.5, 1.0)
#: Datasets of the masker analysis: (name, task whose validation split is used).
ANALYSIS_SOURCES = (("pop909", "melody"), ("asap", "composer"), ("emopia", "emotion"))

# Published test accuracies (%), docs/METHOD.md section 8. Columns: our task names.
PUBLISHED = {
    "paper (Zhao 2025, Table 3; 12 x 768, 115M params, Octuple)": {
        "MidiBERT": {"composer": 79.07, "emotion": 67.59, "velocity": 44.88, "melody": 92.53},
        "MusicBERT": {"composer": 86.05, "emotion": 71.06, "velocity": 38.79, "melody": 92.47},
        "Adversarial-MidiBERT": {"composer": 97.92, "emotion": 79.46, "velocity": 45.58, "melody": 92.68},
        "  without mask fine-tuning": {"composer": 65.98, "emotion": 70.53, "velocity": 45.30, "melody": 92.55},
        "  without the adversary (random masks)": {"composer": 88.91, "emotion": 74.07, "velocity": 45.44,
                                                   "melody": 92.64},
        "no pre-training": {"composer": 79.76, "emotion": 68.75, "velocity": 38.70, "melody": 87.98},
    },
    "MidiBERT-Piano (Chou et al. 2021; CP, POP909 velocity)": {
        "MidiBERT": {"composer": 78.57, "emotion": 67.89, "velocity": 51.63, "melody": 96.37},
    },
}
#: Which published row each of our rows stands beside (model, mask fine-tuning).
PUBLISHED_MATCH = {
    ("adversarial", True): "Adversarial-MidiBERT",
    ("adversarial", False): "  without mask fine-tuning",
    ("random", True): "  without the adversary (random masks)",
    ("none", True): "no pre-training",
}

log = logging.getLogger("smu_explain.study")


# ============================================================================ presets

@dataclass
class StudyPreset:
    """Every size and budget knob of the study (JSON round-trippable via ``to_dict``).

    ``model`` = ``ModelConfig`` fields (d_model, n_layers, n_heads, d_ff, emb_dim, dropout);
    ``max_len`` = window length of the tokenizer and the model. ``pretrain_chunks``
    splits each pre-training run into that many stages. ``freeze_every`` is in epochs.
    ``est_minutes`` = estimated minutes per stage of each kind (``pretrain-<strategy>``
    overrides ``pretrain`` for one strategy's chunks) on the preset's target machine;
    ``notes`` = what the preset trims, printed in RESULTS.md.

    Version 2 knobs (issue 14): ``pretrain_seeds`` (one encoder per strategy and seed;
    default: ``pretrain_seed`` alone), ``strategy_settings`` (``StrategyConfig`` fields per
    strategy, e.g. the adversarial ``explore``), ``variants`` (extra encoders for ablations:
    name -> ``{"strategy": ..., **settings}``, first pre-training seed, not fine-tuned),
    ``curve_steps`` > 0 (a fine-tuning learning curve per task on ``curve_models``; the
    fine-tuning budget is then read off the curves), ``probe`` (a linear probe per task on
    every frozen encoder) and ``bf16`` ``"auto"`` (bf16 where the CPU has bf16 kernels).
    """

    name: str
    model: dict[str, Any]
    max_len: int
    strategies: tuple[str, ...] = STRATEGIES
    pretrain_steps: int = 1000
    pretrain_batch: int = 16
    pretrain_chunks: int = 1
    pretrain_lr: float = 5e-4
    pretrain_warmup: int = 100
    pretrain_eval_every: int = 500
    pretrain_eval_batches: int | None = 20
    pretrain_seed: int = 0  # data augmentation seed (and the encoder seed when pretrain_seeds is empty)
    pretrain_seeds: tuple[int, ...] = ()
    strategy_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    pretrain_limit: int | None = None  # files per split (None = all)
    freeze_every: int = 1
    freeze_top: float = 0.3
    unfreeze_frac: float = 0.1
    mask_ratio: float = 0.15
    tasks: tuple[str, ...] = FT_TASKS
    seeds: tuple[int, ...] = (0, 1, 2)
    mask_modes: tuple[bool, ...] = (True, False)
    ft_steps: int = 200
    ft_batch: int = 16
    ft_lr: float = 3e-4
    ft_warmup: int = 10
    ft_eval_every: int = 50
    ft_eval_batches: int | None = 8
    ft_patience: int = 3
    ft_val_windows: int | None = None  # early-stopping validation subset size (None = whole val split)
    ft_limit: int | None = None  # files per split (None = all)
    curve_steps: int = 0  # > 0: learning-curve stage per task, budget from the curves
    curve_eval_every: int = 50
    curve_models: tuple[str, ...] = ("random", "none")  # strategies (first seed's encoder) or "none"
    curve_tol: float = 0.01  # the budget: first step within curve_tol of the curve's best
    probe: bool = False
    probe_max_rows: int = 100_000
    eval_batch: int = 64
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    efficiency_tasks: tuple[str, ...] = ("composer", "emotion", "melody")
    efficiency_models: tuple[str, ...] = ("adversarial", "random", "none")
    analysis_pieces: int = 10  # validation pieces per dataset
    analysis_examples: int = 5
    asap_source: str = "both"
    keep_finetuned: bool = False  # keep fine-tuned weights (else only results are kept)
    bf16: bool | str = False  # True, False or "auto"
    device: str = "auto"
    fixture_data: bool = False  # default data root = generated fixture data in the runs folder
    est_minutes: dict[str, float] = field(default_factory=dict)
    machine: str = ""
    # earlier runs of this preset kept for reference: [{"date", "preset", "results" (repo-relative
    # results.json), "results_md", "why"}]; RESULTS.md shows each as a dated section
    earlier: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> StudyPreset:
        return dataclasses.replace(self, **changes)

    @property
    def ft_models(self) -> tuple[str, ...]:
        """Model kinds that are fine-tuned: the strategies and "none" (no pre-training)."""
        return tuple(self.strategies) + ("none",)

    @property
    def seeds_pretrain(self) -> tuple[int, ...]:
        return tuple(self.pretrain_seeds) or (int(self.pretrain_seed),)

    def encoders(self) -> list[Encoder]:
        """Every pre-trained encoder: strategies x pre-training seeds, then the variants."""
        seeds = self.seeds_pretrain
        out = [Encoder(s if len(seeds) == 1 else f"{s}-s{seed}", s, int(seed),
                       tuple(sorted(self.strategy_settings.get(s, {}).items())), variant=False)
               for s in self.strategies for seed in seeds]
        for name, spec in self.variants.items():
            spec = dict(spec)
            s = spec.pop("strategy")
            settings = {**self.strategy_settings.get(s, {}), **spec}
            out.append(Encoder(name, s, int(seeds[0]), tuple(sorted(settings.items())), variant=True))
        return out

    def encoder(self, name: str) -> Encoder:
        for e in self.encoders():
            if e.name == name:
                return e
        raise KeyError(name)

    def main_encoder(self, strategy: str) -> str:
        """The encoder of ``strategy`` with the first pre-training seed (analysis, curves)."""
        return next(e.name for e in self.encoders() if e.strategy == strategy and not e.variant)

    def check(self) -> StudyPreset:
        bad = [t for t in self.tasks if t not in FT_TASKS]
        bad += [t for t in self.efficiency_tasks if t not in self.tasks]
        if bad:
            raise SMUInputError("study preset", f"unknown or unused tasks {bad}; tasks must come from {FT_TASKS} "
                                                "and efficiency tasks from the preset's tasks")
        if any(s not in STRATEGIES for s in self.strategies):
            raise SMUInputError("study preset", f"unknown strategy in {self.strategies}")
        for name, spec in self.variants.items():
            if spec.get("strategy") not in STRATEGIES or name in self.strategies:
                raise SMUInputError("study preset", f"variant {name!r} needs a known 'strategy' and its own name")
        if self.curve_steps and any(m not in self.ft_models for m in self.curve_models):
            raise SMUInputError("study preset", f"curve models {self.curve_models} must be among {self.ft_models}")
        if self.bf16 not in (True, False, "auto"):
            raise SMUInputError("study preset", f"bf16 must be true, false or 'auto', not {self.bf16!r}")
        if any(m not in self.ft_models for m in self.efficiency_models):
            raise SMUInputError("study preset", f"efficiency models {self.efficiency_models} must be among "
                                                f"{self.ft_models}")
        if not self.seeds or self.pretrain_chunks < 1 or self.pretrain_steps < self.pretrain_chunks:
            raise SMUInputError("study preset", "needs >= 1 seed and 1 <= pretrain_chunks <= pretrain_steps")
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions) or 1.0 not in self.fractions:
            raise SMUInputError("study preset", f"fractions must lie in (0, 1] and include 1.0: {self.fractions}")
        if True not in self.mask_modes:
            raise SMUInputError("study preset", "mask_modes must include True (the data-efficiency runs use it)")
        return self


@dataclass(frozen=True)
class Encoder:
    """One pre-training run of the study: its folder/stage name, strategy, seed, settings."""

    name: str
    strategy: str
    seed: int
    settings: tuple[tuple[str, Any], ...] = ()
    variant: bool = False


# Sizing of the cpu preset (measured 2026-11-29 on this 2-core machine while other jobs
# ran, torch 2.13, 1 process, batch 16 x 256 tokens, model 4 x 128): random-mask
# step 0.24 s, adversarial step 0.30 s, fine-tuning step ~0.2 s. Pre-training data:
# ~7.5 M notes -> ~29 k windows of 256 -> ~1.8 k steps per epoch.
PRESETS: dict[str, StudyPreset] = {
    "tiny": StudyPreset(
        name="tiny", model=dict(d_model=32, n_layers=1, n_heads=2, d_ff=64, emb_dim=8, dropout=0.1),
        max_len=32, strategies=("random", "adversarial"), pretrain_steps=24, pretrain_batch=8,
        pretrain_chunks=2, pretrain_lr=1e-3, pretrain_warmup=0, pretrain_eval_every=12, pretrain_eval_batches=2,
        freeze_every=1, seeds=(0, 1), ft_steps=3, ft_batch=4, ft_lr=1e-3, ft_warmup=0, ft_eval_every=3,
        ft_eval_batches=2, ft_patience=2, eval_batch=16, fractions=(0.5, 1.0),
        efficiency_tasks=("emotion", "melody"), analysis_pieces=2, analysis_examples=3,
        asap_source="score", fixture_data=True,
        est_minutes={"data": 0.02, "pretrain": 0.02, "finetune": 0.05, "efficiency": 0.05, "analysis": 0.02,
                     "report": 0.01},
        machine="any (seconds)",
        notes=["tiny preset: fixture data and a toy model; the numbers test the machinery and mean nothing"]),
    "cpu": StudyPreset(
        name="cpu", model=dict(d_model=128, n_layers=4, n_heads=4, d_ff=512, emb_dim=64, dropout=0.1,
                               position="rope", init="torch"),
        max_len=256, strategies=("random", "adversarial"), pretrain_seeds=(0, 1),
        strategy_settings={"adversarial": {"explore": 0.5}},
        variants={"adversarial-freeze1": {"strategy": "adversarial", "freeze_every": 1}},
        pretrain_steps=3000, pretrain_batch=16, pretrain_chunks=1, pretrain_lr=1e-3, pretrain_warmup=200,
        pretrain_eval_every=1000, pretrain_eval_batches=20, freeze_every=15, seeds=(0, 1), mask_modes=(True,),
        ft_steps=1000, ft_batch=16, ft_lr=3e-4, ft_warmup=20, ft_eval_every=50, ft_eval_batches=None,
        ft_patience=4, ft_val_windows=512, eval_batch=64, fractions=(1.0,), efficiency_tasks=(),
        curve_steps=1000, curve_eval_every=50, curve_models=("random", "none"), probe=True,
        analysis_pieces=10, bf16="auto",
        # estimates (2 cores, bf16), measured in the 2026-12-02 run: adversarial pre-training 15-17 min
        # alone (random 29 and 81 min shared the CPU with other jobs, load 3-8; a random step costs
        # less than an adversarial one), curves 7-10 min, fine-tuning stages 24-28 min.
        est_minutes={"data": 5, "pretrain": 14, "pretrain-adversarial": 18, "curve": 9, "finetune": 27,
                     "probe": 4, "analysis": 6, "report": 0.5},
        machine="2-core CPU (no GPU)",
        notes=[
            "model 4 layers x 128 (about 0.9 M parameters) with rotary positions (issue 11's recipe) instead of "
            "12 x 768 (115 M), windows of 256 notes instead of 1024, 3 000 pre-training steps of 16 windows "
            "(about 1.8 epochs)",
            "two pre-training seeds per strategy; fine-tuning seeds 0 and 1 on each encoder (no pre-training: "
            "seeds 0 and 1)",
            "adversarial masking with explore 0.5 (half of each sample's picks uniform at random; "
            "docs/PRETRAINING.md: the paper's deterministic top-k stalls at this scale)",
            "freeze cadence: the paper's every 15 epochs (of a run of up to 500) means no freeze event in a "
            "1.8-epoch run, so the main adversarial encoders never freeze; the variant adversarial-freeze1 "
            "freezes after every epoch (one event, as the first run did) as the ablation",
            "fine-tuning budget per task read off a learning curve (curve-<task>); mask fine-tuning on only; "
            "no data-efficiency stage",
            "the stages run on 2026-12-02 (data, pretrain-random-s0, pretrain-random-s1) shared the 2-core machine "
            "with other jobs (load 3-8), so their wall times overstate the cost; the per-step cost of each "
            "strategy, measured side by side by the analysis stage, is in the summary's cost line",
        ],
        earlier=[{"date": "2026-11-30", "preset": "cpu-v1", "results": "docs/study/2026-11-30-cpu-v1/results.json",
                  "results_md": "docs/study/2026-11-30-cpu-v1/RESULTS.md",
                  "why": "its encoders had learned almost nothing: learned absolute positions kept pre-training "
                         "recovery at the level of rules that use no model (position 0.17 vs 0.50 for copying "
                         "the neighbour), the adversarial masker never explored, the freeze book was updated "
                         "every epoch (61% of training notes frozen) and fine-tuning stopped after 100 steps "
                         "(velocity stayed at the majority class). This run uses rotary positions, explore 0.5, "
                         "the paper's freeze cadence, two pre-training seeds and budgets read off learning curves"}]),
    "cpu-v1": StudyPreset(
        name="cpu-v1",
        model=dict(d_model=128, n_layers=4, n_heads=4, d_ff=512, emb_dim=64, dropout=0.1, position="absolute",
                   init="normal"),
        max_len=256, strategies=("random", "adversarial"), pretrain_steps=7200, pretrain_batch=16,
        pretrain_chunks=2, pretrain_lr=5e-4, pretrain_warmup=200, pretrain_eval_every=900,
        pretrain_eval_batches=20, freeze_every=1, seeds=(0, 1, 2), ft_steps=100, ft_batch=16, ft_lr=3e-4,
        ft_warmup=10, ft_eval_every=40, ft_eval_batches=None, ft_patience=2, ft_val_windows=512, eval_batch=64,
        fractions=(0.1, 0.25, 0.5, 1.0), analysis_pieces=10,
        # per stage: random chunk 3600 x 0.24 s + evals; adversarial chunk 3600 x 0.30 s + ~2 freeze
        # passes of ~2 min; fine-tuning run ~31 s (100 steps x 0.2 s + evaluations), 18 runs per
        # finetune stage, 27 per efficiency stage
        est_minutes={"data": 5, "pretrain": 15, "pretrain-adversarial": 22, "finetune": 9.5, "efficiency": 14,
                     "analysis": 5, "report": 0.5},
        machine="2-core CPU (no GPU)",
        notes=[
            "the first run (2026-11-30), kept to reproduce it: learned absolute positions and N(0, 0.02) "
            "initialisation, at which the encoders stayed at the no-model rules' level (docs/PRETRAINING.md)",
            "bar-masking pre-training is left out (a third 40-minute run does not fit in 3 h); the gpu preset has it",
            "model 4 layers x 128 (about 0.9 M parameters) instead of 12 x 768 (115 M), windows of 256 notes "
            "instead of 1024, 7 200 pre-training steps of 16 windows (at most 29.5 M tokens, about 4 epochs)",
            "freeze book updated every epoch (the paper: every 15 epochs), since the run has only ~4 epochs",
            "fine-tuning: 100 steps of 16 windows with early stopping (the literature: 10+ epochs)",
            "one pre-training run per strategy; the 3 seeds are fine-tuning seeds",
        ]),
    "gpu": StudyPreset(
        name="gpu", model=dict(d_model=768, n_layers=12, n_heads=12, d_ff=3072, emb_dim=256, dropout=0.1),
        max_len=512, strategies=STRATEGIES, pretrain_steps=50_000, pretrain_batch=32,
        pretrain_chunks=4, pretrain_lr=1e-4, pretrain_warmup=2000, pretrain_eval_every=5000,
        pretrain_eval_batches=50, freeze_every=5, seeds=(0, 1, 2), ft_steps=3000, ft_batch=16, ft_lr=2e-5,
        ft_warmup=100, ft_eval_every=300, ft_eval_batches=None, ft_patience=3, eval_batch=64,
        fractions=(0.1, 0.25, 0.5, 1.0), efficiency_tasks=("composer", "emotion", "melody"),
        analysis_pieces=50, bf16=True,
        # rough, from FLOPs (~9 TFLOP per step at 30% of an H200's bf16 peak, plus the per-sample
        # masking loops): ~0.07 s per pre-training step, ~2 min per fine-tuning run; NOT measured
        est_minutes={"data": 5, "pretrain": 15, "pretrain-adversarial": 20, "finetune": 40, "efficiency": 50,
                     "analysis": 10, "report": 0.5},
        machine="one H200-class GPU (rough estimate from FLOPs, not measured)",
        notes=["base model (12 x 768) with windows of 512 (the paper: 1024), 50 000 pre-training steps of 32 "
               "windows (the paper trained ~10 days on two V100s); freeze every 5 epochs (the authors' code); "
               "one pre-training run per strategy"]),
}


def get_preset(name: str | StudyPreset) -> StudyPreset:
    if isinstance(name, StudyPreset):
        return name.check()
    if name not in PRESETS:
        raise SMUInputError("preset", f"unknown study preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name].check()


# ============================================================================ stages

@dataclass(frozen=True)
class Stage:
    """One resumable unit of the study; its result is ``<results_dir>/<name>.json``."""

    name: str
    kind: str  # data | pretrain | finetune | efficiency | analysis | report
    params: tuple[tuple[str, Any], ...] = ()
    deps: tuple[str, ...] = ()
    est_min: float = 0.0

    def param(self, key: str, default: Any = None) -> Any:
        return dict(self.params).get(key, default)


def pretrain_stage_names(preset: StudyPreset, encoder: str) -> list[str]:
    """Stage names of one encoder's pre-training (``encoder``: an ``Encoder.name``; with one
    pre-training seed the strategy's name)."""
    n = preset.pretrain_chunks
    return [f"pretrain-{encoder}-{k}of{n}" for k in range(1, n + 1)]


def plan_stages(preset: StudyPreset | str) -> list[Stage]:
    """The study's stages in run order (see the module docstring)."""
    p = get_preset(preset)
    est = p.est_minutes
    stages = [Stage("data", "data", est_min=est.get("data", 0))]
    final_pre: dict[str, str] = {}  # encoder name -> its last pre-training stage
    for enc in p.encoders():
        names = pretrain_stage_names(p, enc.name)
        for k, name in enumerate(names, start=1):
            deps = ("data",) + ((names[k - 2],) if k > 1 else ())
            stages.append(Stage(name, "pretrain", (("encoder", enc.name), ("strategy", enc.strategy),
                                                   ("seed", enc.seed), ("settings", enc.settings),
                                                   ("chunk", k), ("chunks", p.pretrain_chunks)),
                                deps, est.get(f"pretrain-{enc.strategy}", est.get("pretrain", 0))))
        final_pre[enc.name] = names[-1]
    main = {e.name: n for e, n in ((e, final_pre[e.name]) for e in p.encoders()) if not e.variant}
    if p.curve_steps:
        curve_deps = tuple(final_pre[p.main_encoder(m)] for m in p.curve_models if m != "none")
        for t in p.tasks:
            stages.append(Stage(f"curve-{t}", "curve", (("task", t),), ("data",) + curve_deps, est.get("curve", 0)))
    for t in p.tasks:
        deps = ("data",) + ((f"curve-{t}",) if p.curve_steps else ()) + tuple(main.values())
        stages.append(Stage(f"finetune-{t}", "finetune", (("task", t),), deps, est.get("finetune", 0)))
    if p.probe:
        for t in p.tasks:
            stages.append(Stage(f"probe-{t}", "probe", (("task", t),), ("data",) + tuple(final_pre.values()),
                                est.get("probe", 0)))
    for t in p.efficiency_tasks:
        deps = ("data", f"finetune-{t}") + tuple(final_pre[p.main_encoder(m)] for m in p.efficiency_models
                                                 if m in p.strategies)
        stages.append(Stage(f"efficiency-{t}", "efficiency", (("task", t),), deps, est.get("efficiency", 0)))
    if "adversarial" in p.strategies and "random" in p.strategies:
        ana_deps = ("data",) + tuple(final_pre[e.name] for e in p.encoders() if e.strategy in ("adversarial", "random"))
        stages.append(Stage("analysis", "analysis", (), ana_deps, est.get("analysis", 0)))
    stages.append(Stage("report", "report", (), (), est.get("report", 0)))
    return stages


def estimate_minutes(preset: StudyPreset | str) -> dict[str, float]:
    """Estimated minutes per stage kind and ``total`` (from ``est_minutes``)."""
    out: dict[str, float] = {}
    for st in plan_stages(preset):
        out[st.kind] = out.get(st.kind, 0.0) + st.est_min
    out["total"] = sum(out.values())
    return out


def select_stages(stages: Sequence[Stage], only: Sequence[str] | None) -> list[Stage]:
    """Stages named in ``only``: exact names, kinds (``pretrain``) or name prefixes
    (``pretrain-adversarial``, ``finetune-melody``). None = all."""
    if not only:
        return list(stages)
    keep = []
    for st in stages:
        for sel in only:
            if st.name == sel or st.kind == sel or st.name.startswith(sel + "-"):
                keep.append(st)
                break
    if not keep:
        raise SMUInputError("--only", f"no stage matches {list(only)}; stages: {[s.name for s in stages]}")
    return keep


# ============================================================================ paths, files, costs

def default_runs_dir() -> Path:
    env = os.environ.get("SMU_RUNS_DIR")
    return Path(env).expanduser() if env else Path.home() / "smu_runs" / "study"


@dataclass
class StudyPaths:
    runs_dir: Path
    results_dir: Path
    results_md: Path
    data_root: Path | None = None
    cache_dir: Path | None = None

    @classmethod
    def make(cls, runs_dir=None, results_dir=None, results_md=None, data_root=None, cache_dir=None,
             preset: StudyPreset | str | None = None) -> StudyPaths:
        """Defaults: runs ``default_runs_dir()/<preset>`` (``default_runs_dir()`` without a
        preset), results ``docs/study`` and ``docs/RESULTS.md``, except for a fixture-data
        preset (tiny), whose results default to ``<runs>/results`` and ``<runs>/RESULTS.md``
        so that a demo never overwrites the real study's results."""
        if runs_dir:
            runs = Path(runs_dir).expanduser()
        else:
            runs = default_runs_dir() / get_preset(preset).name if preset is not None else default_runs_dir()
        demo = preset is not None and get_preset(preset).fixture_data
        docs = REPO_ROOT / "docs"
        res_dir = Path(results_dir) if results_dir else (runs / "results" if demo else docs / "study")
        res_md = Path(results_md) if results_md else (runs / "RESULTS.md" if demo else docs / "RESULTS.md")
        return cls(runs, res_dir, res_md, Path(data_root) if data_root else None,
                   Path(cache_dir) if cache_dir else None)

    def result(self, stage: str) -> Path:
        return self.results_dir / f"{stage}.json"




def _plain(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if not math.isfinite(float(o)) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    return str(o)


def _clean(o: Any) -> Any:
    """NaN/inf -> None so the JSON is standard."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, np.generic):
        return _clean(o.item())
    return o


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_clean(obj), indent=1, default=_plain) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SMUInputError(path, "study result not found") from None
    except (OSError, ValueError, RecursionError) as e:  # not JSON, too many digits, too deep
        raise SMUInputError(path, f"unreadable study result ({str(e)[:200] or e.__class__.__name__})") from None


def machine_info() -> dict[str, Any]:
    """Where the study ran: CPU model and count, torch version and threads, GPU."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "platform": platform.platform(), "gpu": None}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def now_iso() -> str:
    """The current UTC time as ``YYYY-MM-DDTHH:MM:SSZ`` (stage and results timestamps)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
