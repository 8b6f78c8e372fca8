#!/usr/bin/env python
"""App latency benchmark; prints one JSON object.

1. ``bytes_to_roll_with_overlay``: from the bytes of a ~3-minute piece to a
   ready Plotly piano roll with the masker overlay, at the ``small`` model
   size, the way the Explore page draws its first view: ``read_piece`` ->
   ``explain.masker_view`` (the app's overlay: one clean pass, scores, picked, frozen) ->
   ``pianoroll.piano_roll`` -> ``Figure.to_json`` (what Streamlit sends).
   Uncached (the app caches it; this is the first view of a new piece). The
   first call is ``first_s`` (model just loaded); ``warm_s`` is the median of
   ``--repeats`` later calls. Target: warm <= 1 s on this CPU. Stages are
   reported too, and ``full_explain_s``: the full ``explain_piece`` table
   (every note masked once; the inspector, ghost layer and audio need it),
   which the page computes after the roll is on screen.
2. ``cold_start``: ``streamlit run app.py`` started from nothing to the first
   piano roll drawn in headless Chromium (bars present in the Plotly SVG).
   Target: <= 5 s on an idle 2-core machine. Skipped (reported as null with a reason)
   when Chromium or Playwright is missing or ``--no-browser`` is given.
   ``first_roll_sent_s``: when the roll's chart element arrived on the websocket (the rest is
   the browser loading Plotly and drawing); ``cpu_to_first_roll``: CPU seconds of the server
   and the browser from the page's request to the roll.
3. ``pages``: in the same browser session, every page's first render and each main
   control, ``cold`` (the first time) and ``warm`` (the same again), in seconds from the
   action until the script run it started has finished and the page is idle and drawn
   again (no running widget, no stale element, two animation frames painted: what a person
   waits for; ``server_s``: until the run's ``script_finished``): Explore (another
   sample, the ratio slider, a note number), Compare (first render, the ratio slider,
   the sample-folder evaluation), Why (the page, then its Attention and Masker tabs and back),
   Train, Report, Study. An action that starts no
   run is reported as an error at once (it changed nothing). Each timing carries the CPU
   seconds the server and the browser spent on it (``server_cpu_s``, ``browser_cpu_s``:
   comparable on a loaded machine, unlike the seconds) and the machine's load average
   (``os.getloadavg``, 1 minute) when it ended. Targets: any control <= 1 s warm, Why
   <= 5 s warm.

The piece: ``--midi PATH``, else a generated 3-minute piece (120 qpm, 4/4,
90 bars: an eighth-note melody over a quarter-note bass and half-note chords,
about 2,000 notes; deterministic). The model: ``--model DIR`` (a saved
model), else ``models/demo-adversarial`` when it is there and small, else a
randomly initialised ``small`` model (speed does not depend on the weights).

Usage: ``python bench/app_latency.py [--midi F] [--model DIR] [--repeats 5] [--threads N] [--no-browser]``
"""

from __future__ import annotations

import os
import sys

# bench/ holds a tokenize.py that would shadow the standard library's module
# (torch imports it): drop this script's folder from the import path first.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse
import json
import platform
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"


def three_minute_piece() -> bytes:
    """A deterministic 180 s piece (120 qpm, 4/4, 90 bars), as MIDI bytes."""
    import io

    import numpy as np
    import pretty_midi

    rng = np.random.default_rng(0)
    pm = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    mel, bass, chords = (pretty_midi.Instrument(0, name=n) for n in ("melody", "bass", "chords"))
    q = 0.5  # seconds per quarter at 120 qpm
    scale = [0, 2, 4, 5, 7, 9, 11]
    for bar in range(90):
        root = [0, 5, 7, 9][bar % 4]
        for e in range(8):  # eighth notes
            p = 72 + scale[int(rng.integers(0, 7))] + 12 * int(rng.integers(-1, 1))
            t = (bar * 4 + e * 0.5) * q
            mel.notes.append(pretty_midi.Note(int(rng.integers(60, 110)), p, t, t + 0.5 * q * 0.95))
        for b in range(4):
            t = (bar * 4 + b) * q
            bass.notes.append(pretty_midi.Note(80, 36 + root, t, t + q * 0.9))
        for h in range(2):
            t = (bar * 4 + 2 * h) * q
            for iv in (0, 4, 7):
                chords.notes.append(pretty_midi.Note(60, 60 + root + iv, t, t + 2 * q * 0.95))
    pm.instruments += [mel, bass, chords]
    buf = io.BytesIO()
    pm.write(buf)
    return buf.getvalue()


def pick_model(arg: str | None, tmp: Path) -> tuple[Path, str]:
    from smu_explain.checkpoint import read_config
    from smu_explain.model import MidiBert

    if arg:
        return Path(arg), "given"
    demo = ROOT / "models" / "demo-adversarial"
    if (demo / "config.json").is_file():
        meta = read_config(demo)
        if meta["model"].get("d_model") == 256:
            return demo, "demo-adversarial"
    import torch

    from smu_explain.checkpoint import save_checkpoint
    from smu_explain.model import ModelConfig
    from smu_explain.tokenizer import Tokenizer
    from smu_explain.tokenizer_config import TokenizerConfig

    torch.manual_seed(0)
    tok = Tokenizer(TokenizerConfig())
    model = MidiBert(ModelConfig.named("small", tok.vocab_sizes, tok.attributes))
    out = tmp / "small-random"
    save_checkpoint(out, model, extra={"tokenizer": tok.config.to_dict()})
    return out, "random small (untrained)"


def warm_latency(data: bytes, model_dir: Path, repeats: int) -> dict:
    import torch

    from smu_explain import pianoroll
    from smu_explain.checkpoint import load_checkpoint
    from smu_explain.explain import explain_piece, masker_view
    from smu_explain.reading import read_piece

    ckpt = load_checkpoint(model_dir, kind="pretrained")
    model, tok = ckpt.model.eval(), ckpt.tokenizer

    def once() -> dict:
        t0 = time.perf_counter()
        piece = read_piece(data, name="bench")
        t1 = time.perf_counter()
        table = masker_view(model, tok, piece, 0.15)  # the app's overlay
        t2 = time.perf_counter()
        fig = pianoroll.piano_roll(table, bar_starts_q=piece.bar_starts_q, track_names=piece.track_names)
        fig.to_json()
        t3 = time.perf_counter()
        return {"total": t3 - t0, "read": t1 - t0, "masker_overlay": t2 - t1, "figure": t3 - t2,
                "notes": len(piece), "seconds": float(piece.end_sec.max()), "piece": piece}

    first = once()
    runs = [once() for _ in range(repeats)]
    med = lambda k: statistics.median(r[k] for r in runs)  # noqa: E731
    piece = first["piece"]
    full = []
    for _ in range(max(1, repeats // 2)):
        t0 = time.perf_counter()
        explain_piece(model, tok, piece, ratio=0.15, seed=0)
        full.append(time.perf_counter() - t0)
    return {
        "notes": first["notes"], "piece_seconds": round(first["seconds"], 1),
        "params_M": round(model.num_parameters() / 1e6, 2), "torch_threads": torch.get_num_threads(),
        "first_s": round(first["total"], 3), "warm_s": round(med("total"), 3),
        "warm_stages_s": {k: round(med(k), 3) for k in ("read", "masker_overlay", "figure")},
        "full_explain_s": round(statistics.median(full), 3),
        "target_warm_s": 1.0, "meets_target": med("total") <= 1.0,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (Linux /proc; 0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _process_tree() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command name) of every process (Linux /proc)."""
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                head, tail = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)
                out[int(d)] = (int(tail.split()[1]), head.split("(", 1)[1])
            except (OSError, IndexError, ValueError):
                pass
    return out


class _Cpu:
    """CPU seconds of the Streamlit server (its process and children) and of the headless
    browser (the chromium processes started under this one), read from /proc: unlike wall
    clock they hardly move with the machine's load (``None`` where /proc is missing)."""

    def __init__(self, server_pid: int):
        self.server_pid = server_pid

    def snapshot(self) -> dict[str, float] | None:
        if not Path("/proc/self/stat").exists():
            return None
        tree = _process_tree()
        kids: dict[int, list[int]] = {}
        for pid, (ppid, _) in tree.items():
            kids.setdefault(ppid, []).append(pid)

        def below(root: int) -> list[int]:
            out, todo = [], [root]
            while todo:
                p = todo.pop()
                out.append(p)
                todo += kids.get(p, [])
            return out

        server = set(below(self.server_pid))
        browser = [p for p in below(os.getpid()) if p not in server and "chrom" in tree.get(p, (0, ""))[1].lower()]
        return {"server": sum(_cpu_seconds(p) for p in server), "browser": sum(_cpu_seconds(p) for p in browser)}

    @staticmethod
    def delta(a, b) -> dict[str, float]:
        if a is None or b is None:
            return {}
        return {f"{k}_cpu_s": round(b[k] - a[k], 2) for k in a}


class _Runs:
    """Watches the app's websocket: counts the script runs the server starts (``new_session``
    forward messages) and finishes (``script_finished``)."""

    def __init__(self, page):
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        self.started = self.finished = 0
        self.first_chart_at: float | None = None  # perf_counter of the first plotly chart element
        self._msg = ForwardMsg

        def on_ws(ws):
            ws.on("framereceived", self._frame)

        page.on("websocket", on_ws)

    def _frame(self, payload) -> None:
        if isinstance(payload, (bytes, bytearray)):
            try:
                m = self._msg()
                m.ParseFromString(bytes(payload))
                kind = m.WhichOneof("type")
                if kind == "new_session":
                    self.started += 1
                elif kind == "script_finished":
                    self.finished += 1
                elif (kind == "delta" and self.first_chart_at is None and m.delta.WhichOneof("type") == "new_element"
                      and m.delta.new_element.WhichOneof("type") == "plotly_chart"):
                    self.first_chart_at = time.perf_counter()
            except Exception:
                pass


def _busy(page) -> bool:
    """Streamlit is still running or redrawing: its running-status widget, or elements of the last
    run not yet replaced (``data-stale``)."""
    return page.evaluate("() => !!document.querySelector('[data-testid=\"stStatusWidget\"], [data-stale=\"true\"]')")


def _drawn(page) -> None:
    """Returns once the browser has painted a frame after every task queued so far (the React
    updates and the Plotly draws of the last messages): two animation frames."""
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(0))))")


def _settle(page, timeout: float = 300.0, calm_s: float = 0.3) -> float:
    """Waits until the page is not busy, then until it is drawn; returns the perf_counter of that
    moment, after checking it stays calm for ``calm_s`` (not counted: if a late message makes it
    busy again, the wait goes on and the later moment counts)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if _busy(page):
            page.wait_for_timeout(30)
            continue
        _drawn(page)
        done = time.perf_counter()
        calm_until = time.time() + calm_s
        while time.time() < calm_until and not _busy(page):
            page.wait_for_timeout(30)
        if not _busy(page):
            return done
    raise TimeoutError("the app did not finish its run and drawing")


def _timed(out: dict, name: str, action, page, runs: _Runs, cpu: _Cpu, timeout: float = 300.0,
           start_timeout: float = 15.0, prepare=None, run_expected: bool = True) -> None:
    """One control, timed as a person waits for it: from the action (the click, key or Enter
    that commits it; ``prepare``, untimed, does what comes before: opening a menu, typing a
    number) to the page being idle and drawn after the script run the action started (``s``);
    ``server_s`` = until that run's ``script_finished``. An action that starts no run within
    ``start_timeout`` is a bench error (it changed nothing: e.g. a value that was already set),
    reported as such at once, unless ``run_expected`` is False (a tab that the browser switches
    by itself): then, with no run after a second, the step is timed to the page drawn
    (``server_s`` None). CPU seconds of the server and the browser over the step come with
    it (``server_cpu_s``, ``browser_cpu_s``; the server's include its background warm-up)."""
    try:
        if prepare is not None:
            prepare()
    except Exception as e:
        out[name] = {"error": f"{type(e).__name__}: {e}"[:300], "load": _load()}
        return
    started, finished = runs.started, runs.finished
    c0 = cpu.snapshot()
    t0 = time.perf_counter()
    try:
        action()
        deadline = time.time() + (start_timeout if run_expected else 1.0)
        while runs.started <= started and time.time() < deadline:
            page.wait_for_timeout(20)
        server_s = None
        if runs.started > started:
            deadline = time.time() + timeout
            while runs.finished <= finished and time.time() < deadline:
                page.wait_for_timeout(20)
            if runs.finished <= finished:
                raise TimeoutError(f"the script run did not finish within {timeout:.0f} s")
            server_s = round(time.perf_counter() - t0, 2)
        elif run_expected:
            raise TimeoutError(f"the action started no script run within {start_timeout:.0f} s (nothing changed?)")
        took = _settle(page, timeout) - t0
        out[name] = {"s": round(took, 2), "server_s": server_s, **cpu.delta(c0, cpu.snapshot()),
                     "load": _load()}
    except Exception as e:  # one failing control must not lose the others
        out[name] = {"error": f"{type(e).__name__}: {e}"[:300], "load": _load()}
        try:
            page.keyboard.press("Escape")  # close a menu left open
            _settle(page, 60)
        except Exception:
            pass


def _choose(page, label: str, option: str):
    """(prepare, action) picking ``option`` in the selectbox ``label`` (a combobox input whose
    value is the choice). prepare opens the menu: a click on the input opens it, except the
    click that moves the focus away from a number input just committed with Enter, which only
    blurs that input (the menu stays shut, ``aria-expanded`` false, no option ever shows: the
    old bench waited 90 s for one), so it clicks until the menu is open. action clicks the
    option (typing its name first if the menu does not list it)."""
    box = page.get_by_role("combobox", name=label, exact=True)

    def prepare():
        if box.input_value() == option:
            raise ValueError(f"{option} is already chosen in {label}: choosing it again starts no run")
        for _ in range(4):
            box.click()
            try:
                page.wait_for_function("e => e.getAttribute('aria-expanded') === 'true'",
                                       arg=box.element_handle(), timeout=2_000)
                break
            except Exception:
                continue
        else:
            raise TimeoutError(f"the {label} menu did not open")
        if not page.get_by_role("option", name=option, exact=True).count():
            box.fill(option)  # the menu filters on what is typed

    return prepare, lambda: page.get_by_role("option", name=option, exact=True).first.click()


def _number(page, label: str, delta: int = 1):
    """(prepare, action) moving the number input ``label`` by ``delta`` (by -delta at its
    maximum): prepare types the new value, action commits it with Enter (Streamlit sends a
    number input's value on Enter or blur). Typing the value it already holds starts no run:
    the old bench typed 5 into a box that showed 5 and waited 60 s for a run."""
    box = page.get_by_label(label)

    def prepare():
        cur = int(float(box.input_value()))
        hi = box.get_attribute("max")
        box.fill(str(cur + delta if hi is None or cur + delta <= float(hi) else cur - delta))

    return prepare, lambda: box.press("Enter")


def _slider(page, right: bool = True):
    """(prepare, action): focus the first slider, then one arrow key (one step)."""
    s = page.get_by_role("slider").first
    return s.focus, lambda: s.press("ArrowRight" if right else "ArrowLeft")


def _pages(page, runs: _Runs, cpu: _Cpu) -> dict:
    """Cold then warm timings of every page's first render and main controls (see the docstring)."""
    samples = sorted(p.name for p in (ROOT / "sample_midi").glob("*.mid"))

    def nav(title):
        return None, lambda: page.locator('[data-testid="stSidebarNavLink"]').filter(has_text=title).first.click()

    def timed(res, name, steps, run_expected=True):
        prepare, action = steps
        _timed(res, name, action, page, runs, cpu, prepare=prepare, run_expected=run_expected)

    def tab(title):
        return None, lambda: page.get_by_role("tab", name=title, exact=True).click()

    def folder_eval():
        return (lambda: page.get_by_role("tab", name="A dataset folder").click(),
                lambda: page.get_by_role("button", name="Evaluate both models on the folder").click())

    out: dict = {}
    for phase in ("cold", "warm"):
        res: dict = {}
        # the same values in both phases (ratio 0.15 -> 0.16 -> 0.15, note n -> n + 1): "warm" repeats "cold"
        timed(res, "explore_page", nav("Explore"))
        if len(samples) > 2:
            timed(res, "explore_other_sample", _choose(page, "Sample piece", samples[2]))
        timed(res, "explore_ratio_slider_up", _slider(page, True))
        timed(res, "explore_ratio_slider_back", _slider(page, False))
        timed(res, "explore_note_number", _number(page, "Note number (or click a note in the roll)"))
        if samples:
            timed(res, "explore_back_to_first_sample", _choose(page, "Sample piece", samples[0]))
        timed(res, "compare_page", nav("Compare"))
        timed(res, "compare_ratio_slider_up", _slider(page, True))
        timed(res, "compare_ratio_slider_back", _slider(page, False))
        timed(res, "compare_sample_folder", folder_eval())
        timed(res, "why_page", nav("Why"))
        timed(res, "why_attention_tab", tab("Attention"), run_expected=False)
        timed(res, "why_masker_tab", tab("Masker"), run_expected=False)
        timed(res, "why_back_to_first_tab", tab("Attributions"), run_expected=False)
        timed(res, "train_page", nav("Train"))
        timed(res, "report_page", nav("Report"))
        timed(res, "study_page", nav("Study"))
        out[phase] = res
    warm = [v["s"] for k, v in out["warm"].items() if "s" in v and k != "why_page"]
    out["max_warm_control_s"] = max(warm) if warm else None
    out["failed_steps"] = [f"{ph}.{k}" for ph in ("cold", "warm") for k, v in out[ph].items() if "error" in v]
    out["targets"] = {"control_warm_s": 1.0, "why_warm_s": 5.0}
    return out


def cold_start(timeout: float = 90.0, pages: bool = True) -> dict:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"skipped": "playwright is not installed"}
    if not Path(CHROMIUM).exists():
        return {"skipped": f"{CHROMIUM} is missing"}
    port = free_port()
    env = {**os.environ, "SMU_RUNS_DIR": tempfile.mkdtemp(prefix="smu_bench_runs_")}
    result: dict = {"load_at_start": _load()}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless",
                                 "true", "--server.port", str(port)], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cpu = _Cpu(proc.pid)
        try:
            url = f"http://127.0.0.1:{port}"
            while True:
                try:
                    if urllib.request.urlopen(url + "/_stcore/health", timeout=1).read() == b"ok":
                        break
                except OSError:
                    pass
                if time.perf_counter() - t0 > timeout:
                    return {"error": "server did not become healthy"}
                time.sleep(0.05)
            t_health = time.perf_counter() - t0
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(timeout * 1000)
            runs = _Runs(page)
            c0 = cpu.snapshot()
            page.goto(url)
            page.wait_for_selector(".js-plotly-plot .barlayer path", timeout=timeout * 1000)
            t_roll = time.perf_counter() - t0
            c1 = cpu.snapshot()
            overlay = page.locator("text=picked by masker").count() > 0
            result.update({"server_healthy_s": round(t_health, 2), "first_piano_roll_s": round(t_roll, 2),
                           "first_roll_sent_s": (round(runs.first_chart_at - t0, 2) if runs.first_chart_at
                                                 else None),
                           "cpu_to_first_roll": cpu.delta(c0, c1),
                           "with_masker_overlay": overlay, "load_at_first_roll": _load(),
                           "target_s": 5.0, "meets_target": t_roll <= 5.0})
            if pages:
                _settle(page)
                result["pages"] = _pages(page, runs, cpu)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            browser.close()
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--midi")
    ap.add_argument("--model")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: the app's, appstate.torch_threads)")
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--no-pages", action="store_true", help="browser: only the first roll, not every page")
    args = ap.parse_args()
    import logging

    import torch

    logging.getLogger("streamlit").setLevel(logging.ERROR)  # appstate's caches outside a server
    from smu_explain.appstate import torch_threads

    torch.set_num_threads(args.threads or torch_threads())
    data = Path(args.midi).read_bytes() if args.midi else three_minute_piece()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, model_kind = pick_model(args.model, Path(tmp))
        result = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "torch": torch.__version__},
            "piece": args.midi or "generated 3-minute piece",
            "model": {"path": str(model_dir) if args.model else model_kind},
            "bytes_to_roll_with_overlay": warm_latency(data, model_dir, args.repeats),
        }
    result["machine"]["load_before"] = _load()
    result["cold_start"] = ({"skipped": "--no-browser"} if args.no_browser
                            else cold_start(pages=not args.no_pages))
    result["machine"]["load_after"] = _load()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
