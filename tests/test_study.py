"""The reproduction study's machinery (smu_explain/study/) on the tiny preset.

The tiny study runs once per module on fixture data written in a temporary folder
(runs dir, results dir and RESULTS.md all under tmp), then the tests check its
outputs, the resume / skip rules, and the statistics helpers on synthetic numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import pytest

from smu_explain import study as S
from smu_explain.errors import SMUInputError

# ----------------------------------------------------------------------------- the tiny study

@pytest.fixture(scope="module")
def tiny(tiny_study):
    return tiny_study  # conftest.py: run once per session, shared with the Study page's tests


def test_tiny_study_runs_every_stage_and_writes_results(tiny):
    paths, st = tiny["paths"], tiny["study"]
    names = [s.name for s in st.stages]
    assert tiny["executed"] == names
    assert names[0] == "data" and names[-1] == "report"
    for n in names:
        doc = json.loads(paths.result(n).read_text())
        assert doc["stage"] == n and doc["format"] == S.RESULT_FORMAT
        assert set(doc["cost"]) >= {"wall_s", "tokens", "steps", "peak_rss_mb", "cuda_peak_mb"}
        assert doc["cost"]["wall_s"] >= 0
    # training stages count their steps and tokens
    pre = json.loads(paths.result("pretrain-random-2of2").read_text())
    assert pre["cost"]["steps"] == 12 and pre["cost"]["tokens"] > 0
    assert pre["result"]["total"]["steps"] == 24
    assert pre["result"]["n_params"] > 0 and set(pre["result"]["recovery_accuracy"]) == \
        {"bar", "position", "pitch", "duration"}
    results = json.loads((paths.results_dir / "results.json").read_text())
    # every (task, model, mask) row over both seeds
    rows = results["finetune"]["rows"]
    assert {(r["task"], r["model"], r["mask_ft"]) for r in rows} == {
        (t, m, mk) for t in S.FT_TASKS for m in ("adversarial", "random", "none") for mk in (True, False)}
    assert all(r["test_acc"]["n"] == 2 and r["seeds"] == [0, 1] for r in rows)
    assert results["budget"]["pretrain_steps"] == 24
    assert results["paired"]["overall"]["n"] == 16  # 4 tasks x 2 seeds x 2 mask settings
    assert set(results["efficiency"]) == {"emotion", "melody"}
    # the analysis: correlations, class tables, freeze history from the snapshots, examples
    ana = results["analysis"]
    assert ana["n_notes"] > 0 and set(ana["sources"]) == {"pop909", "asap", "emopia"}
    assert ana["spearman_random_loss"]["n"] == ana["n_notes"]
    assert {r["class"] for r in ana["by_class"]["role"]} <= {"melody", "bridge", "accompaniment"}
    assert len(ana["freeze_history"]) >= 2
    assert ana["freeze_history"][-1]["jaccard_last"] == pytest.approx(1.0)
    assert len(ana["examples"]) == 3
    assert len({e["piece"] for e in ana["examples"]}) == 3
    import pandas as pd

    from smu_explain.pianoroll import piano_roll

    assert ana["examples_frozen_by"].startswith("the freeze book after epoch")
    for e in ana["examples"]:
        ctx = pd.DataFrame(e["context"]["notes"])
        assert bool(ctx.loc[ctx["note"] == e["note"], "frozen"].iloc[0])
        assert not (ctx["frozen"] & ctx["picked"]).any()
        fig = piano_roll(ctx, bar_starts_q=e["context"]["bar_starts_q"], track_names=e["context"]["track_names"])
        assert len(fig.data) > 0
    md = paths.results_md.read_text()
    for heading in ("## Test accuracy", "## Test macro-F1", "## Published numbers", "## Does adversarial beat",
                    "## Data efficiency", "## Cost of every stage", "## Masker analysis"):
        assert heading in md
    assert "97.92" in md and "Pianist8" in md
    assert len(results["summary"]) == 3
    assert (paths.results_dir / "data_efficiency.json").is_file()
    # the masker-analysis figures are saved beside the results and listed in results.json
    for name in ("spearman", "by_class", "freeze_history", "example_1", "example_2", "example_3"):
        assert any(f.endswith(f"masker_{name}.json") for f in results["figures"][f"masker_{name}"])
        assert (paths.results_dir / f"masker_{name}.json").is_file(), name
    # a PNG (kaleido installed) is shown as an image, an HTML figure is linked
    png = "![score and frozen share by note class](" in md and "masker_by_class.png)" in md
    html = "[score and frozen share by note class (interactive figure)](" in md and "masker_by_class.html)" in md
    assert png or html, md


def test_masker_analysis_figures_show_the_numbers(tiny):
    results = json.loads((tiny["paths"].results_dir / "results.json").read_text())
    ana = results["analysis"]
    figs = S.analysis_figures(ana)
    assert set(figs) == {"spearman", "by_class", "freeze_history", "example_1", "example_2", "example_3"}
    # by class: one score bar and one frozen bar per grouping, values = the class tables
    groups = [g for g, rows in ana["by_class"].items() if rows]
    bars = figs["by_class"].data
    assert len(bars) == 2 * len(groups)
    for i, g in enumerate(groups):
        rows = ana["by_class"][g]
        assert list(bars[2 * i].x) == [r["class"] for r in rows]
        assert list(bars[2 * i].y) == pytest.approx([r["score"] for r in rows])
        assert list(bars[2 * i + 1].y) == pytest.approx([100 * (r["frozen"] or 0) for r in rows])
    # Spearman: per source and overall, both correlations
    sp = figs["spearman"].data
    assert list(sp[0].x) == list(ana["sources"]) + ["all"]
    assert sp[0].y[-1] == pytest.approx(ana["spearman_random_loss"]["rho"])
    assert sp[1].y[-1] == pytest.approx(ana["spearman_own_loss"]["rho"])
    fh = figs["freeze_history"].data[0]
    assert list(fh.y) == pytest.approx([100 * h["frozen_frac"] for h in ana["freeze_history"]])
    # an example: its context notes drawn, the note marked
    ex = ana["examples"][0]
    fig = figs["example_1"]
    drawn = sum(len(t.x) for t in fig.data if t.type == "bar")
    assert drawn == len(ex["context"]["notes"])
    assert fig.layout.annotations[0].y == ex["pitch"]
    assert S.analysis_figures({}) == {}


def test_second_run_executes_nothing(tiny):
    st2 = S.Study("tiny", tiny["paths"], quiet=True)
    before = {n: tiny["paths"].result(n).stat().st_mtime_ns for n in [s.name for s in st2.stages]}
    assert st2.run() == []
    after = {n: tiny["paths"].result(n).stat().st_mtime_ns for n in before}
    assert before == after


def test_deleting_one_result_reruns_only_that_stage(tiny):
    paths = tiny["paths"]
    old = json.loads(paths.result("finetune-melody").read_text())
    paths.result("finetune-melody").unlink()
    st = S.Study("tiny", paths, quiet=True)
    assert st.run() == ["finetune-melody", "report"]  # the report is refreshed since a result changed
    new = json.loads(paths.result("finetune-melody").read_text())
    assert new["started"] >= old["started"]
    assert new["cost"]["steps"] > 0  # really fine-tuned again, not read back from a cache
    assert [r["test_acc"] for r in new["result"]["runs"]] == [r["test_acc"] for r in old["result"]["runs"]]
    # a pre-training chunk whose training is already in the checkpoint is re-derived, not re-trained
    paths.result("pretrain-random-1of2").unlink()
    assert S.Study("tiny", paths, quiet=True).run() == ["pretrain-random-1of2", "report"]
    doc = json.loads(paths.result("pretrain-random-1of2").read_text())
    assert doc["result"]["reused"] is True and doc["cost"]["steps"] == 0


def test_only_selects_stages_and_checks_dependencies(tiny, tmp_path):
    st = tiny["study"]
    sel = [s.name for s in S.select_stages(st.stages, ["pretrain"])]
    assert sel == ["pretrain-random-1of2", "pretrain-random-2of2", "pretrain-adversarial-1of2",
                   "pretrain-adversarial-2of2"]
    assert [s.name for s in S.select_stages(st.stages, ["finetune-melody"])] == ["finetune-melody"]
    with pytest.raises(SMUInputError, match="no stage matches"):
        S.select_stages(st.stages, ["nonsense"])
    fresh = S.Study("tiny", S.StudyPaths.make(tmp_path / "r", tmp_path / "res", tmp_path / "R.md"), quiet=True)
    with pytest.raises(SMUInputError, match="needs"):
        fresh.run(only=["finetune-melody"])


def test_interrupted_finetune_stage_keeps_finished_runs(tiny):
    """A stage with its STARTED marker resumes: finished runs are read back."""
    paths = tiny["paths"]
    st = S.Study("tiny", paths, quiet=True)
    stage = next(s for s in st.stages if s.name == "efficiency-emotion")
    d = st._stage_dir(stage)  # fresh: marker written, folder empty
    first = st.finetune_run("emotion", "none", True, 0, 0.5, d)
    again = st.finetune_run("emotion", "none", True, 0, 0.5, d)
    assert again.pop("earlier_sitting") is True and again == first and "earlier_sitting" not in first
    # the stage's cost counts the run of the earlier sitting in its wall time
    with S.CostMeter() as meter:
        runs = st._runs(stage, meter, [("none", True, 0, 0.5)])
    cost = meter.to_dict()
    assert runs[0]["test_acc"] == first["test_acc"] and cost["resumed_runs"] == 1
    # (to_dict rounds to 1 ms, so "at least the earlier run's wall time" is up to rounding)
    assert cost["resumed_wall_s"] == pytest.approx(first["wall_s"], abs=1e-3)
    assert cost["wall_s"] >= first["wall_s"] - 1e-3
    assert cost["steps"] == first["steps"]
    st2 = S.Study("tiny", paths, quiet=True)
    assert st2._stage_dir(stage) == d and (d / "none-maskon-s0-f050" / "study_run.json").is_file()
    (d / "STARTED").unlink()
    st2._stage_dir(stage)  # no marker: a fresh start clears the old runs
    assert not (d / "none-maskon-s0-f050").exists()


def test_cli_list_and_parser(tiny, capsys):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    S.add_study_parser(sub)
    p = tiny["paths"]
    args = parser.parse_args(["study", "--preset", "tiny", "--runs-dir", str(p.runs_dir), "--results-dir",
                              str(p.results_dir), "--results-md", str(p.results_md), "--list",
                              "--only", "pretrain", "--only", "report"])
    assert args.func is S.cmd_study and args.only == ["pretrain", "report"]
    assert S.cmd_study(args) == 0
    out = capsys.readouterr().out
    assert "done   pretrain-random-1of2" in out and "finetune-melody" not in out
    args = parser.parse_args(["study", "--preset", "tiny", "--runs-dir", str(p.runs_dir), "--results-dir",
                              str(p.results_dir), "--results-md", str(p.results_md), "--quiet"])
    assert S.cmd_study(args) == 0
    out = capsys.readouterr().out
    assert "none (all finished)" in out and len(out.strip().splitlines()) == 4


# ----------------------------------------------------------------------------- presets

def test_cpu_preset_budget_fits_five_hours_in_short_stages():
    est = S.estimate_minutes("cpu")
    assert est["total"] <= 300  # issue 14: at most 5 h of the 2-core machine
    for st in S.plan_stages("cpu"):
        assert st.est_min <= 30, st.name
    cpu = S.get_preset("cpu")
    assert set(cpu.tasks) == set(S.FT_TASKS) and len(cpu.seeds) >= 2
    # two pre-training seeds per strategy, the rotary recipe, curves and probes
    enc = cpu.encoders()
    for s in ("random", "adversarial"):
        assert len({e.seed for e in enc if e.strategy == s and not e.variant}) >= 2
    assert cpu.model["position"] == "rope" and cpu.curve_steps > 0 and cpu.probe
    names = [s.name for s in S.plan_stages("cpu")]
    assert "pretrain-adversarial-s1-1of1" in names and "curve-velocity" in names and "probe-emotion" in names
    # the first run stays reproducible under its own name, with its own (absolute) positions
    v1 = S.get_preset("cpu-v1")
    assert v1.model["position"] == "absolute" and v1.seeds == (0, 1, 2) and v1.encoders()[0].name == "random"
    gpu = S.plan_stages("gpu")
    assert any(s.name.startswith("pretrain-bar-") for s in gpu)
    # every stage's dependencies come before it
    for plan in (S.plan_stages("cpu"), gpu, S.plan_stages("tiny")):
        seen = set()
        for st in plan:
            assert set(st.deps) <= seen, st.name
            seen.add(st.name)


def test_bad_preset_is_refused():
    with pytest.raises(SMUInputError, match="unknown study preset"):
        S.get_preset("huge")
    with pytest.raises(SMUInputError, match="fractions"):
        S.get_preset(S.PRESETS["tiny"].replace(fractions=(0.5,)))
    with pytest.raises(SMUInputError, match="tasks"):
        S.get_preset(S.PRESETS["tiny"].replace(efficiency_tasks=("velocity",), tasks=("melody",)))


# ----------------------------------------------------------------------------- statistics

def test_mean_std_and_aggregation():
    assert S.mean_std([0.8, 0.9, 1.0]) == pytest.approx({"mean": 0.9, "std": 0.1, "n": 3})
    assert S.mean_std([0.5]) == {"mean": 0.5, "std": None, "n": 1}
    assert S.mean_std([None, float("nan")]) == {"mean": None, "std": None, "n": 0}
    assert S.format_mean_std({"mean": 0.8512, "std": 0.0134}) == "85.1 ± 1.3"
    assert S.format_mean_std({"mean": 0.5, "std": None}) == "50.0"
    assert S.format_mean_std(None) == "—"
    runs = [{"task": "emotion", "model": m, "mask_ft": mk, "seed": s, "test_acc": a, "test_macro_f1": a / 2}
            for m, mk, s, a in [("random", True, 1, 0.6), ("adversarial", True, 0, 0.7), ("random", True, 0, 0.5),
                                ("adversarial", True, 1, 0.9), ("adversarial", False, 0, 0.4)]]
    agg = S.aggregate_runs(runs)
    assert [(r["model"], r["mask_ft"]) for r in agg] == [("adversarial", True), ("adversarial", False),
                                                          ("random", True)]
    assert agg[0]["test_acc"]["mean"] == pytest.approx(0.8)
    assert agg[0]["test_acc"]["std"] == pytest.approx(math.sqrt(0.02))
    assert agg[0]["test_acc"]["values"] == [0.7, 0.9]
    header, rows = S.results_table(agg, "test_acc", ["emotion", "melody"])
    assert header == ["model", "emotion", "melody"]
    assert rows[0] == ["adversarial, mask-FT on", "80.0 ± 14.1", "—"]
    assert rows[1] == ["adversarial, mask-FT off", "40.0", "—"]
    md = S.markdown_table(header, rows)
    lines = md.splitlines()
    assert lines[0] == "| model | emotion | melody |" and lines[1] == "|---|---|---|"
    assert lines[2] == "| adversarial, mask-FT on | 80.0 ± 14.1 | — |"
    assert S.markdown_table(["a"], [["x|y"]]).splitlines()[2] == "| x\\|y |"
    ph, pr = S.published_table(["melody", "composer"])
    assert ph == ["source", "model", "melody", "composer"]
    assert any(r[1] == "Adversarial-MidiBERT" and r[2:] == ["92.68", "97.92"] for r in pr)


def test_paired_test_significant_and_not():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 0.9, 12)
    better = base + 0.05 + rng.normal(0, 0.005, 12)
    res = S.paired_test(better, base)
    assert res["significant"] and res["t_p"] < 1e-6 and res["wilcoxon_p"] < 0.01
    assert res["mean_diff"] == pytest.approx(0.05, abs=0.005) and res["wins"] == 12
    assert res["verdict"].startswith("a is better")
    worse = S.paired_test(base, better)
    assert worse["significant"] and worse["verdict"].startswith("a is worse")
    noise = base + rng.normal(0, 0.02, 12)
    res = S.paired_test(noise, base)
    assert not res["significant"] and res["t_p"] > 0.05
    assert res["verdict"].startswith("no significant difference")
    assert S.paired_test([0.5, 0.6], [0.5, 0.6])["t_p"] == 1.0  # identical: nothing to see
    assert S.paired_test([0.6, 0.7], [0.5, 0.6])["t_p"] == 0.0  # constant non-zero difference
    assert not S.paired_test([0.6], [0.5])["significant"]
    with pytest.raises(ValueError):
        S.paired_test([1, 2], [1])


def test_crossing_fraction_interpolates():
    fr = [0.1, 0.25, 0.5, 1.0]
    c = S.crossing_fraction(fr, [0.5, 0.6, 0.7, 0.8], 0.65)
    assert c["status"] == "reached" and c["fraction"] == pytest.approx(0.375)
    assert S.format_crossing(c) == "38%"
    c = S.crossing_fraction([1.0, 0.5, 0.25, 0.1], [0.8, 0.7, 0.6, 0.5], 0.6)  # order does not matter
    assert c["fraction"] == pytest.approx(0.25)
    c = S.crossing_fraction(fr, [0.7, 0.75, 0.8, 0.9], 0.65)
    assert c == {"fraction": 0.1, "status": "at or below the smallest fraction"}
    assert S.format_crossing(c) == "≤ 10%"
    c = S.crossing_fraction(fr, [0.3, 0.4, 0.5, 0.6], 0.65)
    assert c == {"fraction": None, "status": "not reached"} and S.format_crossing(c) == "not reached"
    assert S.crossing_fraction(fr, [0.5, None, 0.7, 0.8], 0.6)["fraction"] == pytest.approx(0.3)
    eff = S.efficiency_summary(
        [{"model": m, "fraction": f, "test_acc": a} for m, f, a in
         [("none", 1.0, 0.6), ("none", 0.5, 0.5), ("adversarial", 0.5, 0.55), ("adversarial", 1.0, 0.65),
          ("random", 0.5, 0.4), ("random", 1.0, 0.5)]], ["adversarial", "random", "none"])
    assert eff["target"] == pytest.approx(0.6)
    assert eff["crossing"]["adversarial"]["fraction"] == pytest.approx(0.75)
    assert eff["crossing"]["random"]["status"] == "not reached"
    fig = S.data_efficiency_figure({"emotion": eff})
    assert len(fig.data) == 3 and fig.layout.height == 340


# ----------------------------------------------------------------------------- summary

def _results(adv, rnd, none, significant):
    rows = []
    for model, accs in (("adversarial", adv), ("random", rnd), ("none", none)):
        for t, a in accs.items():
            rows.append({"task": t, "model": model, "mask_ft": True, "fraction": 1.0,
                         "test_acc": {"mean": a, "std": 0.01, "n": 3}})
    return {"tasks": list(adv), "finetune": {"rows": rows, "classes": {"emotion": ["Q1", "Q2", "Q3", "Q4"]},
                                             "confusion": {"emotion": {"adversarial": [[5, 0, 0, 0], [1, 3, 0, 0],
                                                                                       [0, 6, 2, 0], [0, 0, 0, 4]]}}},
            "paired": {"overall": {"significant": significant, "t_p": 0.01 if significant else 0.4}},
            "budget": {"pretrain_steps": 8000, "pretrain_tokens_per_model": 32_768_000, "total_wall_s": 10_000,
                       "peak_rss_mb": 2048, "machine_short": "2-CPU test box"},
            "analysis": {"highlights": {"highest_score_class": {"grouping": "duration", "class": "< 1/8 (<0.5 q)",
                                                                 "score": 0.71, "n": 100}}}}


def test_the_verdict_counts_pre_training_seeds_not_pairs():
    """16 pairs of task x fine-tuning seed that share 2 encoders per strategy are not 16 units: a
    t-test over them may say 'significant' while the interval over the 2 seeds cannot tell."""
    from smu_explain.study.stats import unit_interval

    two = unit_interval({0: [0.05, 0.06, 0.05], 1: [0.01, 0.02]})
    assert two["n_units"] == 2 and two["lo"] < 0 < two["hi"] and not two["excludes_zero"]
    five = unit_interval({s: [0.05 + 0.001 * s] for s in range(5)})
    assert five["excludes_zero"] and five["lo"] > 0 and unit_interval({0: [0.1]})["lo"] is None
    res = _results({"melody": 0.9, "emotion": 0.6}, {"melody": 0.85, "emotion": 0.55},
                   {"melody": 0.8, "emotion": 0.5}, significant=True)
    res["paired"]["overall"].update({"n": 16, "mean_diff": 0.05, "t_p": 0.001})
    res["paired"]["by_pretrain_seed"] = two
    line = S.study_summary(res)[0]
    assert line.startswith("Does adversarial masking help here? Not measurably:")
    assert "95% interval over 2 pre-training seeds" in line and "so 2 seeds cannot tell" in line
    assert "(p = 0.001) would overstate the evidence" in line
    res["paired"]["by_pretrain_seed"] = unit_interval({s: [-0.05 - 0.001 * s] for s in range(5)})
    assert S.study_summary(res)[0].startswith("Does adversarial masking help here? No, it does worse:")


def test_study_summary_lines():
    res = _results({"melody": 0.9, "emotion": 0.6}, {"melody": 0.88, "emotion": 0.5},
                   {"melody": 0.85, "emotion": 0.5}, significant=False)
    res["paired"]["overall"].update({"n": 8, "mean_diff": 0.06})
    res["analysis"]["step_cost"] = {"step_s": {"random": 0.25, "adversarial": 0.31},
                                    "over_random": {"random": 1.0, "adversarial": 1.24}}
    res["preset"] = {"variants": {"adversarial-freeze1": {}}}
    res["probe"] = {"melody": {"probes": {
        "adversarial-s0": {"model": "adversarial", "test_acc": 0.8}, "adversarial-s1": {"model": "adversarial",
                                                                                         "test_acc": 0.7},
        "adversarial-freeze1": {"model": "adversarial", "test_acc": 0.1},  # a variant: left out
        "random-s0": {"model": "random", "test_acc": 0.6}, "none": {"model": "none", "test_acc": 0.5}}}}
    lines = S.study_summary(res)
    assert len(lines) == 3
    assert lines[0] == ("Does adversarial masking help here? Not measurably: fine-tuned encoders pre-trained with it "
                        "score +6.0 points of test accuracy against random masking, averaged over 2 tasks (paired "
                        "test over 8 pairs of task, pre-training seed and fine-tuning seed: not significant, p = 0.4).")
    assert lines[1] == ("By how much (test accuracy points): against random masks melody +2.0, emotion +10.0; "
                        "adversarial over no pre-training +7.5 on average; random over no pre-training +1.5 on "
                        "average; a linear probe on the frozen encoders: adversarial 75.0% vs random 60.0% "
                        "(random init 50.0%) (no test: 1 encoder per strategy).")
    assert lines[2] == ("At what cost: an adversarial pre-training step takes 1.24x a random-mask step (310 vs 250 ms, "
                        "measured side by side: a clean pass and the masker come on top); 8,000 pre-training steps "
                        "(32.8 M tokens) per encoder; the whole study 2.78 h of 2-CPU test box, peak memory 2.0 GiB.")
    note = S.errors_note(res)
    assert "weakest task emotion (60.0%" in note.lower()
    assert "true Q3 predicted as Q2 (75% of Q3)" in note
    assert "duration class '< 1/8 (<0.5 q)'" in note
    res = _results({"melody": 0.8}, {"melody": 0.9}, {"melody": 0.85}, significant=True)
    res["paired"]["overall"].update({"n": 4, "mean_diff": -0.1})
    lines = S.study_summary(res)
    assert lines[0].startswith("Does adversarial masking help here? No, it does worse: ")
    assert "-10.0 points" in lines[0] and "significant, p = 0.01)" in lines[0]
    assert "At what cost: 8,000 pre-training steps" in lines[2]  # no side-by-side timing: not claimed
    res["paired"]["overall"]["mean_diff"] = 0.1
    res["finetune"]["rows"] = [dict(r, test_acc={"mean": 1 - r["test_acc"]["mean"] if r["model"] != "none"
                                                 else 0.5, "std": 0, "n": 3}) for r in res["finetune"]["rows"]]
    assert S.study_summary(res)[0].startswith("Does adversarial masking help here? Yes: ")
    assert S.study_summary({})[0] == "Does adversarial masking help here? No comparable fine-tuning results yet."
    assert S.errors_note({}) is None


# ----------------------------------------------------------------------------- pieces of the machinery

def test_subset_dataset_is_nested_and_stratified(tiny):
    st = tiny["study"]
    train = st.task_data("emotion").datasets["train"]
    half = S.subset_dataset(train, 0.5, seed=0)
    quarter = S.subset_dataset(train, 0.25, seed=0)
    names_half = {p.name for p in half.pieces}
    assert {p.name for p in quarter.pieces} <= names_half
    labels = {p.label for p in train.pieces}
    assert {p.label for p in quarter.pieces} == labels  # every class keeps at least one piece
    assert S.subset_dataset(train, 1.0, 0) is train
    assert {p.name for p in S.subset_dataset(train, 0.5, seed=1).pieces} != names_half or len(train.pieces) < 4
    mel = st.task_data("melody").datasets["train"]
    assert len(S.subset_dataset(mel, 0.5, 0).pieces) == round(0.5 * len(mel.pieces))


def test_freeze_snapshot_roundtrip(tmp_path):
    from smu_explain.freeze_book import FreezeBook

    book = FreezeBook(every=1, top=0.5, unfreeze=0.0)
    book.update(0, [(0, np.arange(6), np.arange(6.0)), (1, np.arange(4), -np.arange(4.0))])
    S.save_freeze_snapshot(tmp_path / "freeze_00000.npz", book, ["a", "b"], 0, 10)
    book.update(1, [(0, np.arange(6), np.arange(6.0)), (1, np.arange(4), -np.arange(4.0))])
    S.save_freeze_snapshot(tmp_path / "freeze_00001.npz", book, ["a", "b"], 1, 20)
    snaps = [S.load_freeze_snapshot(p) for p in sorted(tmp_path.glob(S.SNAPSHOT_GLOB))]
    assert snaps[0]["flags"]["a"].tolist() == [False, False, False, True, True, True]
    assert snaps[0]["flags"]["b"].tolist() == [True, True, False, False]
    assert snaps[1]["step"] == 20 and snaps[1]["stats"]["epoch"] == 1
    hist = S.freeze_history(snaps)
    assert [h["n_frozen"] for h in hist] == [5, 8]  # round(1.5) = 2 more in a, 1 more in b
    assert hist[1]["kept_from_prev"] == pytest.approx(1.0)
    assert hist[1]["jaccard_prev"] == pytest.approx(5 / 8)
    (tmp_path / "freeze_00002.npz").write_bytes(b"junk")
    with pytest.raises(SMUInputError):
        S.load_freeze_snapshot(tmp_path / "freeze_00002.npz")


def test_cost_meter_measures_time_and_memory():
    with S.CostMeter() as m:
        buf = np.ones(20_000_000, dtype=np.uint8)  # ~19 MiB touched
        buf[::4096] = 2
        m.add(tokens=100, steps=2)
        t0 = time.process_time()
        while time.process_time() - t0 < 0.2:  # CPU work the meter must see
            buf[::4096] += 1
        time.sleep(0.01)
    d = m.to_dict()
    assert d["wall_s"] >= 0.21 and d["tokens"] == 100 and d["steps"] == 2
    assert d["peak_rss_mb"] is not None and d["peak_rss_mb"] > 19
    assert d["peak_rss_source"]
    assert d["cpu_s"] >= 0.15 and len(d["load_1min"]) == 2 and all(x is None or x >= 0 for x in d["load_1min"])
    from smu_explain.study.report import _md_costs

    md = "\n".join(_md_costs({"cost": {"pretrain-x": d, "old": {"wall_s": 60}}}))
    assert "| old | 1.0 min | — | — |" in md and "load (1 min, start → end)" in md
    # a stage resumed before the meter counted earlier sittings: its runs' wall times count
    from smu_explain.study.results import _resumed_cost

    runs = [{"wall_s": 100.0}, {"wall_s": 120.0}, {"wall_s": 110.0}]
    old = {"cost": {"wall_s": 120.0, "cpu_s": 230.0}, "result": {"runs": runs}}
    c = _resumed_cost(old)
    assert c["wall_s"] == pytest.approx(330.0) and c["wall_s_last_sitting"] == 120.0 and c["resumed_runs"] == -1
    whole = {"cost": {"wall_s": 335.0}, "result": {"runs": runs}}  # one sitting: unchanged
    assert _resumed_cost(whole) == {"wall_s": 335.0}
    counted = {"cost": {"wall_s": 335.0, "resumed_runs": 2, "resumed_wall_s": 220.0}, "result": {"runs": runs}}
    assert _resumed_cost(counted) == counted["cost"]
    md = "\n".join(_md_costs({"cost": {"finetune-x": c}}))
    assert "| finetune-x (resumed) | 5.5 min | 3.8 min (last sitting) |" in md


def test_class_table_orders_and_counts():
    rows = S.class_table({"score": np.array([0.1, 0.3, 0.5]), "frozen": np.array([True, False, True])},
                         np.array(["C4-B4", "low (< C3)", "C4-B4"], dtype=object), S.class_order("register"))
    assert [r["class"] for r in rows] == ["low (< C3)", "C4-B4"]
    assert rows[1] == {"class": "C4-B4", "n": 2, "score": pytest.approx(0.3), "frozen": pytest.approx(1.0)}
    assert S.spearman([1, 2, 3, 4], [2, 4, 6, 9])["rho"] == pytest.approx(1.0)
    assert S.spearman([1, 1, 1], [1, 2, 3])["rho"] is None


# ----------------------------------------------------------------------------- real data (opt-in)

@pytest.mark.data
def test_micro_study_on_real_data(data_root, tmp_path):
    """The cpu preset's code path on the real datasets, cut to a few files and steps."""
    preset = S.PRESETS["cpu"].replace(
        name="cpu-micro", model=dict(d_model=32, n_layers=1, n_heads=2, d_ff=64, emb_dim=8, dropout=0.1),
        max_len=64, pretrain_steps=4, pretrain_batch=4, pretrain_chunks=2, pretrain_warmup=0,
        pretrain_eval_every=2, pretrain_eval_batches=1, pretrain_limit=12, ft_limit=6, ft_steps=2, ft_batch=4,
        ft_warmup=0, ft_eval_every=2, ft_eval_batches=1, seeds=(0, 1), fractions=(0.5, 1.0),
        efficiency_tasks=("emotion",), analysis_pieces=1, analysis_examples=2, asap_source="score")
    paths = S.StudyPaths.make(tmp_path / "runs", tmp_path / "res", tmp_path / "R.md", data_root=data_root,
                              cache_dir=tmp_path / "cache")
    executed = S.Study(preset, paths, quiet=True).run()
    assert executed[-1] == "report"
    res = json.loads((tmp_path / "res" / "results.json").read_text())
    assert res["data"]["tasks"]["composer"]["classes"] and len(res["summary"]) == 3


def test_interrupted_pretraining_chunk_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    preset = S.PRESETS["tiny"].replace(pretrain_steps=8, pretrain_chunks=1, strategies=("random", "adversarial"))
    paths = S.StudyPaths.make(tmp_path / "runs", tmp_path / "res", tmp_path / "R.md")
    real = S.StopAtStep.on_step_end
    fired = []

    def crash(self, trainer, info):
        if trainer.step == 5 and not fired:
            fired.append(trainer.step)
            raise KeyboardInterrupt("simulated interruption")
        real(self, trainer, info)

    monkeypatch.setattr(S.StopAtStep, "on_step_end", crash)
    with pytest.raises(KeyboardInterrupt):
        S.Study(preset, paths, quiet=True).run(only=["data", "pretrain-random"])
    assert not paths.result("pretrain-random-1of1").exists()
    assert (paths.runs_dir / "stages" / "pretrain-random-1of1" / "STARTED").is_file()
    log_text = (paths.runs_dir / "study.log").read_text()
    assert "pretrain-random-1of1: KeyboardInterrupt" in log_text
    executed = S.Study(preset, paths, quiet=True).run(only=["pretrain-random"])
    assert executed == ["pretrain-random-1of1"]
    rec = json.loads(paths.result("pretrain-random-1of1").read_text())["result"]
    assert rec["resumed_within_chunk_at"] == 4  # checkpoint every 2 steps: the last one before the crash
    assert rec["to_step"] == 8 and rec["steps"] == 8 and rec["total"]["steps"] == 8
    starts = [json.loads(x) for x in (paths.runs_dir / "pretrain" / "random" / "progress.jsonl").read_text()
              .splitlines() if '"start"' in x]
    assert [s["resumed"] for s in starts] == [False, True] and starts[1]["step"] == 4
    assert not (paths.runs_dir / "stages" / "pretrain-random-1of1" / "STARTED").exists()


def test_spread_refs_covers_groups_first():
    from smu_explain.corpora import PieceRef

    refs = [PieceRef(f"/x/{g}{i}.mid", f"{g}/{i}", g, "asap") for g in "abc" for i in range(3)]
    assert [r.name for r in S.spread_refs(refs, 4)] == ["a/0", "b/0", "c/0", "a/1"]
    assert len(S.spread_refs(refs, 20)) == 9 and S.spread_refs([], 3) == []


def test_chunk_trained_but_unrecorded_is_not_trained_again(tmp_path, monkeypatch):
    """A crash after the chunk's last checkpoint but before its result: the rerun trains nothing."""
    import smu_explain.explain as E

    preset = S.PRESETS["tiny"].replace(pretrain_steps=8, pretrain_chunks=1)
    paths = S.StudyPaths.make(tmp_path / "runs", tmp_path / "res", tmp_path / "R.md")

    def boom(*a, **k):
        raise RuntimeError("crash after training")

    monkeypatch.setattr(E, "recovery_with_tokens", boom)  # what the final measures call
    with pytest.raises(RuntimeError, match="crash after training"):
        S.Study(preset, paths, quiet=True).run(only=["data", "pretrain-adversarial"])
    monkeypatch.undo()
    progress = paths.runs_dir / "pretrain" / "adversarial" / "progress.jsonl"
    n_lines = len(progress.read_text().splitlines())
    assert S.Study(preset, paths, quiet=True).run(only=["pretrain-adversarial"]) == ["pretrain-adversarial-1of1"]
    assert len(progress.read_text().splitlines()) == n_lines  # no training happened
    rec = json.loads(paths.result("pretrain-adversarial-1of1").read_text())["result"]
    assert rec["message"] == "already trained to step 8 (checkpoint)"
    assert rec["steps"] == 8 and rec["tokens"] > 0 and rec["total"]["steps"] == 8
    snaps = list((paths.runs_dir / "pretrain" / "adversarial" / "freeze_snapshots").glob(S.SNAPSHOT_GLOB))
    assert len(rec["freeze_events"]) == len(snaps)
    assert set(rec["recovery_accuracy"]) == {"bar", "position", "pitch", "duration"}


def test_presets_do_not_mix_and_tiny_results_stay_out_of_docs(tiny, tmp_path):
    p = tiny["paths"]
    other = S.Study(S.PRESETS["tiny"].replace(name="tiny2"),
                    S.StudyPaths.make(tmp_path / "runs2", p.results_dir, p.results_md), quiet=True)
    with pytest.raises(SMUInputError, match="holds a result of preset 'tiny'"):
        other.run()
    res2 = tmp_path / "res2"
    other = S.Study(S.PRESETS["tiny"].replace(name="tiny2"),
                    S.StudyPaths.make(tiny["paths"].runs_dir, res2, res2 / "R.md"), quiet=True)
    with pytest.raises(SMUInputError, match="runs folder belongs to preset 'tiny'"):
        other.run()
    demo = S.StudyPaths.make(tmp_path / "r", preset="tiny")
    assert demo.results_dir == tmp_path / "r" / "results" and demo.results_md == tmp_path / "r" / "RESULTS.md"
    real = S.StudyPaths.make(tmp_path / "r", preset="cpu")
    assert real.results_dir == S.REPO_ROOT / "docs" / "study" and real.results_md.name == "RESULTS.md"
    monkeypatch_env = pytest.MonkeyPatch()
    monkeypatch_env.setenv("SMU_RUNS_DIR", str(tmp_path / "runs_home"))
    try:
        assert S.StudyPaths.make(preset="cpu").runs_dir == tmp_path / "runs_home" / "cpu"
        assert S.StudyPaths.make().runs_dir == tmp_path / "runs_home"
    finally:
        monkeypatch_env.undo()


def test_validation_subset_is_balanced_and_bounded(tiny):
    val = tiny["study"].task_data("composer").datasets["val"]
    assert S.validation_subset(val, None) is val and S.validation_subset(val, len(val)) is val
    windows = [p.n_windows for p in val.pieces]
    sub = S.validation_subset(val, 8)
    assert 0 < len(sub) <= 8
    # round-robin over the classes: as many composers as the window budget allows
    assert len({p.label for p in sub.pieces}) == len(sub.pieces) == 8 // max(windows)
    one = S.validation_subset(val, 1)
    assert len(one.pieces) == 1 and len(one) in windows  # at least one piece, even if too big


def test_results_md_shows_png_figures_and_links_html_ones():
    from smu_explain.study.report import _md_image

    res = {"figures": {"a": ["docs/study/a.png", "docs/study/a.json"], "b": ["docs/study/b.html", "docs/study/b.json"]}}
    assert _md_image(res, "a", "A") == "![A](study/a.png)"
    assert _md_image(res, "b", "B") == "[B (interactive figure)](study/b.html)"
    assert _md_image(res, "c", "C") is None


def test_freeze_history_figure_with_one_update_says_so():
    one = [{"epoch": 0, "step": 1791, "frozen_frac": 0.27, "jaccard_prev": None, "kept_from_prev": None,
            "jaccard_last": 1.0}]
    fig = S.freeze_history_figure(one)
    assert [t.name for t in fig.data] == ["frozen share of the training notes"] and fig.layout.showlegend
    assert "one freeze-book update" in fig.layout.annotations[0].text and "step 1791" in fig.layout.annotations[0].text
    two = one + [{"epoch": 1, "step": 3582, "frozen_frac": 0.4, "jaccard_prev": 0.5, "kept_from_prev": 0.7,
                  "jaccard_last": 1.0}]
    fig = S.freeze_history_figure(two)
    assert len(fig.data) == 4 and not fig.layout.annotations
