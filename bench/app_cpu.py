#!/usr/bin/env python
"""CPU cost of the app's controls, page by page; prints one JSON object.

Where ``bench/app_latency.py`` times what a person waits for in a browser (wall clock, so
it moves with the machine's load), this script counts the work behind each control: the
CPU seconds of the server side (``time.process_time`` of this process around one Streamlit
``AppTest`` run of the page, every thread included) and the bytes of figure JSON the run
sends to the browser (what Plotly has to parse and draw). Both hardly move with the load,
so two versions of the app can be compared on a busy machine: ``--root`` points the pages
at another checkout (e.g. ``git worktree add /tmp/base <commit>``) and ``--rounds`` runs
every control that many times (the median is reported).

Per page, in the order a person meets them: the first render, the same again (``rerun``),
then each control once and back. Per control: ``cpu_s_first_round`` (the first round: nothing
cached in the process yet, so models load and model passes run) and ``cpu_s_median_later``
(the later rounds: what a warm server does), and ``figure_json_bytes`` of its last run. The
demo models are used (``models/demo-adversarial``, ``models/demo-random``); no warm-up thread.

Usage: ``python bench/app_cpu.py [--root DIR] [--rounds 3]``
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


def figure_bytes(at) -> int:
    """Bytes of figure JSON in an AppTest run (every ``st.plotly_chart`` of the page)."""
    total = 0
    for el in at.get("plotly_chart"):
        total += len(el.proto.spec.encode("utf-8"))
    return total


def measure(fn) -> tuple[float, object]:
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def run_steps(root: Path, rounds: int) -> dict:
    from streamlit.testing.v1 import AppTest

    pages = root / "app_pages"
    samples = sorted(p.name for p in (root / "sample_midi").glob("*.mid"))
    res: dict[str, list] = {}

    def rec(name, at_fn):
        s, at = measure(at_fn)
        if at.exception:
            raise RuntimeError(f"{name}: {at.exception[0].message}")
        res.setdefault(name, []).append((s, figure_bytes(at)))
        return at

    for r in range(rounds):
        # Explore: first sample, both demo models cached after round 0
        at = AppTest.from_file(str(pages / "explore.py"), default_timeout=600)
        rec("explore_first", at.run)
        rec("explore_rerun", at.run)
        rec("explore_ratio_up", at.slider(key="explore_ratio").set_value(0.16).run)
        rec("explore_ratio_back", at.slider(key="explore_ratio").set_value(0.15).run)
        note = int(at.number_input(key="explore_note").value)
        rec("explore_note_number", at.number_input(key="explore_note").set_value(note + 1).run)
        rec("explore_other_sample", at.selectbox(key="explore_sample").set_value(samples[2]).run)
        rec("explore_back_to_first_sample", at.selectbox(key="explore_sample").set_value(samples[0]).run)
        # Compare
        at = AppTest.from_file(str(pages / "compare.py"), default_timeout=600)
        rec("compare_first", at.run)
        rec("compare_rerun", at.run)
        rec("compare_ratio_up", at.slider(key="compare_ratio").set_value(0.16).run)
        rec("compare_ratio_back", at.slider(key="compare_ratio").set_value(0.15).run)
        rec("compare_sample_folder", at.button(key="compare_eval").click().run)
        rec("compare_folder_rerun", at.run)
        rec("compare_folder_ratio_up", at.slider(key="compare_ratio").set_value(0.16).run)
        rec("compare_folder_ratio_back", at.slider(key="compare_ratio").set_value(0.15).run)
        # Why
        at = AppTest.from_file(str(pages / "why.py"), default_timeout=600)
        rec("why_first", at.run)
        rec("why_rerun", at.run)
        for tab in ("Attention", "Masker", "Attributions"):  # a rerun where the tabs rerun the page
            at.session_state["why_tab"] = tab
            rec(f"why_tab_{tab.lower()}", at.run)
        note = int(at.number_input(key="why_note").value)
        rec("why_note_number", at.number_input(key="why_note").set_value(note + 1).run)
        rec("why_note_back", at.number_input(key="why_note").set_value(note).run)
        print(f"round {r + 1}/{rounds} done", file=sys.stderr)
    out = {}
    for name, vals in res.items():
        secs = [s for s, _ in vals]
        out[name] = {"cpu_s_first_round": round(secs[0], 3),
                     "cpu_s_median_later": round(statistics.median(secs[1:]), 3) if len(secs) > 1 else None,
                     "figure_json_bytes": vals[-1][1]}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[1]),
                    help="the checkout whose pages and library are measured")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    root = Path(args.root).resolve()
    sys.path.insert(0, str(root))
    os.chdir(root)
    os.environ.setdefault("SMU_NO_WARMUP", "1")
    import logging

    logging.getLogger("streamlit").setLevel(logging.ERROR)
    import smu_explain

    assert Path(smu_explain.__file__).resolve().is_relative_to(root), smu_explain.__file__
    t0 = time.process_time()
    steps = run_steps(root, args.rounds)
    print(json.dumps({"root": str(root), "rounds": args.rounds, "load": os.getloadavg()[0],
                      "total_cpu_s": round(time.process_time() - t0, 2), "steps": steps}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
