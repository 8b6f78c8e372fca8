"""One place per name list (smu_explain/names.py): the modules that give the names a meaning
agree with it, the parsers offer it, and no module spells a list out again."""

from __future__ import annotations

from pathlib import Path

from smu_explain import cli, corpora, heads, masker, names, runs
from smu_explain.model import ModelConfig

ROOT = Path(__file__).resolve().parents[1]


def test_the_owners_agree_with_the_lists():
    assert tuple(masker._CLASSES) == names.STRATEGIES == masker.STRATEGIES
    assert all(masker.make_strategy(s).name == s for s in names.STRATEGIES)
    assert tuple(ModelConfig.SIZES) == names.SIZES
    assert tuple(heads.TASKS) == names.FINETUNE_TASKS
    assert corpora.TASKS == names.TASKS == ("pretrain",) + names.FINETUNE_TASKS
    assert runs.STRATEGIES is names.STRATEGIES and runs.SIZES is names.SIZES


def _choices(parser, command: str, dest: str):
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return tuple(next(a for a in sub._actions if a.dest == dest).choices)


def test_the_parsers_offer_the_lists():
    p = cli.build_parser()
    assert _choices(p, "pretrain", "strategy") == names.STRATEGIES
    assert _choices(p, "finetune", "task") == names.FINETUNE_TASKS
    assert _choices(p, "finetune", "size") == names.SIZES
    assert _choices(p, "finetune", "split") == names.SPLIT_SCHEMES
    assert _choices(p, "tokenize", "task") == names.TASKS
    assert _choices(p, "tokenize", "split") == names.SPLIT_SCHEMES


def test_no_module_spells_a_list_out_again():
    files = [*ROOT.glob("smu_explain/*.py"), *ROOT.glob("smu_explain/study/*.py"), *ROOT.glob("app_pages/*.py"),
             ROOT / "app.py", *ROOT.glob("bench/*.py")]
    lists = (names.STRATEGIES, names.SIZES, names.FINETUNE_TASKS, names.SPLIT_SCHEMES)
    for f in files:
        if f.name == "names.py":
            continue
        text = f.read_text()
        for lst in lists:
            for quote in ('"', "'"):
                spelled = ", ".join(f"{quote}{x}{quote}" for x in lst)
                assert spelled not in text, f"{f.relative_to(ROOT)} spells out {lst}: import it from smu_explain.names"
