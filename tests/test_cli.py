"""The ``smu`` command line: help, a tiny pretrain run end to end, SIGTERM, resume,
explain/evaluate outputs, fine-tuning on a labelled folder, one-line errors."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smu_explain.callbacks import read_progress
from smu_explain.checkpoint import load_model
from smu_explain.cli import main
from smu_explain.resume import load_train_state

SMU = [sys.executable, "-m", "smu_explain.cli"]
ENV = dict(os.environ, OMP_NUM_THREADS="1")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def midi_dir(tmp_path_factory, make_midi):
    """8 short pieces: 'low' ones in the bass, 'high' ones in the treble; labels.csv beside them."""
    d = tmp_path_factory.mktemp("midis")
    rows = []
    for i in range(8):
        label = "high" if i % 2 else "low"
        base = 72 if label == "high" else 40
        notes = [(k * 240, 240, base + (k * (i + 2)) % 12, 80) for k in range(48)]
        make_midi(d, notes, name=f"piece{i}.mid")
        rows.append((f"piece{i}.mid", label))
    with open(d / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label"])
        w.writerows(rows)
    return d


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, midi_dir):
    out = tmp_path_factory.mktemp("pre") / "run"
    r = subprocess.run(SMU + ["pretrain", "--strategy", "adversarial", "--data", str(midi_dir), "--config", "tiny",
                              "--steps", "6", "--batch-size", "4", "--max-len", "32", "--out", str(out),
                              "--checkpoint-every", "3", "--eval-every", "3", "--no-cache", "--seed", "1"],
                       env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "done: finished 6 steps" in r.stdout
    return out


@pytest.mark.parametrize("cmd", ["pretrain", "finetune", "evaluate", "explain", "tokenize"])
def test_every_command_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    assert f"usage: smu {cmd}" in capsys.readouterr().out


def test_pretrain_end_to_end(pretrained):
    recs = read_progress(pretrained / "progress.jsonl")
    assert recs[0]["event"] == "start" and recs[0]["total_steps"] == 6
    assert recs[-1]["event"] == "status" and recs[-1]["status"] == "done"
    assert [r["step"] for r in recs if r["event"] == "eval"] == [3, 6]
    model = load_model(pretrained)
    info = model.checkpoint_info
    assert info["strategy"]["name"] == "adversarial" and info["tokenizer"]["max_len"] == 32
    assert info["training_data"]["train_windows"] > 0
    assert load_train_state(pretrained)["objective"]["freeze_book"] is not None


def test_pretrain_writes_what_its_data_came_to_in_the_progress_file(midi_dir, tmp_path):
    """The files skipped as unusable (by name, with their reasons) and a training set smaller than
    one batch go into the progress file's start record: the Train page's status line reads them
    (test_app_train: the sentence it makes of them; the page is not imported here: importing a page
    runs it outside a session, and its form would stay open for the AppTests after it)."""
    import shutil

    data = tmp_path / "data"
    data.mkdir()
    for i in (0, 1):
        shutil.copy(midi_dir / f"piece{i}.mid", data)
    (data / "notes.mid").write_text("not a MIDI file")
    (data / "empty.mid").write_bytes(b"")
    out = tmp_path / "run"
    assert main(["pretrain", "--strategy", "random", "--data", str(data), "--config", "tiny", "--steps", "1",
                 "--batch-size", "64", "--max-len", "32", "--out", str(out), "--no-cache", "--no-bar"]) == 0
    start = read_progress(out / "progress.jsonl")[0]
    facts = start["data"]
    assert start["event"] == "start" and facts["skipped"] == 2
    assert sorted(name for name, _ in facts["skipped_files"]) == ["empty.mid", "notes.mid"]
    assert all(why for _, why in facts["skipped_files"])
    assert facts["batch_size_asked"] == 64 and 0 < facts["train_windows"] < 64
    assert load_model(out).checkpoint_info["training_data"]["skipped_files"] == facts["skipped_files"]


def test_explain_table_json_and_csv(pretrained, midi_dir, tmp_path, capsys):
    piece = str(midi_dir / "piece0.mid")
    assert main(["explain", piece, "--model", str(pretrained), "--rows", "5"]) == 0
    out = capsys.readouterr().out
    assert "score" in out and "picked" in out and "43 more rows" in out and "48 notes" in out
    # the recovery accuracies come with the best no-model rule on the same masked notes (METHOD.md 9)
    from smu_explain.baselines import best_rule, piece_rules
    from smu_explain.checkpoint import load_checkpoint

    ck = load_checkpoint(pretrained)
    rules = piece_rules(ck.tokenizer, ck.tokenizer.read(piece), ratio=1 / 7, seed=0, max_len=ck.model.config.max_len)
    said = next(line for line in out.splitlines() if line.startswith("best no-model rule on the same masked notes:"))
    assert all(f"{a} {acc:.3f}" in said for a, (_, acc) in best_rule(rules).items())
    assert main(["explain", piece, "--model", str(pretrained), "--json", str(tmp_path / "e.json")]) == 0
    rows = json.loads((tmp_path / "e.json").read_text())
    assert len(rows) == 48 and {"score", "picked", "frozen", "loss_pitch", "topk_pitch"} <= set(rows[0])
    assert sum(r["picked"] for r in rows) == round(0.15 * sum(not r["frozen"] for r in rows))
    assert main(["explain", piece, "--model", str(pretrained), "--csv", str(tmp_path / "e.csv")]) == 0
    with open(tmp_path / "e.csv") as f:
        assert len(list(csv.DictReader(f))) == 48


def test_evaluate_pretrained_recovery_accuracy(pretrained, midi_dir, tmp_path, capsys):
    out = tmp_path / "scores.json"
    assert main(["evaluate", "--model", str(pretrained), "--paths", str(midi_dir), "--no-cache",
                 "--json", str(out)]) == 0
    assert "recovery accuracy" in capsys.readouterr().out
    acc = json.loads(out.read_text())["recovery_accuracy"]
    assert set(acc) == {"bar", "position", "pitch", "duration"} and all(0 <= v <= 1 for v in acc.values())
    (tmp_path / "junk.mid").write_bytes(b"not music")  # nothing usable: said in evaluate's words
    assert main(["evaluate", "--model", str(pretrained), "--paths", str(tmp_path / "junk.mid"), "--no-cache"]) == 2
    assert "no usable music to evaluate on" in capsys.readouterr().err


def test_finetune_folder_task_then_evaluate(pretrained, midi_dir, tmp_path, capsys):
    out = tmp_path / "ft"
    rc = main(["finetune", "--task", "folder", "--from", str(pretrained), "--folder", str(midi_dir),
               "--labels", str(midi_dir / "labels.csv"), "--out", str(out), "--steps", "4", "--batch-size", "4",
               "--eval-every", "2", "--no-cache", "--no-bar"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "eval masking off" in text and "macro-F1" in text and "true\\pred" in text
    res = json.loads((out / "results.json").read_text())
    assert res["classes"] == ["high", "low"] and res["mask_finetune_ratio"] == 0.15
    assert res["val"]["n"] >= 1 and res["test"]["n"] >= 1
    model = load_model(out, kind="finetuned")
    assert model.task == "folder" and model.checkpoint_info["pretrained"] == str(pretrained)
    assert main(["evaluate", "--model", str(out), "--folder", str(midi_dir), "--labels",
                 str(midi_dir / "labels.csv"), "--no-cache", "--json", str(tmp_path / "s.json")]) == 0
    scores = json.loads((tmp_path / "s.json").read_text())["test"]
    assert scores["acc"] == res["test"]["acc"] and scores["confusion"] == res["test"]["confusion"]
    # an accuracy beside what always answering the most frequent class scores (the no-model baseline)
    truth = [sum(row) for row in scores["confusion"]]
    assert scores["majority"]["acc"] == pytest.approx(max(truth) / sum(truth))
    assert "the most frequent class (" in capsys.readouterr().out


def test_finetune_without_pretraining(midi_dir, tmp_path):
    rc = main(["finetune", "--task", "folder", "--from", "none", "--size", "tiny", "--max-len", "32",
               "--folder", str(midi_dir), "--labels", str(midi_dir / "labels.csv"), "--out", str(tmp_path / "ft"),
               "--steps", "2", "--batch-size", "4", "--no-cache", "--no-bar", "--mask-ratio", "0"])
    assert rc == 0
    res = json.loads((tmp_path / "ft" / "results.json").read_text())
    assert res["pretrained"] is None and res["mask_finetune_ratio"] == 0


def test_sigterm_cancels_cleanly_and_resume_continues(midi_dir, tmp_path):
    out, prog = tmp_path / "run", tmp_path / "p.jsonl"
    args = ["pretrain", "--strategy", "random", "--data", str(midi_dir), "--config", "tiny", "--steps", "100000",
            "--batch-size", "4", "--max-len", "32", "--out", str(out), "--progress", str(prog), "--no-cache",
            "--log-every", "1", "--checkpoint-every", "0", "--eval-every", "0", "--no-bar"]
    proc = subprocess.Popen(SMU + args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not any(r["event"] == "step" for r in read_progress(prog)):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.time() < deadline, "no training step within 60 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    last = read_progress(prog)[-1]
    assert last["event"] == "status" and last["status"] == "cancelled" and "SIGTERM" in last["message"]
    stopped = load_train_state(out)["step"]
    assert stopped == last["step"] >= 1
    # a fresh run into the same folder is refused; --resume continues from the checkpoint
    assert main(args[:-10] + ["--no-bar"]) == 2
    assert main(args[:5] + ["--config", "tiny", "--steps", str(stopped + 2), "--batch-size", "4",
                            "--out", str(out), "--progress", str(prog), "--no-cache", "--no-bar", "--resume"]) == 0
    recs = read_progress(prog)
    starts = [r for r in recs if r["event"] == "start"]
    assert starts[-1]["resumed"] is True and starts[-1]["step"] == stopped
    assert recs[-1]["status"] == "done" and recs[-1]["step"] == stopped + 2


def test_errors_are_one_line_with_exit_code_2(tmp_path, pretrained):
    r = subprocess.run(SMU + ["explain", str(tmp_path / "missing.mid"), "--model", str(pretrained)],
                       env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in r.stderr
    assert "missing.mid" in r.stderr
    bad = tmp_path / "notmidi"
    bad.mkdir()
    (bad / "a.mid").write_bytes(b"this is not a MIDI file")
    prog = tmp_path / "p.jsonl"
    r = subprocess.run(SMU + ["pretrain", "--strategy", "random", "--data", str(bad), "--config", "tiny",
                              "--steps", "2", "--out", str(tmp_path / "o"), "--progress", str(prog), "--no-cache"],
                       env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: ") and "no usable music" in r.stderr
    last = read_progress(prog)[-1]
    assert last["status"] == "failed" and "no usable music" in last["message"]
    # a checkpoint folder that is not one
    assert main(["explain", str(tmp_path / "missing.mid"), "--model", str(tmp_path)]) == 2
    assert main(["pretrain", "--strategy", "random", "--data", str(tmp_path / "nowhere"), "--config", "tiny",
                 "--out", str(tmp_path / "o2"), "--no-bar"]) == 2
    assert main(["pretrain", "--strategy", "random", "--data", str(bad), "--config", str(tmp_path / "c.json"),
                 "--out", str(tmp_path / "o3"), "--no-bar"]) == 2


def test_explain_refuses_a_finetuned_model(pretrained, midi_dir, tmp_path, capsys):
    out = tmp_path / "ft"
    assert main(["finetune", "--task", "folder", "--from", str(pretrained), "--folder", str(midi_dir),
                 "--labels", str(midi_dir / "labels.csv"), "--out", str(out), "--steps", "1", "--batch-size", "4",
                 "--no-cache", "--no-bar"]) == 0
    capsys.readouterr()
    assert main(["explain", str(midi_dir / "piece0.mid"), "--model", str(out)]) == 2
    assert "fine-tuned model" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["study", "--help"], ["tokenize", "--help"]])
def test_help_does_not_import_torch(argv):
    """`smu --help` (and the study / tokenize help) stays fast: torch is imported only when a
    command runs (issue 13)."""
    code = ("import sys, smu_explain.cli as c\n"
            "try:\n    c.main(sys.argv[1:])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "loaded = sorted(m for m in ('torch', 'smu_explain.trainer', 'smu_explain.study.runner') "
            "if m in sys.modules)\n"
            "assert not loaded, loaded\n")
    r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert r.returncode == 0, r.stderr
    assert "usage: smu" in r.stdout


def test_picks_command_writes_json_and_a_sentence(tmp_path, capsys):
    """`smu picks` (issue 21): per-class masker picks with intervals, and the generated sentence."""
    import json as _json

    from app_helpers import make_model

    root = Path(__file__).resolve().parents[1]
    model = make_model(tmp_path / "m", seed=2)
    out = tmp_path / "picks.json"
    assert main(["picks", str(root / "sample_midi"), "--model", str(model), "--n-boot", "50",
                 "--max-pieces", "3", "--json", str(out), "--markdown", str(tmp_path / "picks.md")]) == 0
    res = _json.loads(out.read_text())
    assert res["sentence"] and res["sentence"] in capsys.readouterr().err
    assert (tmp_path / "picks.md").read_text().strip()
    assert main(["picks", str(tmp_path / "nowhere"), "--model", str(model)]) == 2
