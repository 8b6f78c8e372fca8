#!/usr/bin/env python
"""App load benchmark (issue 24): N concurrent browser sessions doing a scripted demo walk.

One ``streamlit run app.py`` server (started as ``bench/app_latency.py`` starts it, background
warm-up on), then for each level (``--levels``, default 1 4 8) N sessions, each its own
headless Chromium (one browser context, one page; a thread with its own Playwright instance:
Playwright's sync API is one instance per thread), walking the demo in a loop for
``--duration`` seconds (default 300, the issue's 5 minutes):

``explore_page`` (the sidebar link) -> ``explore_sample`` (the next sample in the picker; each
session starts at another sample) -> ``explore_ratio`` (one step of the ratio slider, up on
even laps, down on odd ones: the warm control) -> ``compare_page`` -> ``why_page`` ->
``report_page`` -> ``report_export`` (a click on "Download the HTML report" until the browser
has the whole file). Before the levels, one session walks one lap (not counted) and the bench
waits until the server's background warm-up is done (its CPU idles).

Every step is timed as ``bench/app_latency.py`` times a control (its ``_timed``, ``_Runs``,
``_settle``): from the click or key to the page idle and drawn after the script run it started.
``server_p50_s`` / ``server_p95_s``: until the run's ``script_finished`` arrived (the rest is the
browser drawing; the browsers share the server's CPU). The warm control: ``explore_ratio`` in a
session's laps after its first. Per level ``cpu_s`` / ``cores_used``: CPU of the server (process
and children) and of the sessions' Chromium processes over the level.
Errors: a step that fails or times out (``--step-timeout``, default 120 s), a Streamlit
exception element (``stException``) on the page after the step; after a failed step the session
reloads the app (a new Streamlit session) and goes on. Per level and step: ``n``, ``p50_s``,
``p95_s``, ``max_s``, ``errors``; per level the server's memory (RSS of the streamlit process
and all its children, from /proc every 0.5 s): ``rss_start_mb`` (when the level starts),
``rss_end_mb`` (when its sessions have stopped), ``growth_mb`` and ``rss_peak_mb``; and the load
average (1 minute) at its start and end; ``after_idle``: the RSS once no session has been
connected for ``--idle-after`` seconds (longer than Streamlit keeps a disconnected session). ``targets``: with 4 sessions every step answered,
0 errors, p95 of the warm control (``explore_ratio``) <= 3 s, memory bounded.

Writes ``docs/benchmarks/app_load.json`` (``--out``) and prints it.

Usage: ``python bench/app_load.py [--levels 1 4 8] [--duration 300] [--durations 90 90 60]``
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
# bench/ holds a tokenize.py that would shadow the standard library's module: drop this folder
# from the import path, then import app_latency from it by file
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import contextlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402


def _import_latency():
    spec = importlib.util.spec_from_file_location("smu_bench_app_latency", os.path.join(_HERE, "app_latency.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


L = _import_latency()  # free_port, _load, _process_tree, _Runs, _settle, _timed, _choose, _slider, CHROMIUM
ROOT = L.ROOT
OUT = ROOT / "docs" / "benchmarks" / "app_load.json"
STEPS = ["explore_page", "explore_sample", "explore_ratio", "compare_page", "why_page", "report_page",
         "report_export"]
WARM_CONTROL = "explore_ratio"
TARGETS = {"sessions": 4, "errors": 0, "warm_control_p95_s": 3.0, "memory": "bounded (no growth beyond caps)"}


class _NoCpu:
    """``_timed`` wants a CPU meter; per-session CPU is not told apart here (browsers share it)."""

    @staticmethod
    def snapshot():
        return None

    @staticmethod
    def delta(a, b):
        return {}


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def tree_rss_mb(root: int, tree: dict | None = None) -> tuple[float, int]:
    """(RSS in MB of ``root`` and all its descendants, how many processes)."""
    tree = L._process_tree() if tree is None else tree
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _) in tree.items():
        kids.setdefault(ppid, []).append(pid)
    todo, seen = [root], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += kids.get(p, [])
    return sum(_rss_kb(p) for p in seen) / 1024, len(seen)


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy since boot (/proc/stat: all but idle and iowait)."""
    try:
        f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return (sum(f[:8]) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def server_cpu(root: int) -> float:
    """CPU seconds of ``root`` and its descendants (/proc)."""
    tree = L._process_tree()
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _) in tree.items():
        kids.setdefault(ppid, []).append(pid)
    todo, total = [root], 0.0
    while todo:
        p = todo.pop()
        total += L._cpu_seconds(p)
        todo += kids.get(p, [])
    return total


class MemorySampler(threading.Thread):
    """Samples :func:`tree_rss_mb` of the server every ``period`` s; ``mark()`` resets the peak."""

    def __init__(self, pid: int, period: float = 0.5):
        super().__init__(daemon=True, name="rss-sampler")
        self.pid, self.period = pid, period
        self.peak = self.last = 0.0
        self.procs_peak = 0
        self.samples: list[tuple[float, float]] = []
        self.browser_cpu: dict[int, float] = {}
        self._stop_ev = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        me = os.getpid()
        while not self._stop_ev.is_set():
            tree = L._process_tree()
            mb, n = tree_rss_mb(self.pid, tree)
            # the sessions' browsers: chromium processes below this one (they end with their level,
            # so their CPU is read while they run: the last value seen per process)
            browsers = {}
            for pid, (_, name) in tree.items():
                if "chrom" in name.lower():
                    q, hops = pid, 0
                    while q in tree and q not in (me, 1, 0) and hops < 12:
                        q, hops = tree[q][0], hops + 1
                    if q == me:
                        browsers[pid] = L._cpu_seconds(pid)
            with self._lock:
                self.browser_cpu.update(browsers)
                self.last = mb
                self.peak = max(self.peak, mb)
                self.procs_peak = max(self.procs_peak, n)
                self.samples.append((time.time(), round(mb, 1)))
            self._stop_ev.wait(self.period)

    def mark(self) -> float:
        mb, _ = tree_rss_mb(self.pid)
        with self._lock:
            self.peak, self.last, self.procs_peak = mb, mb, 0
            self.browser_cpu = {}
        return mb

    def series(self, t0: float, t1: float, step: float) -> list[float]:
        """The RSS samples between ``t0`` and ``t1``, one per ``step`` seconds."""
        with self._lock:
            pts = [(t, mb) for t, mb in self.samples if t0 <= t <= t1]
        out, nxt = [], t0
        for t, mb in pts:
            if t >= nxt:
                out.append(mb)
                nxt = t + step
        return out

    def stop(self) -> None:
        self._stop_ev.set()


def _pctl(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return round(xs[lo] + (xs[hi] - xs[lo]) * (k - lo), 2)


def _exception_on_page(page) -> str | None:
    loc = page.locator('[data-testid="stException"]')
    try:
        if loc.count():
            return loc.first.inner_text(timeout=2_000)[:300]
    except Exception:
        return "stException element"
    return None


class Session(threading.Thread):
    """One viewer: its own Playwright + Chromium, one context, one page, the walk in a loop."""

    def __init__(self, idx: int, url: str, until: float, step_timeout: float, samples: list[str],
                 max_laps: int | None = None):
        super().__init__(daemon=True, name=f"session-{idx}")
        self.idx, self.url, self.until, self.step_timeout, self.samples = idx, url, until, step_timeout, samples
        self.max_laps = max_laps
        self.records: list[dict] = []  # {"step", "s" | "error", "lap", "t"}
        self.fatal: str | None = None
        self.laps = 0

    def run(self) -> None:
        from playwright.sync_api import sync_playwright

        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=L.CHROMIUM, args=[
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
                try:
                    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
                    self._walk(ctx)
                finally:
                    browser.close()
        except Exception as e:  # the session could not even start
            self.fatal = f"{type(e).__name__}: {e}"[:300]

    def _open(self, ctx):
        page = ctx.new_page()
        page.set_default_timeout(self.step_timeout * 1000)
        runs = L._Runs(page)
        t0 = time.perf_counter()
        page.goto(self.url)
        page.wait_for_selector('[data-testid="stSidebarNavLink"]', timeout=self.step_timeout * 1000)
        L._settle(page, self.step_timeout)
        self.records.append({"step": "open", "s": round(time.perf_counter() - t0, 2), "lap": self.laps,
                             "t": time.time()})
        return page, runs

    def _record(self, step: str, res: dict, page) -> bool:
        rec = {"step": step, "lap": self.laps, "t": time.time(), **res}
        if "error" not in rec:
            exc = _exception_on_page(page)
            if exc:
                rec["error"] = f"stException: {exc}"
        self.records.append(rec)
        return "error" not in rec

    def _walk(self, ctx) -> None:
        page, runs = self._open(ctx)
        cpu = _NoCpu()
        k = self.idx  # which sample comes next: each session starts elsewhere

        def nav(title):
            return None, lambda: page.locator('[data-testid="stSidebarNavLink"]').filter(has_text=title).first.click()

        chosen: dict = {}

        def sample():
            def prepare():  # the next sample after the one shown (choosing the shown one starts no run)
                nonlocal k
                current = page.get_by_role("combobox", name="Sample piece", exact=True).input_value()
                k += 1
                if self.samples[k % len(self.samples)] == current:
                    k += 1
                chosen["prep"], chosen["act"] = L._choose(page, "Sample piece", self.samples[k % len(self.samples)])
                chosen["prep"]()

            return prepare, lambda: chosen["act"]()

        def export():
            t0 = time.perf_counter()
            try:
                with page.expect_download(timeout=self.step_timeout * 1000) as dl:
                    page.get_by_role("button", name="Download the HTML report").click()
                path = dl.value.path()  # waits for the whole file
                size = os.path.getsize(path) if path else 0
                L._settle(page, self.step_timeout)
                return {"s": round(time.perf_counter() - t0, 2), "bytes": size, "load": L._load()}
            except Exception as e:
                return {"error": f"{type(e).__name__}: {e}"[:300], "load": L._load()}

        while time.time() < self.until and (self.max_laps is None or self.laps < self.max_laps):
            ok = True
            for step in STEPS:
                if time.time() >= self.until:
                    break
                if step == "report_export":
                    res = export()
                else:
                    steps = {"explore_page": lambda: nav("Explore"), "explore_sample": sample,
                             "explore_ratio": lambda page=page: L._slider(page, self.laps % 2 == 0),
                             "compare_page": lambda: nav("Compare"), "why_page": lambda: nav("Why"),
                             "report_page": lambda: nav("Report")}[step]()
                    out: dict = {}
                    L._timed(out, step, steps[1], page, runs, cpu, timeout=self.step_timeout,
                             prepare=steps[0])
                    res = out[step]
                if not self._record(step, res, page):
                    ok = False
                    break
            self.laps += 1
            if not ok and time.time() < self.until:  # start over in a new Streamlit session
                with contextlib.suppress(Exception):
                    page.close()
                try:
                    page, runs = self._open(ctx)
                except Exception as e:
                    self.records.append({"step": "open", "error": f"{type(e).__name__}: {e}"[:300],
                                         "lap": self.laps, "t": time.time()})
                    return


def run_level(n: int, duration: float, url: str, mem: MemorySampler, step_timeout: float,
              samples: list[str], max_laps: int | None = None) -> dict:
    load0 = L._load()
    meter = L._Cpu(mem.pid)
    c0 = meter.snapshot()
    m0 = machine_busy_s()
    rss0 = mem.mark()
    t0 = time.time()
    until = t0 + duration
    sessions = [Session(i, url, until, step_timeout, samples, max_laps) for i in range(n)]
    for s in sessions:
        s.start()
    for s in sessions:
        s.join(duration + 4 * step_timeout + 120)
    wall = time.time() - t0
    c1 = meter.snapshot()
    m1 = machine_busy_s()
    time.sleep(1.0)  # the last runs' memory settles
    rss1, _ = tree_rss_mb(mem.pid)
    steps: dict = {}
    errors: list[dict] = []
    for name in ["open"] + STEPS:
        recs = [r for s in sessions for r in s.records if r["step"] == name]
        ok = [r["s"] for r in recs if "s" in r and "error" not in r]
        srv = [r["server_s"] for r in recs if r.get("server_s") is not None and "error" not in r]
        errs = [r for r in recs if "error" in r]
        steps[name] = {"n": len(recs), "answered": len(ok), "p50_s": _pctl(ok, 0.5), "p95_s": _pctl(ok, 0.95),
                       "max_s": round(max(ok), 2) if ok else None, "errors": len(errs),
                       "server_p50_s": _pctl(srv, 0.5), "server_p95_s": _pctl(srv, 0.95)}
        if name in ("compare_page", "why_page", "report_page", "report_export"):
            # even laps moved the ratio up (0.15 -> 0.16: another masking, mask_groups 7 -> 6), odd laps back
            for parity, label in ((0, "ratio_up"), (1, "ratio_back")):
                xs = [r["s"] for r in recs if "s" in r and "error" not in r and r["lap"] % 2 == parity]
                steps[name][f"p50_s_{label}"] = _pctl(xs, 0.5)
                steps[name][f"p95_s_{label}"] = _pctl(xs, 0.95)
        errors += [{"session": s.idx, "step": r["step"], "lap": r["lap"], "error": r["error"]}
                   for s in sessions for r in s.records if r["step"] == name and "error" in r]
    # the warm control: laps after a session's first (its caches were filled by then)
    warm_recs = [r for s in sessions for r in s.records
                 if r["step"] == WARM_CONTROL and r["lap"] >= 1 and "s" in r and "error" not in r]
    warm = [r["s"] for r in warm_recs]
    warm_srv = [r["server_s"] for r in warm_recs if r.get("server_s") is not None]
    cpu = {"server": round(c1["server"] - c0["server"], 1)} if c0 and c1 else {}
    cpu["browsers"] = round(sum(mem.browser_cpu.values()), 1)
    cpu["machine"] = round(m1 - m0, 1)  # everything: server, browsers, this bench, other users
    return {
        "sessions": n, "duration_s": duration, "wall_s": round(wall, 1),
        "laps": [s.laps for s in sessions], "fatal": [s.fatal for s in sessions if s.fatal],
        "load_start": load0, "load_end": L._load(),
        "steps": steps, "errors": len(errors), "error_list": errors[:40],
        "warm_control": {"step": WARM_CONTROL, "n": len(warm), "p50_s": _pctl(warm, 0.5),
                         "p95_s": _pctl(warm, 0.95), "server_p50_s": _pctl(warm_srv, 0.5),
                         "server_p95_s": _pctl(warm_srv, 0.95)},
        # CPU seconds over the level: the server (its process and children), the sessions' browsers,
        # the whole machine; / wall = cores used (the machine has os.cpu_count(); the server runs
        # every session's script in threads of one Python process)
        "cpu_s": cpu, "cores_used": {k: round(v / wall, 2) for k, v in cpu.items()} if wall > 0 else {},
        "rss_start_mb": round(rss0, 1), "rss_end_mb": round(rss1, 1), "growth_mb": round(rss1 - rss0, 1),
        "rss_every_5s_mb": mem.series(t0, time.time(), 5.0),
        "rss_peak_mb": round(mem.peak, 1), "server_processes_peak": mem.procs_peak,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--duration", type=float, default=300.0, help="seconds per level (the issue: 300)")
    ap.add_argument("--durations", type=float, nargs="+", help="seconds per level, one per --levels entry")
    ap.add_argument("--step-timeout", type=float, default=120.0)
    ap.add_argument("--warm-wait", type=float, default=240.0,
                    help="wait at most this long for the server's background warm-up before level 1")
    ap.add_argument("--idle-after", type=float, default=150.0,
                    help="after the last level, wait this long with no session (Streamlit keeps a disconnected "
                         "session's state for server.disconnectedSessionTTL, 120 s) and read the RSS again")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    durations = args.durations or [args.duration] * len(args.levels)
    if len(durations) != len(args.levels):
        ap.error("--durations needs one value per level")
    samples = sorted(p.name for p in (ROOT / "sample_midi").glob("*.mid"))
    port = L.free_port()
    env = {**os.environ, "SMU_RUNS_DIR": tempfile.mkdtemp(prefix="smu_load_runs_")}
    result: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_before": L._load()},
        "walk": STEPS, "warm_control": WARM_CONTROL, "targets": TARGETS, "levels": [],
    }
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    mem = MemorySampler(proc.pid)
    try:
        t0 = time.time()
        while True:
            try:
                if urllib.request.urlopen(url + "/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                pass
            if time.time() - t0 > 120:
                raise SystemExit("server did not become healthy")
            time.sleep(0.1)
        mem.start()
        result["server"] = {"healthy_s": round(time.time() - t0, 1), "rss_idle_mb": round(tree_rss_mb(proc.pid)[0], 1)}
        # one lap of one session (not counted in the levels) opens the app, which starts the server's
        # background warm-up (appwarmup.start_warm_up); then wait until the server idles (its CPU)
        warm = run_level(1, 600.0, url, mem, args.step_timeout, samples, max_laps=1)
        result["server"]["first_lap"] = {"steps": {k: v["p50_s"] for k, v in warm["steps"].items()},
                                         "errors": warm["error_list"]}
        t1 = time.time()
        last = server_cpu(proc.pid)
        while time.time() - t1 < args.warm_wait:
            time.sleep(3.0)
            cpu = server_cpu(proc.pid)
            if cpu - last < 0.3 and time.time() - t1 > 6:
                break
            last = cpu
        result["server"]["warm_up_wait_s"] = round(time.time() - t1, 1)
        result["server"]["rss_after_warm_up_mb"] = round(tree_rss_mb(proc.pid)[0], 1)
        for n, d in zip(args.levels, durations, strict=False):
            print(f"level {n}: {d:.0f} s (load {L._load()})", file=sys.stderr, flush=True)
            lvl = run_level(n, d, url, mem, args.step_timeout, samples)
            result["levels"].append(lvl)
            print(json.dumps({k: lvl[k] for k in ("sessions", "errors", "warm_control", "rss_peak_mb", "growth_mb")}),
                  file=sys.stderr, flush=True)
        if args.idle_after > 0:
            t2 = time.time()
            time.sleep(args.idle_after)
            result["after_idle"] = {"idle_s": args.idle_after, "rss_mb": round(tree_rss_mb(proc.pid)[0], 1),
                                    "rss_every_5s_mb": mem.series(t2, time.time(), 5.0), "load": L._load()}
    finally:
        mem.stop()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    result["machine"]["load_after"] = L._load()
    four = next((lv for lv in result["levels"] if lv["sessions"] == 4), None)
    if four:
        unanswered = sum(v["n"] - v["answered"] for v in four["steps"].values())
        result["meets_targets_4_sessions"] = {
            "every_step_answered": unanswered == 0, "zero_errors": four["errors"] == 0,
            "warm_control_p95": (four["warm_control"]["p95_s"] is not None
                                 and four["warm_control"]["p95_s"] <= TARGETS["warm_control_p95_s"]),
        }
    text = json.dumps(result, indent=2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
