"""Run the hostile inputs of issue 15 against the ``smu`` CLI and count the outcomes.

    PYTHONPATH=. python scripts/hostile_probe.py [--timeout 60]

Every case runs ``python -m smu_explain.cli ...`` in a subprocess (with a time
limit and a 4 GB address-space limit) and is classed as:

- ``typed``: exit 2 and the last stderr line starts with ``error:`` (no traceback);
- ``traceback``: a Python traceback on stderr;
- ``hang``: killed by the time limit (or by the memory limit);
- ``silent``: exit 0 where the input should have been refused (or a wrong result);
- ``ok``: exit 0 with the correct result (cases where success is right);
- ``other``: anything else.

Prints one line per case and the totals. The fixtures (a tiny model, small MIDI
files, hostile scores and configs) are made in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

XML_HEAD = ('<?xml version="1.0" encoding="UTF-8"?>\n<score-partwise version="3.1"><part-list>'
            '<score-part id="P1"><part-name>P</part-name></score-part></part-list><part id="P1">')


def score_xml(fifths: str = "0", beats: str = "4", body: str | None = None, mode: str = "") -> str:
    notes = body or "".join(
        f'<note><pitch><step>{s}</step><octave>4</octave></pitch><duration>1</duration><type>quarter</type></note>'
        for s in "CDEF")
    return (XML_HEAD + f'<measure number="1"><attributes><divisions>1</divisions><key><fifths>{fifths}</fifths>{mode}'
            f'</key><time><beats>{beats}</beats><beat-type>4</beat-type></time></attributes>{notes}</measure>'
            '</part></score-partwise>\n')


def make_fixtures(root: Path) -> dict[str, Path]:
    import symusic
    import torch

    from smu_explain.checkpoint import save_checkpoint
    from smu_explain.model import MidiBert, ModelConfig
    from smu_explain.tokenizer import Tokenizer
    from smu_explain.tokenizer_config import TokenizerConfig

    f: dict[str, Path] = {}
    tok = Tokenizer(TokenizerConfig(max_len=32))
    torch.manual_seed(0)
    model = MidiBert(ModelConfig.named("tiny", tok.vocab_sizes, tok.attributes, max_len=32))
    f["model"] = save_checkpoint(root / "model", model, extra={"tokenizer": tok.config.to_dict()})
    good = root / "good"
    good.mkdir()
    for i in range(4):
        s = symusic.Score(480)
        tr = symusic.Track(name="piano", program=0)
        for k in range(40):
            tr.notes.append(symusic.Note(k * 240, 240, 48 + (k * (i + 3)) % 24, 80))
        s.tracks.append(tr)
        s.dump_midi(str(good / f"p{i}.mid"))
    f["good"] = good
    f["mid"] = good / "p0.mid"

    def bad_model(name: str, change, file: str = "config.json") -> Path:
        d = root / name
        shutil.copytree(f["model"], d)
        meta = json.loads((d / file).read_text())
        change(meta)
        (d / file).write_text(json.dumps(meta))
        f[name] = d
        return d

    bad_model("m_heads0", lambda m: m["model"].update(n_heads=0))
    bad_model("m_layers45", lambda m: m["model"].update(n_layers=4.5))
    bad_model("m_dmodel_neg", lambda m: m["model"].update(d_model=-64))
    bad_model("m_maxlen_huge", lambda m: m["model"].update(max_len=10 ** 9))
    bad_model("m_dmodel_huge", lambda m: m["model"].update(d_model=2 ** 22, d_ff=2 ** 22))
    bad_model("m_vocab_huge", lambda m: m["model"].update(vocab_sizes=[10 ** 9] * 4))
    bad_model("m_tok_mismatch", lambda t: t.update(use_velocity=True), "tokenizer.json")
    bad_model("m_eps_str", lambda m: m["model"].update(layer_norm_eps="x"))
    pk = root / "pickle_only"
    pk.mkdir()
    (pk / "model.pt").write_bytes(b"\x80\x04K\x01.")
    f["pickle_only"] = pk

    (root / "fifths.musicxml").write_text(score_xml(fifths="99999999"))
    f["fifths"] = root / "fifths.musicxml"
    (root / "fifths_major.musicxml").write_text(score_xml(fifths="99999999", mode="<mode>major</mode>"))
    f["fifths_major"] = root / "fifths_major.musicxml"
    (root / "fifths_neg.musicxml").write_text(score_xml(fifths="-99999999"))
    f["fifths_neg"] = root / "fifths_neg.musicxml"
    (root / "beats.musicxml").write_text(score_xml(beats="99999999"))
    f["beats"] = root / "beats.musicxml"
    (root / "empty.mxl").write_bytes(b"")
    f["empty_mxl"] = root / "empty.mxl"
    (root / "zip.mxl").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    f["zip_mxl"] = root / "zip.mxl"

    f["lr_str"] = root / "lr_str.json"
    f["lr_str"].write_text(json.dumps({"size": "tiny", "train": {"lr": "fast"}}))
    f["steps_str"] = root / "steps_str.json"
    f["steps_str"].write_text(json.dumps({"size": "tiny", "train": {"warmup_steps": "many"}}))
    f["model_layers_float"] = root / "model_layers_float.json"
    f["model_layers_float"].write_text(json.dumps({"size": "tiny", "model": {"n_layers": 2.5}}))

    res = root / "resume_bad"
    shutil.copytree(f["m_heads0"], res)
    (res / "checkpoint.pt").write_bytes(b"not a checkpoint")
    f["resume_bad"] = res

    notmusic = root / "notmusic"
    notmusic.mkdir()
    (notmusic / "a.mid").write_text("this is text, not MIDI\n")
    (notmusic / "b.mid").write_text("neither is this\n")
    (notmusic / "labels.csv").write_text("file,label\na.mid,x\nb.mid,y\n")
    f["notmusic"] = notmusic
    (root / "binary_progress.jsonl").write_bytes(bytes(range(256)) * 8)
    f["binary_progress"] = root / "binary_progress.jsonl"

    # the token cache: text that is valid ABC, then the same bytes named .mid
    abc = "X:1\nT:t\nM:4/4\nL:1/4\nK:C\nC D E F | G A B c | c B A G | F E D C |\n" * 1
    ca, cb = root / "cache_a", root / "cache_b"
    ca.mkdir()
    cb.mkdir()
    (ca / "t.abc").write_text(abc)
    (ca / "labels.csv").write_text("file,label\nt.abc,x\n")
    (cb / "t.mid").write_text(abc)
    (cb / "labels.csv").write_text("file,label\nt.mid,x\n")
    f["cache_a"], f["cache_b"] = ca, cb

    real = root / "real.csv"
    real.write_text("")
    (root / "link.csv").symlink_to(real)
    f["link_csv"], f["real_csv"] = root / "link.csv", real
    # a non-regular output target (never a real device: the old code replaced them, as root)
    f["fifo"] = root / "out.fifo"
    os.mkfifo(f["fifo"])
    return f


def cases(f: dict[str, Path], tmp: Path):
    """(name, argv, expect) with expect 'error' (a typed refusal) or a callable(result) -> bool (correct)."""
    m, mid = str(f["model"]), str(f["mid"])
    pre = ["pretrain", "--strategy", "random", "--config", "tiny", "--steps", "1", "--batch-size", "2",
           "--max-len", "32", "--no-bar", "--no-cache"]
    out = [
        ("score key fifths 99999999", ["explain", str(f["fifths"]), "--model", m], "error"),
        ("score key fifths 99999999 + mode major", ["explain", str(f["fifths_major"]), "--model", m], "error"),
        ("score key fifths -99999999", ["explain", str(f["fifths_neg"]), "--model", m], "error"),
        ("score beats 99999999", ["explain", str(f["beats"]), "--model", m], "error"),
        ("empty .mxl", ["explain", str(f["empty_mxl"]), "--model", m], "error"),
        ("empty zip .mxl", ["explain", str(f["zip_mxl"]), "--model", m], "error"),
    ]
    for k in ("m_heads0", "m_layers45", "m_dmodel_neg", "m_maxlen_huge", "m_dmodel_huge", "m_vocab_huge",
              "m_tok_mismatch", "m_eps_str"):
        out.append((f"config.json {k}", ["explain", mid, "--model", str(f[k])], "error"))
        out.append((f"evaluate {k}", ["evaluate", "--model", str(f[k]), "--paths", mid, "--no-cache"], "error"))
    out += [
        ("pickle-only folder", ["explain", mid, "--model", str(f["pickle_only"])],
         lambda r: r.returncode == 2 and "pickle weights" in r.stderr),
        ("finetune from pickle-only", ["finetune", "--task", "folder", "--from", str(f["pickle_only"]),
                                       "--out", str(tmp / "ft_pk"), "--folder", str(f["good"]),
                                       "--labels", str(f["good"] / "x.csv"), "--no-bar"],
         lambda r: r.returncode == 2 and "pickle weights" in r.stderr),
        ("run config lr string", pre + ["--data", str(f["good"]), "--out", str(tmp / "o_lr"),
                                        "--config", str(f["lr_str"])], "error"),
        ("run config warmup_steps string", pre + ["--data", str(f["good"]), "--out", str(tmp / "o_st"),
                                           "--config", str(f["steps_str"])], "error"),
        ("run config n_layers 2.5", pre + ["--data", str(f["good"]), "--out", str(tmp / "o_nl"),
                                           "--config", str(f["model_layers_float"])], "error"),
        ("resume with invalid model config", pre + ["--data", str(f["good"]), "--out", str(f["resume_bad"]),
                                                    "--resume"], "error"),
        ("--progress /dev/zero", pre + ["--data", str(f["notmusic"]), "--out", str(tmp / "o_z"),
                                        "--progress", "/dev/zero"], "error"),
        ("--progress /dev/full", pre + ["--data", str(f["notmusic"]), "--out", str(tmp / "o_f"),
                                        "--progress", "/dev/full"], "error"),
        ("--progress binary file", pre + ["--data", str(f["notmusic"]), "--out", str(tmp / "o_b"),
                                          "--progress", str(f["binary_progress"])],
         lambda r: r.returncode == 2 and "no usable music" in r.stderr.strip().splitlines()[-1]),
        ("tokenize: every file skipped", ["tokenize", str(f["notmusic"]), "--task", "folder", "--labels",
                                          str(f["notmusic"] / "labels.csv"), "--out", str(tmp / "tk0"),
                                          "--no-cache"], "error"),
        ("--val-fraction -0.5", pre + ["--data", str(f["good"]), "--out", str(tmp / "o_vf"),
                                       "--val-fraction", "-0.5"], "error"),
        ("--val-fraction 1.5", pre + ["--data", str(f["good"]), "--out", str(tmp / "o_vf2"),
                                      "--val-fraction", "1.5"], "error"),
        ("--top-k -1", ["explain", mid, "--model", m, "--top-k", "-1"], "error"),
        ("--top-k 0", ["explain", mid, "--model", m, "--top-k", "0"], "error"),
        ("--rows -5", ["explain", mid, "--model", m, "--rows", "-5"], "error"),
        ("--ratio nan", ["explain", mid, "--model", m, "--ratio", "nan"], "error"),
        ("--csv through a symlink", ["explain", mid, "--model", m, "--csv", str(f["link_csv"])],
         lambda r: r.returncode == 0 and f["link_csv"].is_symlink() and f["real_csv"].stat().st_size > 0),
        ("--json to a FIFO", ["explain", mid, "--model", m, "--json", str(f["fifo"])],
         lambda r: r.returncode == 0 and f["fifo"].is_fifo()),
        ("evaluate --batch-size 0", ["evaluate", "--model", m, "--paths", mid, "--batch-size", "0", "--no-cache"],
         "error"),
    ]
    return out


def run_case(argv, timeout: float, env) -> tuple[str, subprocess.CompletedProcess | None]:
    def limits():
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    try:
        r = subprocess.run([sys.executable, "-m", "smu_explain.cli", *argv], capture_output=True, text=True,
                           timeout=timeout, env=env, preexec_fn=limits)
    except subprocess.TimeoutExpired:
        return "hang", None
    return "", r


def classify(r: subprocess.CompletedProcess, expect) -> str:
    if "Traceback" in r.stderr:
        return "traceback"
    if r.returncode in (-9, 137) or "MemoryError" in r.stderr:
        return "hang"
    lines = r.stderr.strip().splitlines()
    typed = r.returncode == 2 and bool(lines) and lines[-1].startswith("error:")
    if expect == "error":
        if typed:
            return "typed"
        return "silent" if r.returncode == 0 else "other"
    if expect(r):
        return "typed" if typed else "ok"
    return "silent" if r.returncode == 0 else ("typed-wrong" if typed else "other")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("-v", action="store_true", help="print the last stderr line of each case")
    a = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1", SMU_CACHE_DIR="")
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        env["SMU_CACHE_DIR"] = str(tmp / "cache")
        f = make_fixtures(tmp)
        # prime the token cache with the ABC bytes, then read the same bytes named .mid
        run_case(["tokenize", str(f["cache_a"]), "--task", "folder", "--labels", str(f["cache_a"] / "labels.csv"),
                  "--out", str(tmp / "tk_a")], a.timeout, env)
        all_cases = cases(f, tmp) + [
            ("cached text named .mid", ["tokenize", str(f["cache_b"]), "--task", "folder", "--labels",
                                        str(f["cache_b"] / "labels.csv"), "--out", str(tmp / "tk_b")], "error")]
        fifo_reader = os.open(f["fifo"], os.O_RDONLY | os.O_NONBLOCK)  # so writers do not block
        counts: dict[str, int] = {}
        for name, argv, expect in all_cases:
            kind, r = run_case(argv, a.timeout, env)
            kind = kind or classify(r, expect)
            counts[kind] = counts.get(kind, 0) + 1
            last = "" if r is None else (r.stderr.strip().splitlines() or [""])[-1][:150]
            print(f"{kind:10s} {name}" + (f"   | {last}" if a.v else ""), flush=True)
        os.close(fifo_reader)
        print(f"\n{len(all_cases)} hostile inputs: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
