"""docs/QUICKSTART.md's five lines work as written (on a tiny model instead of the demo one)."""

import re
from pathlib import Path

import plotly.graph_objects as go
import pytest
from app_helpers import make_model

ROOT = Path(__file__).resolve().parents[1]


def test_the_five_lines_of_the_quickstart(tmp_path, monkeypatch):
    text = (ROOT / "docs" / "QUICKSTART.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    lines = [ln for ln in code.splitlines() if ln.strip()]
    assert len(lines) == 5
    folder = make_model(tmp_path / "m", seed=0)
    code = code.replace('"models/demo-adversarial"', repr(str(folder))).replace(".show()", "")
    monkeypatch.chdir(ROOT)
    ns: dict = {}
    exec(compile(code, "QUICKSTART.md", "exec"), ns)
    notes, piece = ns["notes"], ns["piece"]
    from smu_explain.checkpoint import Checkpoint
    from smu_explain.notebook import NotebookModel

    assert isinstance(ns["model"], NotebookModel) and isinstance(ns["model"], Checkpoint)
    assert len(notes) == len(piece) > 0
    assert {"score", "picked", "frozen", "correct_pitch", "pred_pitch"} <= set(notes.columns)
    fig = __import__("smu_explain").piano_roll(notes, piece)
    assert isinstance(fig, go.Figure) and len(fig.data) > 0
    for wrong in (notes[["score"]], None, piece):  # not a notes table: said so, not a KeyError
        with pytest.raises(ValueError, match="notes table with columns onset_q"):
            __import__("smu_explain").piano_roll(wrong, piece)
