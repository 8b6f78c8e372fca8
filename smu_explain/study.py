"""The reproduction study (issue 5): pre-train, fine-tune, compare, analyse, report.

``smu study --preset cpu|gpu|tiny`` runs the whole study as a list of resumable
**stages** (``plan_stages``), in order:

``data``
    Build and tokenize every task once (through the token cache) and record the
    datasets: pieces, notes, windows per split, skipped files, split rules.
``pretrain-<strategy>-<k>of<n>``
    MLM pre-training with the ``random``, ``adversarial`` (and ``bar``) masking
    strategies: same model size, data, steps and seed for every strategy. Data =
    ``data.pretrain_task`` (Pop1K7 + POP909 + ASAP + EMOPIA without any fine-tuning
    validation or test piece), transposition augmentation on. A run is cut into
    ``n`` chunks (stages) so that no stage exceeds the time limit; chunk ``k``
    resumes the run's ``checkpoint.pt`` and stops at step ``round(k * steps / n)``
    (the learning-rate schedule spans the whole run). The adversarial run saves a
    freeze-book snapshot at every freeze event (``FreezeSnapshots``).
``finetune-<task>``
    Every pre-trained model and the no-pre-training control (``none``), with and
    without mask fine-tuning, over the preset's fine-tuning seeds, on ``melody``
    (POP909), ``velocity`` (POP909), ``composer`` (ASAP's 8 composers split by work:
    the stand-in for Pianist8, which is not available) and ``emotion`` (EMOPIA split
    by song). Early stopping on validation accuracy; test accuracy and macro-F1 of
    the best weights.
``efficiency-<task>``
    Data efficiency: the same fine-tuning (mask fine-tuning on) with 10/25/50% of
    the labelled training pieces (a nested, per-seed random subset, stratified by
    class for sequence tasks), same steps and seeds, for ``adversarial``, ``random``
    and ``none``; the 100% point is taken from ``finetune-<task>``.
``analysis``
    Masker analysis on POP909 / ASAP / EMOPIA validation pieces (see
    ``masker_analysis``) and the freeze-book history of the adversarial run.
``report``
    Aggregates everything into ``results.json`` and ``RESULTS.md`` (plus the
    data-efficiency figure).

Rules
-----
- A stage is **finished** when its result JSON ``<results_dir>/<stage>.json``
  exists. Re-running the study skips finished stages; deleting one result re-runs
  that stage only (no cascade: later stages keep their results until they are
  deleted too). ``report`` is the exception: it is also re-run when any other
  result is newer than ``results.json``.
- A stage that was interrupted resumes: pre-training from its ``checkpoint.pt``;
  fine-tuning / efficiency stages keep the runs they finished (a ``STARTED`` marker
  in the stage's run folder says the stage is in progress; a stage that starts
  without the marker starts clean).
- A stage whose dependencies have no result raises ``SMUInputError`` naming them.
- Checkpoints and run folders go to the runs folder (``--runs-dir``, else
  ``$SMU_RUNS_DIR/<preset>``, else ``~/smu_runs/study/<preset>``): outside the work
  tree. Results go to ``results_dir`` (default ``docs/study``) and ``results_md``
  (default ``docs/RESULTS.md``); both are configurable (tests write to a temporary
  folder; the tiny preset defaults them to its runs folder). Presets never mix: a
  ``PRESET`` file in the runs folder and the ``preset`` of every stage result are
  checked before anything runs.
- Early stopping of fine-tuning watches the validation split, or, with
  ``ft_val_windows``, a class-balanced subset of whole validation pieces
  (``validation_subset``): a prefix of a name-sorted split would hold few classes.
- Costs of every stage (``cost`` in its JSON): wall time, training tokens seen
  (real, non-padding tokens of every optimizer step), optimizer steps, peak resident
  memory of the process during the stage (Linux: VmHWM after resetting it through
  ``/proc/self/clear_refs``; elsewhere ``ru_maxrss``, the process's lifetime peak,
  and the JSON says which) and the CUDA peak (``torch.cuda.max_memory_allocated``).
- Seeds: one pre-training run per strategy (``pretrain_seed``); ``seeds`` are the
  fine-tuning seeds (head/encoder init of the control, data order, input masks).
  Splits are fixed (split seed 0), as in the literature. The paired comparison of
  adversarial vs random therefore measures fine-tuning variance, not pre-training
  variance; RESULTS.md says so.
- The ``tiny`` preset runs in seconds on fixture data (``make_fixture_data``, the
  real datasets' folder layout with a few synthetic pieces); its numbers mean nothing.

The JSON schemas of the files under ``results_dir`` are documented in
docs/study/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import logging
import math
import os
import platform
import resource
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .errors import SMUInputError
from .io import atomic_write_stream, atomic_write_text

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULT_FORMAT = "smu_explain.study/1"
FT_TASKS = ("melody", "velocity", "composer", "emotion")
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
    """

    name: str
    model: dict[str, Any]
    max_len: int
    strategies: tuple[str, ...] = ("random", "adversarial", "bar")
    pretrain_steps: int = 1000
    pretrain_batch: int = 16
    pretrain_chunks: int = 1
    pretrain_lr: float = 5e-4
    pretrain_warmup: int = 100
    pretrain_eval_every: int = 500
    pretrain_eval_batches: int | None = 20
    pretrain_seed: int = 0
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
    eval_batch: int = 64
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    efficiency_tasks: tuple[str, ...] = ("composer", "emotion", "melody")
    efficiency_models: tuple[str, ...] = ("adversarial", "random", "none")
    analysis_pieces: int = 10  # validation pieces per dataset
    analysis_examples: int = 5
    asap_source: str = "both"
    keep_finetuned: bool = False  # keep fine-tuned weights (else only results are kept)
    bf16: bool = False
    device: str = "auto"
    fixture_data: bool = False  # default data root = generated fixture data in the runs folder
    est_minutes: dict[str, float] = field(default_factory=dict)
    machine: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "StudyPreset":
        return dataclasses.replace(self, **changes)

    @property
    def ft_models(self) -> tuple[str, ...]:
        return tuple(self.strategies) + ("none",)

    def check(self) -> "StudyPreset":
        bad = [t for t in self.tasks if t not in FT_TASKS]
        bad += [t for t in self.efficiency_tasks if t not in self.tasks]
        if bad:
            raise SMUInputError("study preset", f"unknown or unused tasks {bad}; tasks must come from {FT_TASKS} "
                                                "and efficiency tasks from the preset's tasks")
        if any(s not in ("random", "adversarial", "bar") for s in self.strategies):
            raise SMUInputError("study preset", f"unknown strategy in {self.strategies}")
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
        name="cpu", model=dict(d_model=128, n_layers=4, n_heads=4, d_ff=512, emb_dim=64, dropout=0.1),
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
            "bar-masking pre-training is left out (a third 40-minute run does not fit in 3 h); the gpu preset has it",
            "model 4 layers x 128 (about 0.9 M parameters) instead of 12 x 768 (115 M), windows of 256 notes "
            "instead of 1024, 7 200 pre-training steps of 16 windows (at most 29.5 M tokens, about 4 epochs)",
            "freeze book updated every epoch (the paper: every 15 epochs), since the run has only ~4 epochs",
            "fine-tuning: 100 steps of 16 windows with early stopping (the literature: 10+ epochs)",
            "one pre-training run per strategy; the 3 seeds are fine-tuning seeds",
        ]),
    "gpu": StudyPreset(
        name="gpu", model=dict(d_model=768, n_layers=12, n_heads=12, d_ff=3072, emb_dim=256, dropout=0.1),
        max_len=512, strategies=("random", "adversarial", "bar"), pretrain_steps=50_000, pretrain_batch=32,
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


def pretrain_stage_names(preset: StudyPreset, strategy: str) -> list[str]:
    n = preset.pretrain_chunks
    return [f"pretrain-{strategy}-{k}of{n}" for k in range(1, n + 1)]


def plan_stages(preset: StudyPreset | str) -> list[Stage]:
    """The study's stages in run order (see the module docstring)."""
    p = get_preset(preset)
    est = p.est_minutes
    stages = [Stage("data", "data", est_min=est.get("data", 0))]
    final_pre: dict[str, str] = {}
    for s in p.strategies:
        names = pretrain_stage_names(p, s)
        for k, name in enumerate(names, start=1):
            deps = ("data",) + ((names[k - 2],) if k > 1 else ())
            stages.append(Stage(name, "pretrain", (("strategy", s), ("chunk", k), ("chunks", p.pretrain_chunks)),
                                deps, est.get(f"pretrain-{s}", est.get("pretrain", 0))))
        final_pre[s] = names[-1]
    for t in p.tasks:
        stages.append(Stage(f"finetune-{t}", "finetune", (("task", t),), ("data",) + tuple(final_pre.values()),
                            est.get("finetune", 0)))
    for t in p.efficiency_tasks:
        deps = ("data", f"finetune-{t}") + tuple(final_pre[m] for m in p.efficiency_models if m in final_pre)
        stages.append(Stage(f"efficiency-{t}", "efficiency", (("task", t),), deps, est.get("efficiency", 0)))
    ana_deps = ("data",) + tuple(final_pre[s] for s in ("adversarial", "random") if s in final_pre)
    if "adversarial" in final_pre and "random" in final_pre:
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
             preset: "StudyPreset | str | None" = None) -> "StudyPaths":
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


_atomic_write = atomic_write_text


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
    _atomic_write(path, json.dumps(_clean(obj), indent=1, default=_plain) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SMUInputError(path, "study result not found") from None
    except (OSError, json.JSONDecodeError) as e:
        raise SMUInputError(path, f"unreadable study result ({e})") from None


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


def _read_vm(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1]) / 1024.0  # kB -> MiB
    except OSError:
        return None
    return None


class CostMeter:
    """Measures one stage: wall time, tokens, steps, peak RSS, CUDA peak (module docstring)."""

    def __init__(self):
        self.tokens = 0
        self.steps = 0
        self.wall_s = 0.0
        self.peak_rss_mb: float | None = None
        self.peak_source = ""
        self.cuda_peak_mb: float | None = None

    def __enter__(self) -> "CostMeter":
        import torch

        self._reset = False
        try:  # Linux >= 4.0: "5" resets the peak RSS (VmHWM) of this process
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self._reset = _read_vm("VmHWM") is not None
        except OSError:
            self._reset = False
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        import torch

        self.wall_s = time.perf_counter() - self._t0
        if self._reset:
            self.peak_rss_mb = _read_vm("VmHWM")
            self.peak_source = "VmHWM (reset at stage start)"
        else:
            r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.peak_rss_mb = r / 1024.0 if sys.platform != "darwin" else r / 2**20
            self.peak_source = "ru_maxrss (process lifetime peak)"
        if torch.cuda.is_available():
            self.cuda_peak_mb = torch.cuda.max_memory_allocated() / 2**20

    def add(self, tokens: int = 0, steps: int = 0) -> None:
        self.tokens += int(tokens)
        self.steps += int(steps)

    def to_dict(self) -> dict[str, Any]:
        return {"wall_s": round(self.wall_s, 3), "tokens": self.tokens, "steps": self.steps,
                "peak_rss_mb": None if self.peak_rss_mb is None else round(self.peak_rss_mb, 1),
                "peak_rss_source": self.peak_source,
                "cuda_peak_mb": None if self.cuda_peak_mb is None else round(self.cuda_peak_mb, 1)}


# ============================================================================ trainer callbacks

def _callback_base():
    from .trainer import Callback

    return Callback


class TokenCounter(_callback_base()):
    """Counts optimizer steps and the real tokens of their batches.

    With ``state_file`` the counts (and the seconds spent) are written at every
    checkpoint, with the checkpoint's step, so a run resumed from that checkpoint can
    start from them (``load``): the counts then cover exactly the steps in the checkpoint.
    """

    def __init__(self, state_file: str | os.PathLike | None = None):
        self.tokens = 0
        self.steps = 0
        self.wall_before = 0.0
        self.state_file = Path(state_file) if state_file else None
        self._t0 = time.perf_counter()

    def load(self, step: int) -> bool:
        """Start from the counts saved with the checkpoint of ``step`` (False if there are none)."""
        if self.state_file is None or not self.state_file.is_file():
            return False
        d = read_json(self.state_file)
        if int(d.get("step", -1)) != int(step):
            return False
        self.tokens, self.steps, self.wall_before = int(d["tokens"]), int(d["steps"]), float(d["wall_s"])
        return True

    @property
    def wall_s(self) -> float:
        return self.wall_before + time.perf_counter() - self._t0

    def on_train_start(self, trainer):
        self._t0 = time.perf_counter()

    def on_step_end(self, trainer, info):
        self.tokens += int(info.get("tokens", 0))
        self.steps += 1

    def on_checkpoint(self, trainer, path):
        if self.state_file is not None:
            write_json(self.state_file, {"step": trainer.step, "steps": self.steps, "tokens": self.tokens,
                                         "wall_s": self.wall_s})


class StopAtStep(_callback_base()):
    """Ends the run normally (status ``done``, checkpoint written) once ``step`` steps are done:
    the end of a pre-training chunk. The next chunk resumes the checkpoint."""

    def __init__(self, step: int):
        self.step = int(step)

    def on_step_end(self, trainer, info):
        if trainer.step >= self.step and trainer.step < trainer.total_steps:
            trainer.request_stop(f"chunk ends at step {self.step} of {trainer.total_steps}", status="done")


SNAPSHOT_GLOB = "freeze_*.npz"


class FreezeSnapshots(_callback_base()):
    """Saves the adversarial strategy's freeze book after every freeze event.

    File ``<folder>/freeze_<epoch:05d>.npz`` (no pickles): ``names`` (P,) piece names of
    the training set, ``offsets`` (P+1,), ``bits`` (np.packbits of the concatenated
    per-note flags, True = frozen), ``n_bits``, ``epoch``, ``step`` and ``stats`` (the
    freeze book's history entry, as a JSON string). Works across resumes: the event
    count is the freeze book's ``history`` length.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def on_epoch_end(self, trainer, epoch):
        book = getattr(trainer.objective, "freeze_book", None)
        if book is None or not book.history or int(book.history[-1].get("epoch", -1)) != int(epoch):
            return
        names = list(getattr(trainer.train_set, "piece_names", None) or [])
        save_freeze_snapshot(self.folder / f"freeze_{int(epoch):05d}.npz", book, names, int(epoch),
                             int(trainer.step))


def save_freeze_snapshot(path: Path, book: Any, names: Sequence[str], epoch: int, step: int) -> Path:
    n = len(names) if names else (max(book.flags) + 1 if book.flags else 0)
    flags = [book.frozen_notes(i) for i in range(n)]
    offsets = np.concatenate([[0], np.cumsum([len(f) for f in flags])]).astype(np.int64)
    allf = np.concatenate(flags) if flags else np.zeros(0, bool)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = dict(names=np.asarray([str(x) for x in (names or range(n))], dtype=np.str_),
                  offsets=offsets, bits=np.packbits(allf.astype(bool)), n_bits=np.int64(len(allf)),
                  epoch=np.int64(epoch), step=np.int64(step),
                  stats=np.asarray(json.dumps(book.history[-1] if book.history else {})))
    atomic_write_stream(path, lambda fh: np.savez_compressed(fh, **arrays))
    return path


def load_freeze_snapshot(path: Path) -> dict[str, Any]:
    """{'epoch', 'step', 'stats', 'flags': {piece name: bool array}} of a snapshot file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            names = [str(x) for x in z["names"]]
            offsets = z["offsets"]
            bits = np.unpackbits(z["bits"])[: int(z["n_bits"])].astype(bool)
            out = {"epoch": int(z["epoch"]), "step": int(z["step"]), "stats": json.loads(str(z["stats"]))}
    except (OSError, KeyError, ValueError) as e:
        raise SMUInputError(path, f"unreadable freeze snapshot ({e})") from None
    out["flags"] = {nm: bits[offsets[i]:offsets[i + 1]] for i, nm in enumerate(names)}
    return out


# ============================================================================ statistics

def mean_std(values: Iterable[float | None]) -> dict[str, Any]:
    """Mean, sample std (ddof=1; None with one value) and n of the finite values."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(float(x))], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else None, "n": int(v.size)}


def format_mean_std(stats: Mapping[str, Any] | None, scale: float = 100.0, digits: int = 1) -> str:
    """``"85.2 ± 1.3"`` (percent by default); ``"—"`` when there is no value."""
    if not stats or stats.get("mean") is None:
        return "—"
    m = f"{stats['mean'] * scale:.{digits}f}"
    if stats.get("std") is None:
        return m
    return f"{m} ± {stats['std'] * scale:.{digits}f}"


def row_label(model: str, mask_ft: bool) -> str:
    names = {"adversarial": "adversarial", "random": "random masks", "bar": "bar masks",
             "none": "no pre-training"}
    return f"{names.get(model, model)}, mask-FT {'on' if mask_ft else 'off'}"


def aggregate_runs(runs: Sequence[Mapping[str, Any]], metrics: Sequence[str] = ("test_acc", "test_macro_f1")
                   ) -> list[dict[str, Any]]:
    """Group fine-tuning runs by (task, model, mask_ft, fraction) -> mean ± std over seeds.

    Each run needs ``task``, ``model``, ``mask_ft``, ``seed`` and the ``metrics``;
    ``fraction`` defaults to 1.0. Rows come out sorted by task, model, mask (on first), fraction.
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in runs:
        key = (r["task"], r["model"], bool(r["mask_ft"]), float(r.get("fraction", 1.0)))
        groups.setdefault(key, []).append(r)
    out = []
    for (task, model, mask, frac), rs in groups.items():
        row = {"task": task, "model": model, "mask_ft": mask, "fraction": frac,
               "seeds": sorted(int(r["seed"]) for r in rs)}
        for m in metrics:
            row[m] = mean_std(r.get(m) for r in rs)
            row[m]["values"] = [r.get(m) for r in sorted(rs, key=lambda x: int(x["seed"]))]
        out.append(row)
    order = {"adversarial": 0, "random": 1, "bar": 2, "none": 3}
    out.sort(key=lambda r: (r["task"], order.get(r["model"], 9), not r["mask_ft"], r["fraction"]))
    return out


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table (cells converted with ``str``; ``|`` escaped)."""
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def results_table(agg: Sequence[Mapping[str, Any]], metric: str, tasks: Sequence[str],
                  fraction: float = 1.0) -> tuple[list[str], list[list[str]]]:
    """Rows = (model, mask-FT) in the study's order, columns = tasks, cells ``mean ± std`` (%)."""
    rows_by: dict[tuple[str, bool], dict[str, Mapping[str, Any]]] = {}
    for r in agg:
        if abs(float(r["fraction"]) - fraction) > 1e-9:
            continue
        rows_by.setdefault((r["model"], r["mask_ft"]), {})[r["task"]] = r[metric]
    header = ["model"] + list(tasks)
    rows = [[row_label(m, mk)] + [format_mean_std(cells.get(t)) for t in tasks]
            for (m, mk), cells in rows_by.items()]
    return header, rows


def published_table(tasks: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """The published accuracies (METHOD.md 8) in the layout of ``results_table``."""
    header = ["source", "model"] + list(tasks)
    rows = []
    for src, models in PUBLISHED.items():
        for model, accs in models.items():
            rows.append([src, model.strip()] + [f"{accs[t]:.2f}" if t in accs else "—" for t in tasks])
    return header, rows


def paired_test(a: Sequence[float], b: Sequence[float], alpha: float = 0.05) -> dict[str, Any]:
    """Paired comparison of ``a`` against ``b`` (same length, paired by index).

    Reports the mean difference (a - b), the paired t-test and the Wilcoxon
    signed-rank test (two-sided, scipy). ``significant`` = t-test p < ``alpha``
    (and the Wilcoxon p too when it is defined); ``verdict`` says in words whether
    ``a`` beats ``b``. All-equal differences: p = 0 if they are non-zero, else 1.
    Fewer than 2 pairs: no test (p = None, not significant).
    """
    from scipy import stats as st

    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired_test needs equal lengths, got {x.size} and {y.size}")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    d = x - y
    out: dict[str, Any] = {"n": int(d.size), "mean_a": float(x.mean()) if d.size else None,
                           "mean_b": float(y.mean()) if d.size else None,
                           "mean_diff": float(d.mean()) if d.size else None,
                           "wins": int((d > 0).sum()), "losses": int((d < 0).sum()), "ties": int((d == 0).sum()),
                           "t_stat": None, "t_p": None, "wilcoxon_stat": None, "wilcoxon_p": None,
                           "alpha": alpha}
    if d.size >= 2:
        if np.allclose(d, d[0]):
            out["t_p"] = 0.0 if d[0] != 0 else 1.0
            out["t_stat"] = math.copysign(math.inf, d[0]) if d[0] != 0 else 0.0
        else:
            t = st.ttest_rel(x, y)
            out["t_stat"], out["t_p"] = float(t.statistic), float(t.pvalue)
        nz = d[d != 0]
        if nz.size >= 1:
            try:
                w = st.wilcoxon(x, y)
                out["wilcoxon_stat"], out["wilcoxon_p"] = float(w.statistic), float(w.pvalue)
            except ValueError:
                pass
        elif d.size:
            out["wilcoxon_p"] = 1.0
    sig = out["t_p"] is not None and out["t_p"] < alpha and (out["wilcoxon_p"] is None or out["wilcoxon_p"] < alpha
                                                             or d.size < 6)
    # Wilcoxon's smallest two-sided p with n < 6 pairs is >= 0.0625: it cannot reject at 0.05,
    # so with so few pairs the t-test decides alone.
    out["significant"] = bool(sig)
    if d.size < 2:
        out["verdict"] = "too few pairs for a test"
    elif sig:
        out["verdict"] = ("a is better than b" if out["mean_diff"] > 0 else "a is worse than b") + \
            f" (paired t-test p = {out['t_p']:.3g})"
    else:
        out["verdict"] = f"no significant difference (paired t-test p = {out['t_p']:.3g})"
    return out


def crossing_fraction(fractions: Sequence[float], accs: Sequence[float | None], target: float
                      ) -> dict[str, Any]:
    """The smallest labelled fraction at which ``accs`` reaches ``target``.

    Points are sorted by fraction; the first point with acc >= target is found and
    the fraction is interpolated linearly between it and the point before (which is
    below the target). Returns ``{"fraction": f or None, "status": "reached" |
    "at or below the smallest fraction" | "not reached"}``.
    """
    pts = sorted((float(f), float(a)) for f, a in zip(fractions, accs) if a is not None and math.isfinite(float(a)))
    if not pts or target is None:
        return {"fraction": None, "status": "not reached"}
    for i, (f, a) in enumerate(pts):
        if a >= target:
            if i == 0:
                return {"fraction": f, "status": "at or below the smallest fraction"}
            f0, a0 = pts[i - 1]
            frac = f0 + (target - a0) * (f - f0) / (a - a0)
            return {"fraction": float(frac), "status": "reached"}
    return {"fraction": None, "status": "not reached"}


def format_crossing(c: Mapping[str, Any]) -> str:
    if c.get("fraction") is None:
        return "not reached"
    if c["status"] == "reached":
        return f"{c['fraction']:.0%}"
    return f"≤ {c['fraction']:.0%}"


# ============================================================================ fixture data

def _write_midi(path: Path, tracks: Sequence[tuple[str, Sequence[tuple[int, int, int, int]]]],
                tpq: int = 480, qpm: float = 120.0, metre: tuple[int, int] = (4, 4)) -> None:
    from symusic import Note, Score, Tempo, TimeSignature, Track

    score = Score(tpq)
    for name, notes in tracks:
        tr = Track(name=name, program=0, is_drum=False)
        for t, d, p, v in notes:
            tr.notes.append(Note(int(t), int(d), int(p), int(v)))
        score.tracks.append(tr)
    score.time_signatures.append(TimeSignature(0, metre[0], metre[1]))
    score.tempos.append(Tempo(0, qpm=float(qpm)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(score.dumps_midi()))


def _phrase(rng: np.random.Generator, n: int, low: int, high: int, step: int, dur: int,
            vel: tuple[int, int], start: int = 0) -> list[tuple[int, int, int, int]]:
    pitches = np.clip(low + np.cumsum(rng.integers(-2, 3, n)) % (high - low), 22, 107)
    return [(start + i * step, dur, int(p), int(rng.integers(*vel))) for i, p in enumerate(pitches)]


def make_fixture_data(root: str | os.PathLike, seed: int = 0, n_notes: int = 48) -> Path:
    """Write a miniature copy of the real datasets' layout (shared/data/README.md) under ``root``.

    POP909 (10 songs, tracks MELODY/BRIDGE/PIANO, varied velocities), Pop1K7 (4 files),
    EMOPIA (12 songs x 2 clips, quadrant by song), ASAP (8 composers x 3 works, one
    score and one performance each, ``metadata.csv``; performances without beat
    annotations). Content differs by label (register, tempo, rhythm) so that labels
    are learnable. Deterministic in ``seed``; returns ``root``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for i in range(1, 11):
        sid = f"{i:03d}"
        _write_midi(root / "pop909" / "POP909" / sid / f"{sid}.mid", [
            ("MELODY", _phrase(rng, n_notes // 2, 67, 84, 240, 220, (70, 120))),
            ("BRIDGE", _phrase(rng, n_notes // 4, 60, 72, 480, 400, (40, 80), start=120)),
            ("PIANO", _phrase(rng, n_notes // 2, 36, 55, 240, 460, (20, 70))),
        ])
    for i in range(4):
        _write_midi(root / "pop1k7" / "midi_analyzed" / "src_001" / f"{i}.mid",
                    [("piano", _phrase(rng, n_notes, 40, 80, 240, 240, (40, 100)))])
    for s in range(12):
        q = s % 4 + 1
        for clip in range(2):
            step = 120 if q in (1, 2) else 480
            low = 60 if q in (1, 4) else 40
            _write_midi(root / "emopia" / "midis" / f"Q{q}_song{s:02d}_{clip}.mid",
                        [("piano", _phrase(rng, n_notes, low, low + 20, step, step, (40, 110)))],
                        qpm=140 if q in (1, 2) else 80)
    composers = ["Bach", "Beethoven", "Chopin", "Haydn", "Liszt", "Mozart", "Schubert", "Schumann"]
    rows = []
    for c, comp in enumerate(composers):
        for w in range(3):
            folder = f"{comp}/work{w}"
            low = 30 + 5 * c
            score = _phrase(rng, n_notes, low, low + 24, 120 * (1 + c % 4), 120 * (1 + c % 4), (50, 90))
            _write_midi(root / "asap" / folder / "midi_score.mid", [("score", score)],
                        metre=(3, 4) if c % 2 else (4, 4))
            perf = [(t + int(rng.integers(0, 20)), d, p, v) for t, d, p, v in score]
            _write_midi(root / "asap" / folder / "perf1.mid", [("performance", perf)])
            rows.append({"composer": comp, "folder": folder, "midi_score": f"{folder}/midi_score.mid",
                         "midi_performance": f"{folder}/perf1.mid", "performance_annotations": ""})
    import csv

    with open(root / "asap" / "metadata.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (root / "FIXTURE.txt").write_text("synthetic fixture data written by smu_explain.study.make_fixture_data\n")
    return root


# ============================================================================ figures

def data_efficiency_figure(efficiency: Mapping[str, Any]):
    """Plotly figure: test accuracy vs labelled fraction, one panel per task, one line
    per model (mean ± std over seeds as error bars), a dashed line at the no-pre-training
    model's 100% accuracy. Input: ``results["efficiency"]`` (see docs/study/README.md)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    tasks = list(efficiency)
    fig = make_subplots(rows=1, cols=max(1, len(tasks)), subplot_titles=tasks, shared_yaxes=False)
    colors = {"adversarial": "#d62728", "random": "#1f77b4", "bar": "#2ca02c", "none": "#7f7f7f"}
    for j, task in enumerate(tasks, start=1):
        eff = efficiency[task]
        for model, pts in eff.get("curves", {}).items():
            xs = [p["fraction"] for p in pts]
            ys = [None if p["mean"] is None else 100 * p["mean"] for p in pts]
            es = [0 if p.get("std") is None else 100 * p["std"] for p in pts]
            fig.add_trace(go.Scatter(x=xs, y=ys, error_y={"type": "data", "array": es, "visible": True},
                                     mode="lines+markers", name=model, legendgroup=model, showlegend=j == 1,
                                     line={"color": colors.get(model)}), row=1, col=j)
        target = eff.get("target")
        if target is not None:
            fig.add_hline(y=100 * target, line_dash="dash", line_color="#7f7f7f", row=1, col=j)
        fig.update_xaxes(type="log", tickvals=[0.1, 0.25, 0.5, 1.0], ticktext=["10%", "25%", "50%", "100%"],
                         title_text="labelled training pieces", row=1, col=j)
    fig.update_yaxes(title_text="test accuracy (%)", row=1, col=1)
    fig.update_layout(width=320 * max(1, len(tasks)) + 80, height=340, margin={"l": 50, "r": 10, "t": 70, "b": 50},
                      title={"text": "data efficiency (dashed: no pre-training, 100% of the data)"})
    return fig


GROUPING_TITLES = {"register": "pitch register", "metric": "metrical position", "duration": "duration class",
                   "role": "track role (POP909)", "velocity": "velocity bin"}


def masker_class_figure(by_class: Mapping[str, Sequence[Mapping[str, Any]]]):
    """Plotly figure: per note class (one column per grouping of ``analysis["by_class"]``),
    the adversarial masker's mean score (top row) and the frozen share (bottom row); hover
    adds the number of notes and the random model's mean recovery loss."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    groups = [g for g, rows in by_class.items() if rows]
    cols = max(1, len(groups))
    fig = make_subplots(rows=2, cols=cols, shared_yaxes=True, vertical_spacing=0.16, horizontal_spacing=0.03,
                        subplot_titles=[GROUPING_TITLES.get(g, g) for g in groups] + [""] * cols)
    for j, g in enumerate(groups, start=1):
        rows = by_class[g]
        x = [str(r["class"]) for r in rows]
        hover = [f"{r['n']:,} notes; random model's loss {r['random_loss']:.2f}" if r.get("random_loss") is not None
                 else f"{r['n']:,} notes" for r in rows]
        fig.add_trace(go.Bar(x=x, y=[r.get("score") for r in rows], marker_color="#d62728", name="mean score",
                             showlegend=j == 1, legendgroup="score", hovertext=hover), row=1, col=j)
        fig.add_trace(go.Bar(x=x, y=[None if r.get("frozen") is None else 100 * r["frozen"] for r in rows],
                             marker_color="#7f7f7f", name="frozen (%)", showlegend=j == 1, legendgroup="frozen",
                             hovertext=hover), row=2, col=j)
        fig.update_xaxes(tickangle=-40, tickfont={"size": 9}, row=2, col=j)
        fig.update_xaxes(showticklabels=False, row=1, col=j)
    scores = [r["score"] for g in groups for r in by_class[g] if r.get("score") is not None]
    # the score axis starts at 0 (never at the scores' minimum: a weak masker's 0.47 vs 0.49 must
    # not look like a big difference); the values are in the hover
    fig.update_yaxes(range=[0.0, min(1.0, max(0.5, 1.1 * max(scores, default=1.0)))], row=1)
    frozen = [100 * r["frozen"] for g in groups for r in by_class[g] if r.get("frozen") is not None]
    fig.update_yaxes(range=[0, max(1.0, 1.1 * max(frozen, default=100.0))], row=2)
    fig.update_yaxes(title_text="mean masker score", row=1, col=1)
    fig.update_yaxes(title_text="frozen (%)", row=2, col=1)
    fig.update_layout(width=230 * cols + 80, height=480, margin={"l": 60, "r": 10, "t": 80, "b": 110},
                      title={"text": "what the masker scores high and freezes, by note class (validation pieces)"},
                      legend={"orientation": "h", "y": 1.2, "x": 1.0, "xanchor": "right"})
    return fig


def freeze_history_figure(history: Sequence[Mapping[str, Any]]):
    """Plotly figure: the freeze book over training (``analysis["freeze_history"]``): frozen
    share, Jaccard overlap with the previous update and with the last one, per epoch."""
    import plotly.graph_objects as go

    ep = [h["epoch"] for h in history]
    fig = go.Figure()
    for key, name, color, dash in (("frozen_frac", "frozen share of the training notes", "#7f7f7f", None),
                                   ("jaccard_prev", "Jaccard with the previous update", "#1f77b4", "dot"),
                                   ("kept_from_prev", "previous frozen notes still frozen", "#2ca02c", "dash"),
                                   ("jaccard_last", "Jaccard with the last update", "#d62728", "dashdot")):
        fig.add_trace(go.Scatter(x=ep, y=[None if h.get(key) is None else 100 * h[key] for h in history],
                                 mode="lines+markers", name=name, line={"color": color, "dash": dash}))
    fig.update_layout(width=560, height=320, margin={"l": 50, "r": 10, "t": 40, "b": 40},
                      title={"text": "the frozen set over training (adversarial run)"},
                      xaxis={"title": {"text": "epoch (freeze-book update)"}, "dtick": 1},
                      yaxis={"title": {"text": "%"}, "range": [0, 105]},
                      legend={"font": {"size": 10}})
    return fig


def spearman_figure(analysis: Mapping[str, Any]):
    """Plotly figure: Spearman correlation of the masker score with the random model's and
    the adversarial model's own per-note recovery loss, per validation source and overall."""
    import plotly.graph_objects as go

    names = list(analysis.get("sources", {})) + ["all"]
    rows = [analysis["sources"][n] for n in names[:-1]] + [analysis]
    fig = go.Figure()
    for key, name, color in (("spearman_random_loss", "with the random model's loss", "#1f77b4"),
                             ("spearman_own_loss", "with the adversarial model's own loss", "#d62728")):
        fig.add_trace(go.Bar(x=names, y=[(r.get(key) or {}).get("rho") for r in rows], name=name,
                             marker_color=color,
                             hovertext=[f"n = {(r.get(key) or {}).get('n')}, p = {(r.get(key) or {}).get('p')}"
                                        for r in rows]))
    fig.update_layout(barmode="group", width=520, height=320, margin={"l": 50, "r": 10, "t": 40, "b": 40},
                      title={"text": "does the masker score the notes that are hard to recover?"},
                      yaxis={"title": {"text": "Spearman rho"}, "range": [-1, 1]},
                      legend={"orientation": "h", "y": -0.15, "font": {"size": 10}})
    return fig


def frozen_example_figure(example: Mapping[str, Any]):
    """Small piano roll of one frozen example (``analysis["examples"][i]``): its context notes
    coloured by masker score, frozen notes grey hatched, the example note marked by an arrow."""
    import pandas as pd

    from . import plots

    ctx = example.get("context", {})
    df = pd.DataFrame(ctx.get("notes", []))
    for col, default in (("velocity", 64), ("track", 0), ("bar", 0), ("beat", 0.0), ("frozen", False),
                         ("picked", False)):
        if col not in df.columns:
            df[col] = default
    names = ctx.get("track_names") or None
    piece = str(example.get("piece", ""))
    short = piece if len(piece) <= 42 else "..." + piece[-39:]  # the file name end, not cut by the frame
    fig = plots.piano_roll(df, bar_starts_q=ctx.get("bar_starts_q") or None, track_names=names,
                           title=f"{short}<br><span style='font-size:10px'>{example.get('source')}, "
                                 f"note {example.get('note')}</span>", height=300)
    # the arrow comes from below the note: from above it ran into the title
    fig.add_annotation(x=example["onset_q"] + example["duration_q"] / 2, y=example["pitch"], text="frozen",
                       showarrow=True, arrowhead=2, ax=0, ay=30, font={"size": 10}, bgcolor="white")
    fig.update_layout(width=420, showlegend=False, title={"font": {"size": 11}, "x": 0.02, "y": 0.97,
                                                          "yanchor": "top"},
                      coloraxis_showscale=False, margin={"l": 50, "r": 10, "t": 55, "b": 40})
    return fig


def analysis_figures(analysis: Mapping[str, Any]) -> dict[str, Any]:
    """Every masker-analysis figure by name (empty when there is no analysis): ``spearman``,
    ``by_class``, ``freeze_history`` (when there are snapshots), ``example_<i>``."""
    if not analysis:
        return {}
    figs: dict[str, Any] = {"spearman": spearman_figure(analysis),
                            "by_class": masker_class_figure(analysis.get("by_class", {}))}
    if analysis.get("freeze_history"):
        figs["freeze_history"] = freeze_history_figure(analysis["freeze_history"])
    for i, ex in enumerate(analysis.get("examples", [])):
        figs[f"example_{i + 1}"] = frozen_example_figure(ex)
    return figs


def save_figures(figs: Mapping[str, Any], folder: Path) -> dict[str, list[Path]]:
    """Each figure as ``folder/<name>.png`` when kaleido is installed (all PNGs in one kaleido
    session, so the browser starts once), else ``<name>.html`` (plotly.js from the CDN, so the
    file stays small); always ``<name>.json`` (the figure, for the app). -> {name: paths}."""
    import plotly.io as pio

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(figs)
    try:
        import kaleido  # noqa: F401

        pio.write_images([figs[n] for n in names], [str(folder / f"{n}.png") for n in names], scale=1)
        ext = ".png"
    except Exception:  # kaleido missing or unable to start a browser
        for n in names:
            figs[n].write_html(str(folder / f"{n}.html"), include_plotlyjs="cdn", full_html=True)
        ext = ".html"
    for n in names:
        _atomic_write(folder / f"{n}.json", figs[n].to_json())
    return {n: [folder / f"{n}{ext}", folder / f"{n}.json"] for n in names}


# ============================================================================ masker analysis helpers

def _velocity_class(v: np.ndarray) -> np.ndarray:
    from .data import VELOCITY_CLASSES, velocity_bins

    return np.asarray([VELOCITY_CLASSES[int(b)] for b in velocity_bins(np.asarray(v))], dtype=object)


def _role_class(piece: Any) -> np.ndarray:
    names = [str(n).strip().upper() for n in piece.track_names]
    roles = {"MELODY": "melody", "BRIDGE": "bridge", "PIANO": "accompaniment"}
    return np.asarray([roles.get(names[int(t)] if 0 <= int(t) < len(names) else "", "other")
                       for t in piece.track], dtype=object)


GROUPINGS = ("register", "metric", "duration", "role", "velocity")


def note_classes(df, piece: Any) -> dict[str, np.ndarray]:
    """Per note of an explain table: register, metric position (of the quantised position,
    ``plots.metric_beats``), duration class (plots.py's rules), track role (POP909 track names; ``other`` elsewhere) and MidiBERT velocity bin."""
    from .plots import duration_class, metric_beats, metric_class, register_class

    return {"register": register_class(df["pitch"].to_numpy()), "metric": metric_class(metric_beats(df)),
            "duration": duration_class(df["duration_q"].to_numpy()), "role": _role_class(piece),
            "velocity": _velocity_class(df["velocity"].to_numpy())}


def class_order(grouping: str) -> list[str]:
    """The musical order of a grouping's classes (register low to high, etc.)."""
    from .data import VELOCITY_CLASSES
    from .plots import DURATION_ORDER, METRIC_ORDER, REGISTER_EDGES

    return {"register": [e[2] for e in REGISTER_EDGES], "metric": list(METRIC_ORDER),
            "duration": list(DURATION_ORDER), "role": ["melody", "bridge", "accompaniment", "other"],
            "velocity": list(VELOCITY_CLASSES)}.get(grouping, [])


def class_table(values: Mapping[str, np.ndarray], classes: np.ndarray, order: Sequence[str] = ()
                ) -> list[dict[str, Any]]:
    """Per class: ``n`` and the mean of every array in ``values`` (bool arrays -> fractions).
    Classes come in ``order`` first, then any others sorted; absent classes are left out."""
    rows = []
    present = {str(x) for x in classes}
    for c in [o for o in order if o in present] + sorted(present - set(order)):
        sel = np.asarray([str(x) == c for x in classes])
        row: dict[str, Any] = {"class": c, "n": int(sel.sum())}
        for k, v in values.items():
            vv = np.asarray(v, dtype=np.float64)[sel]
            vv = vv[np.isfinite(vv)]
            row[k] = float(vv.mean()) if vv.size else None
        rows.append(row)
    return rows


def spearman(x: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    from scipy import stats as st

    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return {"rho": None, "p": None, "n": int(ok.sum())}
    r = st.spearmanr(x[ok], y[ok])
    return {"rho": float(r.statistic), "p": float(r.pvalue), "n": int(ok.sum())}


def freeze_history(snapshots: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """How the frozen set changes: per snapshot (in epoch order) the frozen fraction, the
    Jaccard overlap with the previous and with the last snapshot, and the share of the
    previous snapshot's frozen notes still frozen (``kept``)."""
    snaps = sorted(snapshots, key=lambda s: s["epoch"])

    def vec(s):
        names = sorted(s["flags"])
        return names, (np.concatenate([s["flags"][n] for n in names]) if names else np.zeros(0, bool))

    vecs = [vec(s) for s in snaps]
    last = vecs[-1] if vecs else None
    out = []
    prev = None
    for s, (names, v) in zip(snaps, vecs):
        row = {"epoch": s["epoch"], "step": s["step"], "n_notes": int(v.size), "n_frozen": int(v.sum()),
               "frozen_frac": float(v.mean()) if v.size else 0.0,
               "jaccard_prev": None, "kept_from_prev": None, "jaccard_last": None}
        if prev is not None and prev[0] == names and prev[1].size == v.size:
            inter = float((prev[1] & v).sum())
            union = float((prev[1] | v).sum())
            row["jaccard_prev"] = inter / union if union else None
            row["kept_from_prev"] = inter / float(prev[1].sum()) if prev[1].sum() else None
        if last is not None and last[0] == names and last[1].size == v.size:
            union = float((last[1] | v).sum())
            row["jaccard_last"] = float((last[1] & v).sum()) / union if union else None
        out.append(row)
        prev = (names, v)
    return out


def note_context(df, note: int, piece: Any, span_q: float = 4.0, max_notes: int = 80) -> dict[str, Any]:
    """The notes around ``note`` (onsets within ``span_q`` quarters), for a small piano roll."""
    row = df.loc[df["note"] == note].iloc[0]
    t0 = float(row["onset_q"])
    near = df[(df["onset_q"] >= t0 - span_q) & (df["onset_q"] <= t0 + span_q)]
    near = near.iloc[np.argsort(np.abs(near["onset_q"].to_numpy() - t0), kind="stable")[:max_notes]]
    near = near.sort_values(["onset_q", "pitch"])
    cols = [c for c in ("note", "pitch", "velocity", "track", "onset_q", "duration_q", "bar", "beat", "score",
                        "frozen", "picked") if c in near.columns]
    bars = np.asarray(getattr(piece, "bar_starts_q", np.zeros(0)), dtype=float)
    bars = bars[(bars >= t0 - span_q - 4) & (bars <= t0 + span_q)]
    return {"notes": [{c: _py(r[c]) for c in cols} for _, r in near.iterrows()],
            "bar_starts_q": [float(b) for b in bars],
            "track_names": [str(n) for n in getattr(piece, "track_names", [])]}


def _py(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    return x


# ============================================================================ summary + RESULTS.md

def _best_row(rows: Sequence[Mapping[str, Any]], model: str, mask: bool, task: str) -> Mapping[str, Any] | None:
    for r in rows:
        if r["model"] == model and r["mask_ft"] == mask and r["task"] == task and abs(r["fraction"] - 1) < 1e-9:
            return r
    return None


def _fmt_minutes(s: float | None) -> str:
    if s is None:
        return "—"
    return f"{s / 60:.1f} min" if s < 5400 else f"{s / 3600:.2f} h"


def study_summary(results: Mapping[str, Any]) -> list[str]:
    """Three lines a manager can read: accuracy gained, what it cost, where the model still errs.

    ``results`` = the dict of ``results.json``. Line 1 compares the adversarial model (mask
    fine-tuning on) with no pre-training and with random masks (mean test accuracy over
    tasks, and the paired test); line 2 gives pre-training steps, tokens, total wall time
    and peak memory; line 3 names the weakest task, its most frequent confusion and the
    note class the masker scores highest.
    """
    agg = results.get("finetune", {}).get("rows", [])
    tasks = list(results.get("tasks", []))
    deltas_none, deltas_rand = [], []
    for t in tasks:
        a = _best_row(agg, "adversarial", True, t)
        n = _best_row(agg, "none", True, t)
        r = _best_row(agg, "random", True, t)
        if a and n and a["test_acc"]["mean"] is not None and n["test_acc"]["mean"] is not None:
            deltas_none.append((t, a["test_acc"]["mean"] - n["test_acc"]["mean"]))
        if a and r and a["test_acc"]["mean"] is not None and r["test_acc"]["mean"] is not None:
            deltas_rand.append((t, a["test_acc"]["mean"] - r["test_acc"]["mean"]))
    if deltas_none:
        mean_none = float(np.mean([d for _, d in deltas_none]))
        per = ", ".join(f"{t} {100 * d:+.1f}" for t, d in deltas_none)
        line1 = f"Accuracy: adversarial pre-training changes test accuracy by {100 * mean_none:+.1f} points " \
                f"on average over no pre-training ({per})"
        if deltas_rand:
            mean_rand = float(np.mean([d for _, d in deltas_rand]))
            pt = results.get("paired", {}).get("overall", {})
            sig = "significant" if pt.get("significant") else "not significant"
            p = pt.get("t_p")
            line1 += f", and by {100 * mean_rand:+.1f} over random masking (paired test over every task, " \
                     f"seed and mask setting: {sig}" + (f", p = {p:.2g})." if p is not None else ").")
        else:
            line1 += "."
    else:
        line1 = "Accuracy: no comparable fine-tuning results yet."
    b = results.get("budget", {})
    steps, tokens = b.get("pretrain_steps"), b.get("pretrain_tokens_per_model")
    wall = b.get("total_wall_s")
    peak = b.get("peak_rss_mb")
    line2 = (f"Cost: {steps or 0:,} pre-training steps ({(tokens or 0) / 1e6:.1f} M tokens) per model, "
             f"{_fmt_minutes(wall)} of {b.get('machine_short', 'this machine')} for the whole study, "
             f"peak memory {peak / 1024 if peak else 0:.1f} GiB"
             + (f" (GPU {b['cuda_peak_mb'] / 1024:.1f} GiB)" if b.get("cuda_peak_mb") else "") + ".")
    worst = None
    for t in tasks:
        a = _best_row(agg, "adversarial", True, t) or _best_row(agg, "none", True, t)
        if a and a["test_acc"]["mean"] is not None and (worst is None or a["test_acc"]["mean"] < worst[1]):
            worst = (t, a["test_acc"]["mean"], a)
    if worst is None:
        line3 = "Errors: no test results yet."
    else:
        t, acc, row = worst
        conf = results.get("finetune", {}).get("confusion", {}).get(t, {}).get(row["model"])
        classes = results.get("finetune", {}).get("classes", {}).get(t, [])
        line3 = f"Errors: weakest task {t} ({100 * acc:.1f}% with the {row['model']} model)"
        if conf and classes:
            c = np.asarray(conf, dtype=np.float64)
            off = c.copy()
            np.fill_diagonal(off, 0)
            if off.sum() > 0:
                i, j = np.unravel_index(int(off.argmax()), off.shape)
                share = off[i, j] / max(c[i].sum(), 1)
                line3 += f"; most frequent confusion: true {classes[i]} predicted as {classes[j]} " \
                         f"({share:.0%} of {classes[i]})"
        hi = results.get("analysis", {}).get("highlights", {}).get("highest_score_class")
        if hi:
            line3 += f"; the masker scores {hi['grouping']} class '{hi['class']}' notes highest " \
                     f"(mean score {hi['score']:.2f})"
        line3 += "."
    return [line1, line2, line3]


def render_results_md(results: Mapping[str, Any]) -> str:
    """RESULTS.md from ``results.json`` (every number comes from ``results``)."""
    tasks = list(results.get("tasks", []))
    agg = results.get("finetune", {}).get("rows", [])
    b = results.get("budget", {})
    preset = results.get("preset", {})
    L: list[str] = []
    L.append("# Reproduction study: adversarial vs random MLM pre-training")
    L.append("")
    L.append(f"Generated by `smu study --preset {preset.get('name')}` on {results.get('generated')} "
             "(smu_explain/study.py); do not edit by hand: re-run the study. All numbers: "
             "`docs/study/results.json`; schemas: `docs/study/README.md`.")
    L.append("")
    L.append("## Summary")
    L.append("")
    L += [f"- {s}" for s in results.get("summary", [])]
    L.append("")
    L.append("## Setup")
    L.append("")
    m = results.get("model", {})
    mach = results.get("machine", {})
    L.append(f"- Machine: {mach.get('cpu')} ({mach.get('cpu_count')} logical CPUs, torch {mach.get('torch')}, "
             f"{mach.get('torch_threads')} threads, GPU: {mach.get('gpu') or 'none'}).")
    L.append(f"- Model: {m.get('n_layers')} layers x {m.get('d_model')} (heads {m.get('n_heads')}, "
             f"FF {m.get('d_ff')}, {m.get('emb_dim')}-d embedding per attribute), "
             f"{(m.get('n_params') or 0) / 1e6:.2f} M parameters, windows of {m.get('max_len')} notes; "
             f"tokens: compound words {m.get('attributes')} (no velocity input). "
             "The paper: 12 x 768, 115 M parameters, sequence 1024.")
    L.append(f"- Pre-training budget per strategy: {b.get('pretrain_steps', 0):,} steps x batch "
             f"{b.get('pretrain_batch')} windows = {b.get('pretrain_tokens_per_model', 0) / 1e6:.1f} M real tokens "
             f"(~{b.get('pretrain_epochs', 0):.1f} epochs), lr {preset.get('pretrain_lr')}, "
             f"masking ratio {preset.get('mask_ratio')}, freeze every {preset.get('freeze_every')} epoch(s) "
             f"(top {preset.get('freeze_top')}, unfreeze {preset.get('unfreeze_frac')}), "
             f"one run per strategy (seed {preset.get('pretrain_seed')}).")
    val_note = (f", on at most {preset['ft_val_windows']} validation windows of whole pieces balanced over "
                "classes" if preset.get("ft_val_windows") else "")
    L.append(f"- Fine-tuning: {preset.get('ft_steps')} steps x batch {preset.get('ft_batch')}, "
             f"lr {preset.get('ft_lr')}, early stopping on validation accuracy (patience "
             f"{preset.get('ft_patience')} evaluations every {preset.get('ft_eval_every')} steps{val_note}); "
             f"seeds {preset.get('seeds')}; mask fine-tuning = 15% of the input tokens masked during training "
             "only (no masking at evaluation).")
    L.append(f"- Wall time of the whole study: {_fmt_minutes(b.get('total_wall_s'))} "
             f"(pre-training {_fmt_minutes(b.get('pretrain_wall_s'))}); peak memory "
             f"{(b.get('peak_rss_mb') or 0) / 1024:.2f} GiB RSS"
             + (f", GPU {b['cuda_peak_mb'] / 1024:.2f} GiB" if b.get("cuda_peak_mb") else "") + ".")
    est = results.get("estimate_minutes", {})
    if est:
        L.append(f"- The preset's estimate was {est.get('total', 0):.0f} min in all "
                 f"(pre-training {est.get('pretrain', 0):.0f} min) on {preset.get('machine')}.")
    L.append("")
    L.append("### Data")
    L.append("")
    data = results.get("data", {})
    rows = []
    for task, d in data.get("tasks", {}).items():
        sp = d.get("splits", {})
        rows.append([task] + [f"{sp.get(s, {}).get('pieces', 0)} / {sp.get(s, {}).get('notes', 0):,}"
                              for s in ("train", "val", "test")] + [d.get("split_info", "")])
    L.append(markdown_table(["task", "train pieces / notes", "val", "test", "split"], rows))
    L.append("")
    L.append("Composer classification uses ASAP's 8 most-performed composers, split by work: a stand-in "
             "for Pianist8 (not available), so its numbers do not compare directly with the published ones. "
             "EMOPIA is split by song; POP909 by song. Pre-training data: Pop1K7 + POP909 + ASAP + EMOPIA "
             "without any fine-tuning validation or test piece, with random transposition.")
    L.append("")
    if preset.get("notes"):
        L.append("### What this preset trims")
        L.append("")
        L += [f"- {n}" for n in preset["notes"]]
        L.append("")
    for metric, title in (("test_acc", "Test accuracy (%)"), ("test_macro_f1", "Test macro-F1 (%)")):
        L.append(f"## {title}, mean ± std over {len(preset.get('seeds', []))} fine-tuning seeds")
        L.append("")
        h, r = results_table(agg, metric, tasks)
        L.append(markdown_table(h, r))
        L.append("")
    L.append("## Published numbers (accuracy %, docs/METHOD.md section 8)")
    L.append("")
    h, r = published_table(tasks)
    L.append(markdown_table(h, r))
    L.append("")
    L.append("Ours beside theirs (test accuracy %, our mean over seeds; theirs from the paper's Table 3):")
    L.append("")
    rows = []
    paper = next(iter(PUBLISHED.values()))
    for (model, mask), pub in PUBLISHED_MATCH.items():
        ours = []
        for t in tasks:
            rr = _best_row(agg, model, mask, t)
            theirs = paper[pub].get(t)
            ours.append(f"{format_mean_std(rr['test_acc']) if rr else '—'} / "
                        f"{'—' if theirs is None else f'{theirs:.2f}'}")
        rows.append([row_label(model, mask), pub.strip()] + ours)
    L.append(markdown_table(["ours", "paper row"] + [f"{t} (ours / paper)" for t in tasks], rows))
    L.append("")
    L.append("## Does adversarial beat random masking at this scale?")
    L.append("")
    paired = results.get("paired", {})
    ov = paired.get("overall")
    if ov:
        L.append(f"Paired over tasks x seeds x mask settings (n = {ov['n']} pairs of test accuracies, "
                 f"adversarial - random): mean difference {100 * (ov['mean_diff'] or 0):+.2f} points, "
                 f"{ov['wins']} wins / {ov['losses']} losses / {ov['ties']} ties, paired t-test p = "
                 f"{_p(ov.get('t_p'))}, Wilcoxon p = {_p(ov.get('wilcoxon_p'))}.")
        L.append("")
        verdict = ("**Yes**: adversarial pre-training is significantly better than random masking here."
                   if ov["significant"] and ov["mean_diff"] > 0 else
                   "**No**: adversarial pre-training is significantly worse than random masking here."
                   if ov["significant"] else
                   "**Not shown**: at this scale the difference between adversarial and random masking is "
                   "not statistically significant.")
        L.append(verdict + " The seeds are fine-tuning seeds of one pre-training run per strategy, so this "
                           "tests fine-tuning variance only.")
        L.append("")
        rows = [[t, pt["n"], f"{100 * (pt['mean_diff'] or 0):+.2f}", _p(pt.get("t_p")), _p(pt.get("wilcoxon_p")),
                 "yes" if pt["significant"] else "no"] for t, pt in paired.get("per_task", {}).items()]
        L.append(markdown_table(["task", "pairs", "mean diff (points)", "t-test p", "Wilcoxon p", "significant"],
                                rows))
    else:
        L.append("No paired comparison (the adversarial or the random model is missing).")
    L.append("")
    L.append("## Data efficiency")
    L.append("")
    eff = results.get("efficiency", {})
    if eff:
        fr = sorted({p["fraction"] for e in eff.values() for c in e["curves"].values() for p in c})
        rows = []
        for t, e in eff.items():
            for model, pts in e["curves"].items():
                byf = {p["fraction"]: p for p in pts}
                rows.append([t, model] + [format_mean_std(byf.get(f)) for f in fr]
                            + [format_crossing(e["crossing"].get(model, {})) if model != "none" else "—"])
        L.append(markdown_table(["task", "model"] + [f"{f:.0%}" for f in fr]
                                + ["matches no-pre-training @100%"], rows))
        L.append("")
        L.append("Test accuracy (%) with a fraction of the labelled training pieces (mask fine-tuning on, same "
                 "steps and seeds). Last column: the fraction at which the model reaches the no-pre-training "
                 "model's mean accuracy with 100% of the data (linear interpolation between measured fractions).")
        img = _md_image(results, "data_efficiency")
        if img:
            L.append("")
            L.append(f"![data efficiency]({img})")
    else:
        L.append("Not run.")
    L.append("")
    L.append("## Cost of every stage")
    L.append("")
    rows = [[s, _fmt_minutes(c.get("wall_s")), f"{c.get('steps', 0):,}", f"{(c.get('tokens') or 0) / 1e6:.2f} M",
             f"{(c.get('peak_rss_mb') or 0):.0f}", f"{c['cuda_peak_mb']:.0f}" if c.get("cuda_peak_mb") else "—"]
            for s, c in results.get("cost", {}).items()]
    L.append(markdown_table(["stage", "wall", "steps", "tokens", "peak RSS (MiB)", "CUDA peak (MiB)"], rows))
    L.append("")
    L.append("Peak RSS: " + (results.get("cost_note") or "per stage"))
    L.append("")
    L.append("## Masker analysis")
    L.append("")
    ana = results.get("analysis", {})
    if ana:
        pps = ", ".join(f"{k} {v}" for k, v in (ana.get("pieces_per_source") or {}).items())
        L.append(f"Validation pieces per source: {pps}. Frozen here = the top "
                 f"{ana.get('freeze_top', 0.3):.0%} of a piece's notes by masker score (the freeze rule applied "
                 "once; the freeze book itself covers training pieces only).")
        L.append("")
        rows = [[src, _fmt_rho(s.get("spearman_random_loss")), _fmt_rho(s.get("spearman_own_loss")), s.get("n_notes")]
                for src, s in ana.get("sources", {}).items()]
        rows.append(["all", _fmt_rho(ana.get("spearman_random_loss")), _fmt_rho(ana.get("spearman_own_loss")),
                     ana.get("n_notes")])
        L.append(markdown_table(["source", "Spearman(score, random model's recovery loss)",
                                 "Spearman(score, adversarial model's own loss)", "notes"], rows))
        L.append("")
        for g, rowsg in ana.get("by_class", {}).items():
            if not rowsg:
                continue
            L.append(f"By {g}:")
            L.append("")
            L.append(markdown_table(["class", "notes", "mean score", "frozen", "random model's loss"],
                                    [[r["class"], r["n"], _f3(r.get("score")), _pct(r.get("frozen")),
                                      _f2(r.get("random_loss"))] for r in rowsg]))
            L.append("")
        hist = ana.get("freeze_history", [])
        if hist:
            L.append("Freeze book over training (adversarial run, training pieces):")
            L.append("")
            L.append(markdown_table(["epoch", "step", "frozen", "Jaccard with previous", "kept from previous",
                                     "Jaccard with last"],
                                    [[h["epoch"], h["step"], _pct(h["frozen_frac"]), _f2(h["jaccard_prev"]),
                                      _pct(h["kept_from_prev"]), _f2(h["jaccard_last"])] for h in hist]))
            L.append("")
        for name, alt in (("masker_spearman", "Spearman correlations"), ("masker_by_class", "score and frozen "
                          "share by note class"), ("masker_freeze_history", "frozen set over training")):
            img = _md_image(results, name)
            if img:
                L.append(f"![{alt}]({img})")
                L.append("")
        ex = ana.get("examples", [])
        if ex:
            L.append(f"Frozen notes from real pieces ({ana.get('examples_frozen_by')}):")
            L.append("")
            L.append(markdown_table(["piece", "note", "pitch", "onset (quarters)", "duration (q)", "score"],
                                    [[e["piece"], e["note"], e["pitch"], _f2(e["onset_q"]), _f2(e["duration_q"]),
                                      _f3(e["score"])] for e in ex]))
            L.append("")
            imgs = [_md_image(results, f"masker_example_{i + 1}") for i in range(len(ex))]
            if any(imgs):
                L.append(" ".join(f"![frozen note {i + 1}]({img})" for i, img in enumerate(imgs) if img))
                L.append("")
    else:
        L.append("Not run.")
    L.append("")
    return "\n".join(L)


def _md_image(results: Mapping[str, Any], name: str) -> str | None:
    """The figure ``name`` as a path relative to RESULTS.md (in docs/): its PNG, else its HTML."""
    files = results.get("figures", {}).get(name, [])
    for ext in (".png", ".html"):
        for f in files:
            if f.endswith(ext):
                return f[len("docs/"):] if f.startswith("docs/") else f
    return None


def _p(p: float | None) -> str:
    return "—" if p is None else f"{p:.3g}"


def _f2(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def _f3(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def _fmt_rho(s: Mapping[str, Any] | None) -> str:
    if not s or s.get("rho") is None:
        return "—"
    return f"{s['rho']:+.3f} (p = {s['p']:.2g}, n = {s['n']})"


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
        from .data import data_root

        return data_root()

    def tokenizer(self):
        if "tok" not in self._cache:
            from .data import make_tokenizer

            self._cache["tok"] = make_tokenizer("velocity", max_len=self.preset.max_len)
        return self._cache["tok"]

    def token_cache(self):
        from .data import TokenCache, cache_dir

        d = self.paths.cache_dir or (self.paths.runs_dir / "token_cache" if self.preset.fixture_data else cache_dir())
        return TokenCache(d)

    def task_data(self, task: str):
        """``BuiltTask`` of ``task`` (pretrain or a fine-tuning task), built once per process."""
        key = f"task:{task}"
        if key not in self._cache:
            from .data import build_datasets, build_task

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
        from .model import ModelConfig

        tok = self.tokenizer()
        return ModelConfig(vocab_sizes=list(tok.vocab_sizes), attributes=list(tok.attributes),
                           max_len=self.preset.max_len, **self.preset.model)

    def pretrain_dir(self, strategy: str) -> Path:
        return self.paths.runs_dir / "pretrain" / strategy

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
                started = _now()
                try:
                    with CostMeter() as meter:
                        result = getattr(self, f"_run_{st.kind}")(st, meter)
                except BaseException as e:
                    log.error(f"    {st.name}: {type(e).__name__}: {e} (re-run to resume)")
                    raise
                cost = meter.to_dict()
                doc = {"format": RESULT_FORMAT, "stage": st.name, "kind": st.kind, "preset": self.preset.name,
                       "started": started, "finished": _now(), "cost": cost, "machine": machine_info(),
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
            marker.write_text(_now() + "\n")
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
    def _pretrain_config(self, run_dir: Path):
        from .trainer import TrainConfig

        p = self.preset
        return TrainConfig(steps=p.pretrain_steps, batch_size=p.pretrain_batch, eval_batch_size=p.eval_batch,
                           lr=p.pretrain_lr, warmup_steps=p.pretrain_warmup, schedule="cosine", min_lr_ratio=0.1,
                           seed=p.pretrain_seed, device=self.device, bf16=p.bf16,
                           checkpoint_every=max(1, p.pretrain_steps // max(4 * p.pretrain_chunks, 1)),
                           eval_every=p.pretrain_eval_every, eval_batches=p.pretrain_eval_batches,
                           log_every=max(1, min(50, p.pretrain_steps // 20)), out_dir=str(run_dir))

    def _run_pretrain(self, st: Stage, meter: CostMeter) -> dict[str, Any]:
        import torch

        from .explain import recovery_accuracy
        from .masker import make_strategy
        from .model import MidiBert
        from .errors import SMUTrainingError
        from .trainer import (CHECKPOINT_NAME, ProgressFile, Trainer, TqdmProgress, install_stop_signals,
                              load_train_state)

        p = self.preset
        strat, k, n = st.param("strategy"), st.param("chunk"), st.param("chunks")
        run_dir = self.pretrain_dir(strat)
        target = int(round(k * p.pretrain_steps / n))
        prev_target = int(round((k - 1) * p.pretrain_steps / n))
        ledger_path = run_dir / "ledger.json"
        ledger = read_json(ledger_path) if ledger_path.is_file() else {"chunks": {}}
        ckpt = run_dir / CHECKPOINT_NAME
        ck_step = int(load_train_state(ckpt)["step"]) if ckpt.is_file() else None
        rec = ledger["chunks"].get(str(k))
        if rec is not None and ck_step is not None and ck_step >= target:
            # this chunk's training is already in the checkpoint (its result was deleted): re-derive it
            return dict(rec, reused=True, note="training of this chunk already in the run's checkpoint; "
                                               "result re-derived from the run's ledger")
        # the stage's STARTED marker tells an interrupted stage (resume) from a fresh one
        marker = self.paths.runs_dir / "stages" / st.name / "STARTED"
        resuming = marker.exists()
        self._stage_dir(st)
        if k == 1:
            if not (resuming and ck_step is not None):
                if run_dir.exists():
                    shutil.rmtree(run_dir)
                ck_step, ledger = None, {"chunks": {}}
        elif ck_step is None or ck_step < prev_target:
            raise SMUInputError(ckpt, f"{st.name} resumes the run at step {prev_target}, but the checkpoint "
                                      f"is at {ck_step}; run {pretrain_stage_names(p, strat)[k - 2]} first")
        built = self.task_data("pretrain")
        train, val = built.datasets["train"], built.datasets["val"]
        torch.manual_seed(p.pretrain_seed)
        model = MidiBert(self.model_config())
        strategy = make_strategy(strat, ratio=p.mask_ratio, seed=p.pretrain_seed, freeze_every=p.freeze_every,
                                 freeze_top=p.freeze_top, unfreeze_frac=p.unfreeze_frac)
        counter = TokenCounter(run_dir / f"counts_chunk{k}.json")
        resumed_within = ck_step is not None and prev_target < ck_step < target and counter.load(ck_step)
        cbs = [ProgressFile(run_dir / "progress.jsonl"), counter, StopAtStep(target)]
        if strat == "adversarial":
            cbs.append(FreezeSnapshots(run_dir / "freeze_snapshots"))
        if not self.quiet:
            cbs.append(TqdmProgress())
        trainer = Trainer(model, strategy, train, val if len(val) else None, self._pretrain_config(run_dir), cbs)
        trainer.save_extra = {"tokenizer": self.tokenizer().config.to_dict(),
                              "strategy": strategy.config.to_dict() if hasattr(strategy, "config") else strat,
                              "study": {"preset": p.name, "strategy": strat}}
        if ck_step is not None and ck_step >= target:
            # trained to the chunk's end before (stopped after its final checkpoint, before its
            # result was written): nothing to train; the counts were saved with that checkpoint
            counter.load(ck_step)
            state = load_train_state(ckpt)
            model = MidiBert.from_pretrained(run_dir)  # the weights saved with that checkpoint
            trainer.step, trainer.epoch = int(state["step"]), int(state["epoch"])
            res = {"status": "done", "message": f"already trained to step {ck_step} (checkpoint)",
                   "metrics": dict(state.get("last_metrics") or {})}
            events = [load_freeze_snapshot(f)["stats"]
                      for f in sorted((run_dir / "freeze_snapshots").glob(SNAPSHOT_GLOB))]
        else:
            events = None
            try:  # SIGTERM / Ctrl-C: checkpoint, then stop (only possible in the main thread)
                restore = install_stop_signals(trainer)
            except ValueError:
                restore = (lambda: None)
            try:
                res = trainer.fit(resume=ck_step is not None and ck_step > 0)
            finally:
                restore()
            if res["status"] != "done":
                raise SMUTrainingError(f"{st.name} stopped at step {trainer.step} ({res['message']}); the "
                                       f"checkpoint in {run_dir} is kept: run the study again to resume")
        meter.add(counter.tokens, counter.steps)
        wall = counter.wall_s  # includes the time before an interruption of this chunk, if resumed
        rec = {"strategy": strat, "chunk": k, "chunks": n, "from_step": prev_target, "to_step": trainer.step,
               "target_step": target, "steps": counter.steps, "tokens": counter.tokens, "wall_s": wall,
               "resumed_within_chunk_at": ck_step if resumed_within else None,
               "epoch": trainer.epoch, "status": res["status"], "message": res["message"],
               "val_metrics": res["metrics"], "run_dir": str(run_dir),
               "freeze_events": events if events is not None else
               list(getattr(getattr(strategy, "freeze_book", None), "history", []) or [])}
        if k == n:
            rec["n_params"] = int(sum(q.numel() for q in model.parameters()))
            rec["recovery_accuracy"] = recovery_accuracy(model, val, ratio=p.mask_ratio, seed=0,
                                                         batch_size=p.eval_batch) if len(val) else {}
            prev = [ledger["chunks"][c] for c in sorted(ledger["chunks"], key=int) if int(c) < k]
            rec["total"] = {"steps": sum(c["steps"] for c in prev) + counter.steps,
                            "tokens": sum(c["tokens"] for c in prev) + counter.tokens,
                            "wall_s": sum(c["wall_s"] for c in prev) + wall,
                            "epochs": trainer.step / max(trainer.batches_per_epoch, 1),
                            "train_windows": len(train), "batches_per_epoch": trainer.batches_per_epoch}
        ledger["chunks"][str(k)] = rec
        write_json(ledger_path, ledger)
        return rec

    # ------------------------------------------------------------------ fine-tuning
    def _encoder_model(self, task: str, classes: Sequence[str], model_name: str, seed: int):
        """The fine-tuning model: a pre-trained encoder (``finetune.build_model``) or, for
        ``none``, a fresh encoder of the study's size (build_model only knows named sizes)."""
        import torch

        from .finetune import FineTuneModel, build_model
        from .model import MidiBert

        if model_name == "none":
            torch.manual_seed(seed)
            enc = MidiBert(self.model_config())
            torch.manual_seed(seed + 1)
            return FineTuneModel(enc, task, classes, info={"pretrained": None})
        return build_model(task, classes, pretrained=self.pretrain_dir(model_name), seed=seed)

    def finetune_run(self, task: str, model_name: str, mask_ft: bool, seed: int, fraction: float,
                     stage_dir: Path) -> dict[str, Any]:
        """One fine-tuning run (cached in ``stage_dir`` while the stage is in progress)."""
        from .finetune import finetune
        from .trainer import TrainConfig

        p = self.preset
        name = f"{model_name}-mask{'on' if mask_ft else 'off'}-s{seed}-f{int(round(fraction * 100)):03d}"
        run_dir = stage_dir / name
        done = run_dir / "study_run.json"
        if done.is_file():
            return read_json(done)
        built = self.task_data(task)
        train = subset_dataset(built.datasets["train"], fraction, seed)
        classes = built.task.classes
        model = self._encoder_model(task, classes, model_name, seed)
        bs = max(1, min(p.ft_batch, len(train)))
        cfg = TrainConfig(steps=p.ft_steps, batch_size=bs, eval_batch_size=p.eval_batch, lr=p.ft_lr,
                          warmup_steps=p.ft_warmup, schedule="linear", seed=seed, device=self.device, bf16=p.bf16,
                          checkpoint_every=0, eval_every=p.ft_eval_every, eval_batches=p.ft_eval_batches,
                          log_every=max(1, p.ft_steps // 10), out_dir=str(run_dir / "train"))
        counter = TokenCounter()
        t0 = time.perf_counter()
        val = validation_subset(built.datasets["val"], p.ft_val_windows)
        res = finetune(task, model, train, val, cfg, test_set=built.datasets["test"],
                       mask_ratio=p.mask_ratio if mask_ft else 0.0, eval_mask=False, patience=p.ft_patience,
                       callbacks=[counter], out_dir=run_dir)
        wall = time.perf_counter() - t0
        test = res.get("test", {})
        rec = {"task": task, "model": model_name, "mask_ft": bool(mask_ft), "seed": int(seed),
               "fraction": float(fraction), "n_train_pieces": len(train.pieces), "n_train_windows": len(train),
               "n_val_pieces": len(val.pieces), "n_val_windows": len(val),
               "batch_size": bs, "steps": counter.steps, "tokens": counter.tokens, "wall_s": wall,
               "best_step": res.get("best_step"), "stopped": res.get("stopped"),
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

    def _run_finetune(self, st: Stage, meter: CostMeter) -> dict[str, Any]:
        p = self.preset
        specs = [(m, mk, s, 1.0) for m in p.ft_models for mk in p.mask_modes for s in p.seeds]
        runs = self._runs(st, meter, specs)
        built = self.task_data(st.param("task"))
        return {"task": st.param("task"), "classes": built.task.classes, "split_info": built.task.split_info,
                "runs": runs, "rows": aggregate_runs(runs)}

    def _run_efficiency(self, st: Stage, meter: CostMeter) -> dict[str, Any]:
        p = self.preset
        task = st.param("task")
        specs = [(m, True, s, f) for m in p.efficiency_models for f in p.fractions if f < 1.0 for s in p.seeds]
        runs = self._runs(st, meter, specs)
        full = [r for r in read_json(self.paths.result(f"finetune-{task}"))["result"]["runs"]
                if r["mask_ft"] and r["model"] in p.efficiency_models and r["seed"] in p.seeds]
        return {"task": task, "runs": runs, "full_data_runs_from": f"finetune-{task}",
                **efficiency_summary(runs + full, p.efficiency_models)}

    # ------------------------------------------------------------------ analysis
    def _run_analysis(self, st: Stage, meter: CostMeter) -> dict[str, Any]:
        from .data import build_task
        from .model import MidiBert

        p = self.preset
        tok = self.tokenizer()
        adv = MidiBert.from_pretrained(self.pretrain_dir("adversarial")).eval()
        rnd = MidiBert.from_pretrained(self.pretrain_dir("random")).eval()
        pieces = []
        for source, task in ANALYSIS_SOURCES:
            if task in p.tasks:
                refs = build_task(task, self.data_root, seed=0, asap_source=p.asap_source).splits["val"]
                pieces.append((source, spread_refs(refs, p.analysis_pieces)))
        snaps = sorted((self.pretrain_dir("adversarial") / "freeze_snapshots").glob(SNAPSHOT_GLOB))
        snapshots = [load_freeze_snapshot(s) for s in snaps]
        pre_refs = {r.name: r for r in build_task("pretrain", self.data_root, seed=0,
                                                  asap_source=p.asap_source).splits["train"]}
        return masker_analysis(adv, rnd, tok, pieces, snapshots=snapshots, pretrain_refs=pre_refs,
                               ratio=p.mask_ratio, freeze_top=p.freeze_top, n_examples=p.analysis_examples)

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
        _atomic_write(self.paths.results_md, render_results_md(results))
        return {"results": str(self.paths.results_dir / "results.json"), "results_md": str(self.paths.results_md),
                "figures": figs, "summary": results["summary"]}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rel(path: str | Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def subset_dataset(ds, fraction: float, seed: int):
    """A ``TokenDataset`` with ``fraction`` of ``ds``'s pieces (at least 1).

    Pieces are ordered by a permutation from ``default_rng(seed)``, so smaller fractions
    are prefixes of larger ones (nested subsets). Sequence tasks are stratified: each
    class keeps round(fraction * its pieces) pieces, at least 1. ``fraction`` = 1 returns ``ds``.
    """
    from .data import TokenDataset

    if fraction >= 1.0:
        return ds
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    n = len(ds.pieces)
    order = np.random.default_rng([int(seed), 7]).permutation(n)
    if ds.level == "sequence":
        keep: list[int] = []
        labels = np.asarray([-1 if p.label is None else p.label for p in ds.pieces])
        for c in sorted(set(labels.tolist())):
            idx = [i for i in order if labels[i] == c]
            keep += idx[: max(1, int(round(fraction * len(idx))))]
        keep = sorted(keep, key=lambda i: int(np.flatnonzero(order == i)[0]))
    else:
        keep = list(order[: max(1, int(round(fraction * n)))])
    return TokenDataset([ds.pieces[i] for i in keep], ds.level, ds.classes, ds.tokenizer, ds.augment, ds.seed)


def validation_subset(ds, max_windows: int | None, seed: int = 0):
    """The validation pieces used for early stopping: all of ``ds`` when it has at most
    ``max_windows`` windows (or ``max_windows`` is None), else whole pieces taken in a
    seeded random order, round-robin over the classes for sequence tasks (so every class
    is represented), while they fit in ``max_windows`` windows (at least one piece).
    A plain prefix of the (name-sorted) split would hold only the first composers."""
    from .data import TokenDataset

    if max_windows is None or len(ds) <= max_windows:
        return ds
    order = list(np.random.default_rng([int(seed), 11]).permutation(len(ds.pieces)))
    if ds.level == "sequence":
        by_label: dict[int, list[int]] = {}
        for i in order:
            by_label.setdefault(-1 if ds.pieces[i].label is None else int(ds.pieces[i].label), []).append(i)
        lists = [by_label[k] for k in sorted(by_label)]
        order = [lst[d] for d in range(max(len(x) for x in lists)) for lst in lists if d < len(lst)]
    keep, total = [], 0
    for i in order:
        w = ds.pieces[i].n_windows
        if keep and total + w > max_windows:
            continue
        keep.append(i)
        total += w
    return TokenDataset([ds.pieces[i] for i in sorted(keep)], ds.level, ds.classes, ds.tokenizer, False, ds.seed)


def spread_refs(refs: Sequence[Any], n: int) -> list[Any]:
    """Up to ``n`` refs taken round-robin over their groups (groups and refs in name order):
    one piece per song / work first, so a few analysed pieces cover as many groups as possible."""
    by_group: dict[str, list[Any]] = {}
    for r in sorted(refs, key=lambda r: r.name):
        by_group.setdefault(r.group, []).append(r)
    lists = [by_group[g] for g in sorted(by_group)]
    out: list[Any] = []
    depth = 0
    while len(out) < n and any(depth < len(lst) for lst in lists):
        out += [lst[depth] for lst in lists if depth < len(lst)][: n - len(out)]
        depth += 1
    return out


def efficiency_summary(runs: Sequence[Mapping[str, Any]], models: Sequence[str]) -> dict[str, Any]:
    """Curves (mean ± std test accuracy per fraction and model), the target (no-pre-training
    mean accuracy at 100%) and each pre-trained model's crossing fraction."""
    curves: dict[str, list[dict[str, Any]]] = {}
    for m in models:
        pts = []
        for f in sorted({float(r["fraction"]) for r in runs if r["model"] == m}):
            vals = [r["test_acc"] for r in runs if r["model"] == m and abs(float(r["fraction"]) - f) < 1e-9]
            pts.append({"fraction": f, **mean_std(vals), "values": vals})
        curves[m] = pts
    none_full = [p for p in curves.get("none", []) if abs(p["fraction"] - 1.0) < 1e-9]
    target = none_full[0]["mean"] if none_full else None
    crossing = {m: crossing_fraction([q["fraction"] for q in pts], [q["mean"] for q in pts], target)
                for m, pts in curves.items() if m != "none"}
    return {"curves": curves, "target": target, "crossing": crossing}


def masker_analysis(adv_model, random_model, tokenizer, pieces: Sequence[tuple[str, Sequence[Any]]], *,
                    snapshots: Sequence[Mapping[str, Any]] = (), pretrain_refs: Mapping[str, Any] | None = None,
                    ratio: float = 0.15, freeze_top: float = 0.3, n_examples: int = 5) -> dict[str, Any]:
    """The masker analysis (schema: docs/study/README.md, ``analysis.json``).

    ``pieces`` = [(source name, [PieceRef, ...])] of validation pieces. For each piece
    ``explain_piece`` runs on the adversarial model (masker ``score``, ``frozen`` = top
    ``freeze_top`` by score, ``picked``, its own recovery loss) and on the random model
    (per-note recovery loss = sum over attributes of ``loss_<a>``, each note masked once).
    Reports Spearman(score, random model's loss) overall and per source, tables by note
    class (``GROUPINGS``), the freeze-book history (``freeze_history``) and
    ``n_examples`` frozen notes with their context: from the last freeze snapshot on
    POP909/ASAP/EMOPIA training pieces when there is one, else from the validation pieces.
    """
    from .data import read_ref
    from .explain import explain_piece, masker_view
    from .masker import FreezeBook

    attrs = list(tokenizer.attributes)
    all_score, all_rl, all_own = [], [], []
    by_group: dict[str, dict[str, list]] = {g: {"cls": [], "score": [], "frozen": [], "picked": [],
                                                "random_loss": []} for g in GROUPINGS}
    sources: dict[str, Any] = {}
    val_tables = []
    skipped = []
    for source, refs in pieces:
        s_score, s_rl, s_own = [], [], []
        n_p = 0
        for ref in refs:
            try:
                piece = read_ref(ref, tokenizer)
            except SMUInputError as e:
                skipped.append({"path": str(ref.path), "reason": e.reason})
                continue
            if len(piece.pitch) == 0:
                continue
            da = explain_piece(adv_model, tokenizer, piece, ratio=ratio, freeze_top=freeze_top, seed=0)
            dr = explain_piece(random_model, tokenizer, piece, ratio=ratio, freeze_top=freeze_top, seed=0)
            rl = dr[[f"loss_{a}" for a in attrs]].sum(axis=1).to_numpy()
            own = da[[f"loss_{a}" for a in attrs]].sum(axis=1).to_numpy()
            sc = da["score"].to_numpy()
            s_score.append(sc); s_rl.append(rl); s_own.append(own)
            cls = note_classes(da, piece)
            for g in GROUPINGS:
                if g == "role" and source != "pop909":
                    continue
                by_group[g]["cls"].append(cls[g])
                by_group[g]["score"].append(sc)
                by_group[g]["frozen"].append(da["frozen"].to_numpy())
                by_group[g]["picked"].append(da["picked"].to_numpy())
                by_group[g]["random_loss"].append(rl)
            val_tables.append((source, ref, piece, da))
            n_p += 1
        cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0))
        sources[source] = {"pieces": n_p, "n_notes": int(sum(len(x) for x in s_score)),
                           "spearman_random_loss": spearman(cat(s_score), cat(s_rl)),
                           "spearman_own_loss": spearman(cat(s_score), cat(s_own)),
                           "mean_score": float(cat(s_score).mean()) if s_score else None}
        all_score += s_score; all_rl += s_rl; all_own += s_own
    cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0))
    by_class = {}
    for g, d in by_group.items():
        if not d["cls"]:
            by_class[g] = []
            continue
        by_class[g] = class_table({k: cat(d[k]) for k in ("score", "frozen", "picked", "random_loss")},
                                  cat(d["cls"]), class_order(g))
    out: dict[str, Any] = {
        "ratio": ratio, "freeze_top": freeze_top, "pieces_per_source": {s: v["pieces"] for s, v in sources.items()},
        "n_notes": int(sum(len(x) for x in all_score)),
        "spearman_random_loss": spearman(cat(all_score), cat(all_rl)),
        "spearman_own_loss": spearman(cat(all_score), cat(all_own)),
        "sources": sources, "by_class": by_class, "skipped": skipped,
        "freeze_history": freeze_history(snapshots) if snapshots else [],
    }
    # highlights for the summary: the class with the highest mean score (classes with >= 20 notes, or any)
    best = None
    for g, rows in by_class.items():
        for r in rows:
            if r["score"] is None or r["n"] < min(20, max(1, out["n_notes"] // 50)):
                continue
            if best is None or r["score"] > best["score"]:
                best = {"grouping": g, "class": r["class"], "score": r["score"], "n": r["n"]}
    out["highlights"] = {"highest_score_class": best}
    # examples
    examples: list[dict[str, Any]] = []
    if snapshots and pretrain_refs:
        last = max(snapshots, key=lambda s: s["epoch"])
        out["examples_frozen_by"] = f"the freeze book after epoch {last['epoch']} (step {last['step']}), " \
                                    "training pieces"
        cands = [nm for nm in sorted(last["flags"]) if nm in pretrain_refs
                 and pretrain_refs[nm].source in ("pop909", "asap", "emopia") and last["flags"][nm].any()]
        rng = np.random.default_rng(0)
        by_src: dict[str, list[str]] = {}
        for nm in cands:
            by_src.setdefault(pretrain_refs[nm].source, []).append(nm)
        order: list[str] = []
        lists = [list(rng.permutation(v)) for _, v in sorted(by_src.items())]
        while any(lists) and len(order) < 4 * n_examples:
            for lst in lists:
                if lst:
                    order.append(str(lst.pop(0)))
        for nm in order:
            if len(examples) >= n_examples:
                break
            ref = pretrain_refs[nm]
            try:
                piece = read_ref(ref, tokenizer)
            except SMUInputError:
                continue
            flags = last["flags"][nm]
            book = FreezeBook()
            fr = np.zeros(len(piece.pitch), bool)
            fr[: min(len(fr), len(flags))] = flags[: len(fr)]
            book.flags = {0: fr}
            # scores from the adversarial model; frozen = the book's flags; picked = top ratio of the rest
            df = masker_view(adv_model, tokenizer, piece, ratio=ratio, freeze_book=book, piece_id=0)
            if not fr.any():
                continue
            note = int(df.loc[fr, "score"].idxmax())
            examples.append(_example(ref, piece, df, note, source=ref.source, split="pretrain train"))
    if not examples:
        out["examples_frozen_by"] = f"the top-{freeze_top:.0%} rule on validation pieces (no freeze snapshot)"
        for source, ref, piece, da in val_tables:
            if len(examples) >= n_examples:
                break
            if not da["frozen"].any():
                continue
            note = int(da.loc[da["frozen"], "score"].idxmax())
            examples.append(_example(ref, piece, da, note, source=source, split="val"))
    out["examples"] = examples
    return out


def _example(ref, piece, df, note: int, source: str, split: str) -> dict[str, Any]:
    row = df.loc[df["note"] == note].iloc[0]
    ctx = note_context(df, note, piece)
    cls = note_classes(df.loc[[note]] if note in df.index else df.iloc[[0]], piece.subset([note]))
    return {"piece": ref.name, "path": str(ref.path), "source": source, "split": split, "note": int(note),
            "pitch": int(row["pitch"]), "velocity": int(row["velocity"]), "track": int(row["track"]),
            "onset_q": float(row["onset_q"]), "duration_q": float(row["duration_q"]),
            "bar": int(row["bar"]), "beat": float(row["beat"]), "score": float(row["score"]),
            "classes": {g: str(v[0]) for g, v in cls.items()}, "context": ctx}


def build_results(paths: StudyPaths, preset: StudyPreset, stages: Sequence[Stage]) -> dict[str, Any]:
    """Everything in ``results.json`` from the stage results present (schema: docs/study/README.md)."""
    def res(name: str) -> dict[str, Any] | None:
        f = paths.result(name)
        return read_json(f) if f.is_file() else None

    results: dict[str, Any] = {"format": RESULT_FORMAT, "generated": _now(), "preset": preset.to_dict(),
                               "tasks": list(preset.tasks), "estimate_minutes": estimate_minutes(preset),
                               "machine": machine_info()}
    data = res("data")
    results["data"] = data["result"] if data else {}
    # cost of every stage
    cost, machines = {}, {}
    for st in stages:
        r = res(st.name)
        if r and st.kind != "report":
            cost[st.name] = r["cost"]
            machines[st.name] = r.get("machine", {})
    results["cost"] = cost
    srcs = {c.get("peak_rss_source") for c in cost.values()}
    results["cost_note"] = ", ".join(sorted(s for s in srcs if s)) or "n/a"
    first = next(iter(machines.values()), None)
    if first:
        results["machine"] = first
    # model + budget
    pre_final = {}
    for s in preset.strategies:
        r = res(pretrain_stage_names(preset, s)[-1])
        if r:
            pre_final[s] = r["result"]
    tok_attrs = results["data"].get("attributes", [])
    n_params = next((r.get("n_params") for r in pre_final.values() if r.get("n_params")), None)
    results["model"] = {**preset.model, "max_len": preset.max_len, "n_params": n_params, "attributes": tok_attrs}
    results["pretrain"] = {s: {"total": r.get("total"), "recovery_accuracy": r.get("recovery_accuracy"),
                               "val_metrics": r.get("val_metrics"), "freeze_events": r.get("freeze_events")}
                           for s, r in pre_final.items()}
    totals = [r.get("total") or {} for r in pre_final.values()]
    pre_wall = sum(c["wall_s"] for n, c in cost.items() if n.startswith("pretrain-"))
    all_peak = [c.get("peak_rss_mb") for c in cost.values() if c.get("peak_rss_mb") is not None]
    all_cuda = [c.get("cuda_peak_mb") for c in cost.values() if c.get("cuda_peak_mb") is not None]
    mach = results["machine"]
    results["budget"] = {
        "pretrain_steps": preset.pretrain_steps, "pretrain_batch": preset.pretrain_batch,
        "pretrain_tokens_per_model": max((t.get("tokens", 0) for t in totals), default=0),
        "pretrain_epochs": max((t.get("epochs", 0) for t in totals), default=0),
        "pretrain_wall_s": pre_wall, "total_wall_s": sum(c["wall_s"] for c in cost.values()),
        "finetune_tokens": sum(c.get("tokens", 0) for n, c in cost.items() if not n.startswith("pretrain-")),
        "peak_rss_mb": max(all_peak) if all_peak else None, "cuda_peak_mb": max(all_cuda) if all_cuda else None,
        "machine_short": (f"{mach.get('gpu')}" if mach.get("gpu") else f"{mach.get('cpu_count')}-CPU "
                                                                     f"{mach.get('cpu')}"),
    }
    # fine-tuning
    all_runs, classes, confusion = [], {}, {}
    for t in preset.tasks:
        r = res(f"finetune-{t}")
        if not r:
            continue
        all_runs += r["result"]["runs"]
        classes[t] = r["result"]["classes"]
        confusion[t] = {}
        for m in preset.ft_models:
            mats = [np.asarray(x["test_confusion"]) for x in r["result"]["runs"]
                    if x["model"] == m and x["mask_ft"] and x.get("test_confusion") is not None]
            if mats:
                confusion[t][m] = np.sum(mats, axis=0).tolist()
    results["finetune"] = {"rows": aggregate_runs(all_runs), "runs": all_runs, "classes": classes,
                           "confusion": confusion}
    # paired comparison adversarial vs random (pairs: task, seed, mask)
    paired: dict[str, Any] = {}
    if "adversarial" in preset.strategies and "random" in preset.strategies and all_runs:
        key = lambda r: (r["task"], r["seed"], r["mask_ft"])  # noqa: E731
        adv = {key(r): r["test_acc"] for r in all_runs if r["model"] == "adversarial"}
        rnd = {key(r): r["test_acc"] for r in all_runs if r["model"] == "random"}
        common = sorted(set(adv) & set(rnd), key=str)
        if common:
            paired["overall"] = paired_test([adv[k] for k in common], [rnd[k] for k in common])
            paired["per_task"] = {}
            for t in preset.tasks:
                ks = [k for k in common if k[0] == t]
                if ks:
                    paired["per_task"][t] = paired_test([adv[k] for k in ks], [rnd[k] for k in ks])
            paired["pairs"] = "test accuracy of adversarial vs random, paired by (task, fine-tuning seed, mask-FT)"
    results["paired"] = paired
    # efficiency
    eff = {}
    for t in preset.efficiency_tasks:
        r = res(f"efficiency-{t}")
        if r:
            eff[t] = {k: r["result"][k] for k in ("curves", "target", "crossing")}
    results["efficiency"] = eff
    ana = res("analysis")
    results["analysis"] = ana["result"] if ana else {}
    return results


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
                   help="size of the study: cpu (<= 3 h on 2 cores), gpu (larger), tiny (seconds, fixture data)")
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
