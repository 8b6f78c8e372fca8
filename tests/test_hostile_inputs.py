"""Hostile inputs by kind (issue 28, items 4 and 5): each is a typed error with its reason (in the
library), one ``error:`` line with exit 2 (CLI) or a message (app), never a traceback.

Kinds: folder paths no file system call takes (``~unknownuser``, thousands of characters, a name
over 255 bytes, NUL); JSON that ``json.loads`` cannot turn into values (an integer over Python's
digit limit, nesting deeper than the stack) in config.json, tokenizer.json and masker_scores.json;
learning rates and seeds out of range, from flags and from ``--config``; models larger than the
machine's memory (loading and training, checked before anything is allocated); pieces over the
note cap in ``smu explain``; weights holding NaN or infinities.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from app_helpers import make_model, page, texts
from conftest import last_err
from streamlit.testing.v1 import AppTest

from smu_explain import appstate as A
from smu_explain import appwidgets as W
from smu_explain import checkpoint as C
from smu_explain import limits
from smu_explain.checkpoint import (
    CONFIG_NAME,
    SCORES_NAME,
    TOKENIZER_NAME,
    WEIGHTS_NAME,
    checked_path,
    is_checkpoint,
    is_finetuned,
    load_checkpoint,
    load_masker_scores,
    read_config,
    task_heads,
    user_folder,
)
from smu_explain.cli import main
from smu_explain.cli_setup import MAX_SEED
from smu_explain.errors import SMUCheckpointError, SMUInputError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BAD_PATHS = {
    "unknown user": "~nosuchuser_smu28/m",
    "5,000 characters": "m" * 5000,
    "5,000 characters in short names": "/".join(["d"] * 2500),
    "a name over 255 bytes": "/tmp/" + "n" * 300 + "/m",
    "a name of 100 CJK characters": "/tmp/" + "音" * 100,
    "NUL": "models/a\0b",
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("m") / "model", seed=0)


@pytest.fixture
def copy_of(model_dir, tmp_path):
    """A fresh copy of the tiny model folder to spoil."""
    import shutil

    def make(name="spoilt"):
        return Path(shutil.copytree(model_dir, tmp_path / name))
    return make


@pytest.fixture(autouse=True)
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SMU_RUNS_DIR", str(tmp_path / "runs"))


@pytest.fixture
def music(tmp_path, make_midi):
    for i in range(2):
        make_midi(tmp_path / "music", [(k * 240, 240, 50 + (k * (i + 3)) % 20, 80) for k in range(24)],
                  name=f"p{i}.mid")
    return tmp_path / "music"


# ----------------------------------------------------------------------------- paths

@pytest.mark.parametrize("kind", BAD_PATHS)
def test_bad_folder_paths_are_typed_errors(kind):
    path = BAD_PATHS[kind]
    for fn in (load_checkpoint, read_config, checked_path):
        with pytest.raises(SMUCheckpointError) as e:
            fn(path)
        assert e.value.reason
        assert len(str(e.value)) < 500  # the path is shortened in the message
    with pytest.raises(SMUInputError):
        user_folder("  " + path + "  ")
    assert not is_checkpoint(path) and not is_finetuned(path)
    assert task_heads(path) == [] and load_masker_scores(path) == {}


def test_bad_path_reasons():
    def reason(p):
        with pytest.raises(SMUInputError) as e:
            user_folder(p)
        return e.value.reason

    assert "no such user 'nosuchuser_smu28'" in reason("~nosuchuser_smu28/m")
    assert "5,000 bytes" in reason("m" * 5000)
    assert "300 bytes" in reason("/tmp/" + "n" * 300)
    assert "NUL" in reason("a\0b")
    assert "empty" in reason("   ")
    assert user_folder("~/x") == Path.home() / "x"


@pytest.mark.parametrize("kind", ["unknown user", "5,000 characters", "NUL"])
def test_cli_bad_model_path(kind, music, capsys):
    assert main(["explain", str(music / "p0.mid"), "--model", BAD_PATHS[kind]]) == 2
    last_err(capsys)


@pytest.mark.parametrize("kind", ["unknown user", "5,000 characters", "a name over 255 bytes"])
def test_app_model_picker_bad_path(kind):
    at = AppTest.from_file(page("explore.py"), default_timeout=60)
    at.session_state[A.K_MODEL_A] = BAD_PATHS[kind]
    at.run()
    assert not at.exception, at.exception
    assert any("Cannot use this model folder" in e.value for e in at.error), texts(at)


def test_why_page_finetuned_folder_bad_path(model_dir):
    from app_helpers import ROOT

    sample = sorted((ROOT / "sample_midi").glob("*.mid"))[0]
    at = AppTest.from_file(page("why.py"), default_timeout=120)
    at.session_state[A.K_PIECE] = (sample.name, sample.read_bytes())
    at.session_state[A.K_MODEL_A] = str(model_dir)
    at.run()
    at.selectbox(key="why_ft_choice").set_value(W.OTHER_FOLDER).run()
    for bad in (BAD_PATHS["unknown user"], BAD_PATHS["5,000 characters"]):
        at.text_input(key="why_ft_path").set_value(bad).run()
        assert not at.exception, at.exception
        assert any("no such user" in e.value or "5,000 bytes" in e.value for e in at.error), texts(at)


# ----------------------------------------------------------------------------- JSON beyond the parser

HUGE_INT = "9" * 5000


def deep(n=100_000) -> str:
    return "[" * n + "]" * n


@pytest.mark.parametrize("spoil", ["huge int", "deep"])
@pytest.mark.parametrize("name", [CONFIG_NAME, TOKENIZER_NAME])
def test_config_and_tokenizer_json_beyond_the_parser(copy_of, name, spoil):
    d = copy_of()
    text = (d / name).read_text() if (d / name).is_file() else None
    if spoil == "huge int":
        doc = json.loads(text) if text else {}
        target = doc["model"] if name == CONFIG_NAME else doc
        first = next(iter(target))
        bad = json.dumps(doc).replace(f'"{first}": {json.dumps(target[first])}', f'"{first}": {HUGE_INT}', 1)
        assert HUGE_INT in bad
    else:
        bad = deep()
    (d / name).write_text(bad)
    with pytest.raises(SMUCheckpointError) as e:
        load_checkpoint(d)
    assert ("too long" in e.value.reason) if spoil == "huge int" else ("nested too deeply" in e.value.reason)
    if name == CONFIG_NAME:
        assert not is_finetuned(d)


@pytest.mark.parametrize("spoil", ["huge int", "deep"])
def test_masker_scores_beyond_the_parser(copy_of, spoil):
    d = copy_of()
    (d / SCORES_NAME).write_text(deep() if spoil == "deep" else '{"format": ' + HUGE_INT + "}")
    assert load_masker_scores(d) == {}  # a shortcut only: the app runs the model instead
    with pytest.raises(SMUCheckpointError) as e:
        load_masker_scores(d, strict=True)
    why = "nested too deeply" if spoil == "deep" else "too long"
    assert why in e.value.reason
    A._stored_scores.clear()
    at = AppTest.from_file(page("explore.py"), default_timeout=60)
    at.session_state[A.K_MODEL_A] = str(d)
    at.run()
    assert not at.exception, at.exception
    assert not at.error, texts(at)
    assert any("masker scores stored beside this model cannot be read" in c.value and why in c.value
               for c in at.caption), texts(at)


def test_cli_config_with_huge_int(copy_of, music, capsys):
    d = copy_of()
    (d / TOKENIZER_NAME).write_text(deep())
    assert main(["explain", str(music / "p0.mid"), "--model", str(d)]) == 2
    assert "nested too deeply" in last_err(capsys)


@pytest.mark.parametrize("spoil", ["huge int", "deep"])
def test_cli_run_config_beyond_the_parser(spoil, music, tmp_path, capsys):
    cfg = tmp_path / "run.json"
    cfg.write_text(deep() if spoil == "deep" else '{"size": "tiny", "train": {"seed": ' + HUGE_INT + "}}")
    assert main(["pretrain", "--strategy", "random", "--data", str(music), "--out", str(tmp_path / "run"),
                 "--config", str(cfg)]) == 2
    assert ("nested too deeply" if spoil == "deep" else "too long") in last_err(capsys)


@pytest.mark.parametrize("strategy", ["oops", ["a"], {"name": ["a", "b"]}, {"name": 5}])
def test_config_metadata_of_any_type(copy_of, strategy):
    """config.json's metadata is shown (the masker warning names the strategy): any JSON type is a
    warning, never an exception."""
    d = copy_of()
    meta = json.loads((d / CONFIG_NAME).read_text())
    meta["strategy"] = strategy
    (d / CONFIG_NAME).write_text(json.dumps(meta))
    assert A.untrained_masker_note(d)
    at = AppTest.from_file(page("explore.py"), default_timeout=60)
    at.session_state[A.K_MODEL_A] = str(d)
    at.run()
    assert not at.exception, at.exception
    assert any("masker head was never trained" in w.value for w in at.warning)


# ----------------------------------------------------------------------------- learning rates, seeds

BAD_LRS = ["1e300", "nan", "inf", "-inf", "-1e-4", "0", "2"]
BAD_SEEDS = ["-1", str(2**70), str(2**32)]


def pretrain_args(music, tmp_path, *extra):
    return ["pretrain", "--strategy", "random", "--data", str(music), "--out", str(tmp_path / "run"),
            "--steps", "1", "--no-bar", *extra]


@pytest.mark.parametrize("lr", BAD_LRS)
def test_bad_lr_flag(lr, music, tmp_path, capsys):
    assert main(pretrain_args(music, tmp_path, f"--lr={lr}")) == 2
    assert "--lr" in last_err(capsys)
    assert not (tmp_path / "run" / "progress.jsonl").exists()


@pytest.mark.parametrize("seed", BAD_SEEDS)
@pytest.mark.parametrize("command", ["pretrain", "explain", "finetune", "tokenize"])
def test_bad_seed_flag(seed, command, music, model_dir, tmp_path, capsys):
    args = {"pretrain": pretrain_args(music, tmp_path, "--seed", seed),
            "explain": ["explain", str(music / "p0.mid"), "--model", str(model_dir), "--seed", seed],
            "finetune": ["finetune", "--task", "folder", "--folder", str(music), "--labels", "x.csv",
                         "--from", "none", "--out", str(tmp_path / "ft"), "--seed", seed],
            "tokenize": ["tokenize", str(music), "--task", "pretrain", "--out", str(tmp_path / "tok"),
                         "--seed", seed]}[command]
    assert main(args) == 2
    err = last_err(capsys)
    assert "--seed" in err and "2**32" in err
    assert len(err) < 200


def test_seed_limits_accepted_values():
    from smu_explain.cli import build_parser, check_flags

    for seed in ("0", str(MAX_SEED)):
        check_flags(build_parser().parse_args(["explain", "p.mid", "--model", "m", "--seed", seed]))


@pytest.mark.parametrize("train", [{"lr": 1e300}, {"lr": float("nan")}, {"seed": 2**70}, {"seed": -1}])
def test_bad_lr_and_seed_in_config(train, music, tmp_path, capsys):
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"size": "tiny", "train": train}))  # NaN as JSON's NaN literal
    assert main(pretrain_args(music, tmp_path, "--config", str(cfg))) == 2
    err = last_err(capsys)
    assert ("lr" in err) if "lr" in train else ("seed" in err)


# ----------------------------------------------------------------------------- memory

def test_available_memory_is_read():
    n = C.available_memory()
    assert n is None or n > 0
    C.check_memory(1000, "x", purpose="training")  # a small model fits any machine


def test_check_memory_numbers(monkeypatch):
    monkeypatch.setattr(C, "available_memory", lambda: 10 * 10**9)
    C.check_memory(10**9 // 16 * 10, "x", purpose="training")  # 10 GB exactly fits
    with pytest.raises(SMUCheckpointError) as e:
        C.check_memory(10**9, "cfg.json", purpose="training")
    assert "1,000,000,000 parameters" in e.value.reason and "16.0 GB" in e.value.reason
    assert "10.0 GB" in e.value.reason and e.value.path == "cfg.json"
    C.check_memory(10**9, "x", purpose="load")  # 8 GB to load
    with pytest.raises(SMUInputError):
        C.check_memory(2 * 10**9, "x", purpose="load", error=SMUInputError)
    monkeypatch.setattr(C, "available_memory", lambda: None)  # a machine that does not say
    C.check_memory(10**12, "x", purpose="training")


def test_load_refused_when_weights_do_not_fit(model_dir, monkeypatch):
    monkeypatch.setattr(C, "available_memory", lambda: 1000)
    built = []
    monkeypatch.setattr(C, "check_weights_header", lambda *a: built.append(a))
    with pytest.raises(SMUCheckpointError) as e:
        load_checkpoint(model_dir)
    assert "parameters needs about" in e.value.reason and e.value.path.endswith(WEIGHTS_NAME)
    assert not built  # refused before the model is made, even on the meta device


def test_pretrain_of_a_model_larger_than_memory(music, tmp_path, monkeypatch, capsys):
    """A ~3.6e9-parameter config (under the old 4e9 cap) on a machine with 16 GB: refused with the
    numbers before any weight is allocated (MidiBert is never built)."""
    import smu_explain.model as M

    def no_build(*a, **k):
        raise AssertionError("the model was built")

    monkeypatch.setattr(C, "available_memory", lambda: 16 * 10**9)
    monkeypatch.setattr(M.MidiBert, "__init__", no_build)
    cfg = tmp_path / "big.json"
    cfg.write_text(json.dumps({"size": "base", "model": {"d_model": 4096, "n_layers": 18, "d_ff": 16384,
                                                          "n_heads": 16}}))
    assert main(pretrain_args(music, tmp_path, "--config", str(cfg))) == 2
    err = last_err(capsys)
    assert str(cfg) in err and "parameters needs about 58" in err and "16.0 GB" in err
    # a tiny model on a machine with almost nothing left: the same
    monkeypatch.setattr(C, "available_memory", lambda: 10**5)
    assert main(pretrain_args(music, tmp_path)) == 2
    assert "memory available on this machine" in last_err(capsys)


# ----------------------------------------------------------------------------- note cap of smu explain

def test_explain_note_cap(model_dir, music, monkeypatch, capsys):
    import smu_explain.explain as E

    assert A.MAX_NOTES == limits.MAX_NOTES == E.MAX_NOTES == 20_000
    from smu_explain.cli import build_parser

    assert build_parser().parse_args(["explain", "p", "--model", "m"]).max_notes == limits.MAX_NOTES
    monkeypatch.setattr(E, "explain_piece", lambda *a, **k: pytest.fail("explained a piece over the cap"))
    assert main(["explain", str(music / "p0.mid"), "--model", str(model_dir), "--max-notes", "23"]) == 2
    err = last_err(capsys)
    assert "24 notes" in err and "limit of 23" in err
    assert main(["explain", str(music / "p0.mid"), "--model", str(model_dir), "--max-notes", "0"]) == 2
    assert "--max-notes" in last_err(capsys)


# ----------------------------------------------------------------------------- non-finite weights

@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_weights_refused_at_load(copy_of, value, music, capsys):
    from safetensors.torch import load_file, save_file

    d = copy_of()
    state = load_file(str(d / WEIGHTS_NAME))
    name = sorted(k for k, t in state.items() if t.is_floating_point())[1]
    state[name] = state[name].clone()
    state[name].view(-1)[3] = value
    save_file(state, str(d / WEIGHTS_NAME))
    with pytest.raises(SMUCheckpointError) as e:
        load_checkpoint(d)
    assert repr(name) in e.value.reason and "1 NaN or infinite" in e.value.reason
    assert main(["explain", str(music / "p0.mid"), "--model", str(d)]) == 2
    assert name in last_err(capsys)


def test_nan_weights_in_the_app(copy_of):
    from safetensors.torch import load_file, save_file

    d = copy_of("nan-model")
    state = {k: (torch.full_like(t, math.nan) if t.is_floating_point() else t)
             for k, t in load_file(str(d / WEIGHTS_NAME)).items()}
    save_file(state, str(d / WEIGHTS_NAME))
    at = AppTest.from_file(page("explore.py"), default_timeout=60)
    at.session_state[A.K_MODEL_A] = str(d)
    at.run()
    assert not at.exception, at.exception
    assert any("NaN or infinite" in e.value for e in at.error), texts(at)


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"x": ' + "9" * 5000 + "}", "{not json"])
def test_other_json_readers_give_typed_errors(tmp_path, text):
    """The split lists, a train config and a study result: deep nesting, a 5,000-digit number or
    broken text are typed errors (issue 28, item 4's class), not a RecursionError / ValueError."""
    from smu_explain.corpora import load_json as _load_json
    from smu_explain.study.plan import read_json
    from smu_explain.train_config import TrainConfig

    p = tmp_path / "x.json"
    p.write_text(text)
    for read in (_load_json, TrainConfig.load, read_json):
        with pytest.raises(SMUInputError):
            read(p)


def test_refuse_non_finite_fast_path_is_exact():
    """The sum-based fast path neither misses a NaN / infinity nor refuses finite values whose
    sum overflows (they are checked value by value)."""
    from smu_explain.errors import SMUCheckpointError
    from smu_explain.weights import refuse_non_finite

    big = torch.full((8,), 3e38)  # finite; its float32 sum is inf
    refuse_non_finite({"w": big, "b": torch.zeros(3, dtype=torch.bfloat16)}, "w.safetensors")
    for bad in (float("nan"), float("inf"), -float("inf")):
        t = torch.zeros(1000)
        t[123] = bad
        with pytest.raises(SMUCheckpointError, match="1 NaN or infinite"):
            refuse_non_finite({"w": t}, "w.safetensors")
    mixed = torch.tensor([float("inf"), -float("inf"), 1.0])  # sum is NaN
    with pytest.raises(SMUCheckpointError, match="2 NaN or infinite"):
        refuse_non_finite({"w": mixed}, "w.safetensors")
