"""Helpers for the app tests: tiny random models saved the way the app loads them."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ROOT / "app_pages"


def make_model(path: Path, seed: int = 0, size: str = "tiny", strategy: str | None = None) -> Path:
    """A randomly initialised MidiBert (``size``) saved with its tokenizer config
    (and, if given, the name of the strategy it was pre-trained with)."""
    import torch

    from smu_explain.checkpoint import save_checkpoint
    from smu_explain.model import MidiBert, ModelConfig
    from smu_explain.tokenizer import Tokenizer
    from smu_explain.tokenizer_config import TokenizerConfig

    torch.manual_seed(seed)
    tok = Tokenizer(TokenizerConfig())
    model = MidiBert(ModelConfig.named(size, tok.vocab_sizes, tok.attributes))
    extra = {"tokenizer": tok.config.to_dict()}
    if strategy:
        extra["strategy"] = {"name": strategy}
    save_checkpoint(path, model, extra=extra)
    return Path(path)


def count_calls(monkeypatch, owner, name: str) -> list:
    """Replace ``owner.<name>`` by a wrapper that calls it and appends to the returned list on every call."""
    calls: list = []
    real = getattr(owner, name)

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(owner, name, counting)
    return calls


def page(name: str) -> str:
    return str(PAGES / name)


def texts(at) -> str:
    """Every markdown, caption, info, warning, error and success text of an AppTest run."""
    parts = []
    for kind in ("markdown", "caption", "info", "warning", "error", "success"):
        parts += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(parts)


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StreamlitServer:
    """``with StreamlitServer(script, folder, env) as url:`` - ``streamlit run script`` on a free
    localhost port (log in ``folder/streamlit.log``), ready when ``/_stcore/health`` answers; the
    server (a child this test started) is terminated on exit."""

    def __init__(self, script, folder: Path, env: dict | None = None, timeout: float = 60.0):
        self.script, self.folder, self.env, self.timeout = str(script), Path(folder), env or {}, timeout

    def __enter__(self) -> str:
        import os
        import subprocess
        import sys
        import time
        import urllib.request

        port = free_port()
        self.log = open(self.folder / "streamlit.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", self.script, "--server.headless", "true",
             "--server.port", str(port), "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env={**os.environ, **self.env}, stdout=self.log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + self.timeout
        while True:
            try:
                if urllib.request.urlopen(url + "/_stcore/health", timeout=1).read() == b"ok":
                    return url
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                self.__exit__()
                raise RuntimeError(f"streamlit did not start: {(self.folder / 'streamlit.log').read_text()[-2000:]}")
            time.sleep(0.1)

    def __exit__(self, *exc) -> None:
        import subprocess

        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def run_report(monkeypatch, session: dict, timeout: int = 60):
    """The Report page run with ``session`` (e.g. {"smu_compare": ...}) in its session state, and the
    HTML documents ``report.build_report`` made on the way: (AppTest, [html, ...])."""
    from streamlit.testing.v1 import AppTest

    import smu_explain.report as R

    made: list[str] = []
    real = R.build_report
    monkeypatch.setattr(R, "build_report", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    rep = AppTest.from_file(page("report.py"), default_timeout=timeout)
    for k, v in session.items():
        rep.session_state[k] = v
    rep.run()
    return rep, made
