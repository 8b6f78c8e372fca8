"""The reproduction study (issue 5): pre-train, fine-tune, compare, analyse, report.

``smu study --preset cpu|gpu|tiny`` runs the whole study as a list of resumable
**stages** (``plan_stages``), in order:

``data``
    Build and tokenize every task once (through the token cache) and record the
    datasets: pieces, notes, windows per split, skipped files, split rules.
``pretrain-<strategy>-<k>of<n>``
    MLM pre-training with the ``random``, ``adversarial`` (and ``bar``) masking
    strategies: same model size, data, steps and seed for every strategy. Data =
    ``corpora.pretrain_task`` (Pop1K7 + POP909 + ASAP + EMOPIA without any fine-tuning
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

Modules (one owner per concept)
-------------------------------
``plan``      constants, presets, stages, paths, result files (no torch)
``stats``     mean/std, aggregation, tables, paired tests, crossings
``figures``   the study's plotly figures
``analysis``  masker analysis and the freeze-book snapshot files
``results``   ``results.json`` (``build_results``) from the stage results, earlier runs
``report``    summary lines, RESULTS.md
``command``   the ``smu study`` parser and command
``runner``    ``Study`` (runs the stages); it imports the trainer (torch), so this
              package loads it and its parts lazily: ``smu --help`` and
              ``smu study --help`` never import torch.
``cost``      ``CostMeter``, the cost of a stage
``callbacks`` the study's trainer callbacks (token counts, chunk ends, freeze snapshots)
``fixture``   the tiny preset's fixture data (``make_fixture_data``)
``subsets``   data subsets (fractions, validation pieces, analysed pieces)
"""


from .analysis import (
    GROUPINGS,
    SNAPSHOT_GLOB,
    class_order,
    class_table,
    freeze_history,
    load_freeze_snapshot,
    masker_analysis,
    note_classes,
    note_context,
    save_freeze_snapshot,
    spearman,
)
from .command import add_study_parser, cmd_study
from .figures import (
    GROUPING_TITLES,
    analysis_figures,
    data_efficiency_figure,
    freeze_history_figure,
    freeze_history_sentence,
    frozen_example_figure,
    frozen_examples_caption,
    masker_class_figure,
    save_figures,
    spearman_figure,
)
from .plan import (
    ANALYSIS_SOURCES,
    DEFAULT_FRACTIONS,
    FT_TASKS,
    PRESETS,
    PUBLISHED,
    PUBLISHED_MATCH,
    REPO_ROOT,
    RESULT_FORMAT,
    Stage,
    StudyPaths,
    StudyPreset,
    default_runs_dir,
    estimate_minutes,
    get_preset,
    log,
    machine_info,
    plan_stages,
    pretrain_stage_names,
    read_json,
    select_stages,
    write_json,
)
from .report import (
    PRETRAIN_CAPTION,
    PRETRAIN_TITLE,
    PROBE_CAPTION,
    PROBE_TITLE,
    earlier_report,
    earlier_table,
    errors_note,
    learned_attributes,
    partial_report,
    pretrain_table,
    pretrain_verdict_note,
    probe_table,
    render_results_md,
    scores_table,
    study_summary,
)
from .results import build_results
from .stats import (
    aggregate_runs,
    crossing_fraction,
    efficiency_summary,
    format_crossing,
    format_mean_std,
    markdown_table,
    mean_std,
    paired_test,
    published_table,
    results_table,
    row_label,
)

#: Names of ``runner`` and its parts (torch, the data), loaded on first access: name -> module.
_RUNNER = {"CostMeter": "cost", "FreezeSnapshots": "callbacks", "StopAtStep": "callbacks", "Study": "runner",
           "TokenCounter": "callbacks", "make_fixture_data": "fixture", "spread_refs": "subsets",
           "subset_dataset": "subsets", "validation_subset": "subsets"}


def __getattr__(name: str):
    if name in _RUNNER:
        from . import callbacks, cost, fixture, runner, subsets

        owner = {"callbacks": callbacks, "cost": cost, "fixture": fixture, "runner": runner, "subsets": subsets}
        return getattr(owner[_RUNNER[name]], name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_RUNNER))


__all__ = [
    "ANALYSIS_SOURCES", "DEFAULT_FRACTIONS", "FT_TASKS", "GROUPINGS", "GROUPING_TITLES", "PRESETS", "PUBLISHED",
    "PUBLISHED_MATCH", "REPO_ROOT", "RESULT_FORMAT", "SNAPSHOT_GLOB", "Stage", "StudyPaths", "StudyPreset",
    "add_study_parser", "aggregate_runs", "analysis_figures", "build_results", "class_order", "class_table",
    "cmd_study", "crossing_fraction", "data_efficiency_figure", "default_runs_dir", "earlier_report",
    "efficiency_summary",
    "estimate_minutes", "format_crossing", "format_mean_std", "freeze_history", "freeze_history_figure",
    "freeze_history_sentence", "frozen_example_figure", "frozen_examples_caption",
    "get_preset", "load_freeze_snapshot", "log", "machine_info", "markdown_table",
    "masker_analysis", "masker_class_figure", "mean_std", "note_classes", "note_context", "paired_test",
    "partial_report", "plan_stages", "pretrain_stage_names", "published_table", "read_json", "render_results_md", "results_table",
    "row_label", "save_figures", "save_freeze_snapshot", "select_stages", "spearman", "spearman_figure",
    "study_summary", "errors_note", "write_json", "PRETRAIN_CAPTION", "PRETRAIN_TITLE", "PROBE_CAPTION",
    "PROBE_TITLE", "earlier_table", "learned_attributes", "pretrain_table", "pretrain_verdict_note", "probe_table", "scores_table", *_RUNNER,
]
