"""Exact resume: N steps straight == N/2 steps, (crash or stop), resume, N/2 more.

The setup exercises every piece of state a resume must restore: dropout (torch RNG),
the adversarial strategy's accuracy EMA and freeze book (updated every epoch),
transposition augmentation (set_epoch), AdamW moments, a cosine lr schedule and a
resume point in the middle of an epoch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from smu_explain.callbacks import Callback, read_progress
from smu_explain.resume import CHECKPOINT_NAME, load_train_state

BUILD = r'''
import numpy as np, torch
from smu_explain.datasets import EncodedPiece, TokenDataset, collate
from smu_explain.masker import make_strategy
from smu_explain.model import MidiBert, ModelConfig
from smu_explain.tokenizer import Tokenizer
from smu_explain.tokenizer_config import TokenizerConfig
from smu_explain.train_config import TrainConfig
from smu_explain.trainer import Trainer

def build(out_dir, steps=8, checkpoint_every=4, callbacks=()):
    torch.set_num_threads(1)
    tok = Tokenizer(TokenizerConfig(max_len=8))
    rng = np.random.default_rng(0)
    pieces = []
    for p in range(4):
        n = 20
        toks = np.stack([rng.integers(2, v, size=n) for v in tok.vocab_sizes], 1).astype(np.int64)
        toks[:, tok.attributes.index("pitch")] = rng.integers(30, 60, size=n)  # room to transpose
        spans = np.array([[a, min(a + 8, n)] for a in range(0, n, 8)], dtype=np.int64)
        pieces.append(EncodedPiece(f"p{p}", f"g{p}", "synth", "", toks, spans, toks[spans[:, 0]].copy()))
    train = TokenDataset(pieces, "pretrain", tokenizer=tok, augment=True, seed=0)
    val = TokenDataset(pieces[:1], "pretrain")
    torch.manual_seed(0)
    model = MidiBert(ModelConfig.named("tiny", tok.vocab_sizes, tok.attributes, max_len=16, dropout=0.1))
    strategy = make_strategy("adversarial", freeze_every=1, freeze_top=0.3, unfreeze_frac=0.1, score_noise=0.01)
    cfg = TrainConfig(steps=steps, batch_size=4, lr=1e-3, schedule="cosine", warmup_steps=2,
                      eval_every=3, checkpoint_every=checkpoint_every, log_every=1, out_dir=str(out_dir))
    return Trainer(model, strategy, train, val, cfg, callbacks=list(callbacks), collate_fn=collate)
'''

KILLED_RUN = BUILD + r'''
import sys, time
from smu_explain.callbacks import Callback, ProgressFile

class SlowAfterHalf(Callback):
    def on_step_end(self, trainer, info):
        if trainer.step > 4:
            time.sleep(0.5)

build(sys.argv[1], callbacks=[ProgressFile(sys.argv[2]), SlowAfterHalf()]).fit()
'''


def _build():
    ns: dict = {}
    exec(compile(BUILD, "resume_build", "exec"), ns)
    return ns["build"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _assert_same_model(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-6, atol=1e-7, msg=k)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    tr = _build()(tmp_path_factory.mktemp("straight"))
    tr.fit()
    return tr


def test_stop_at_half_then_resume_equals_straight(tmp_path, straight):
    build = _build()

    class StopAtHalf(Callback):
        def on_step_end(self, trainer, info):
            if trainer.step == 4:
                trainer.request_stop()

    first = build(tmp_path, callbacks=[StopAtHalf()])
    assert first.fit()["status"] == "cancelled"
    state = load_train_state(tmp_path / CHECKPOINT_NAME)
    assert state["step"] == 4 and state["epoch"] == 1 and state["batch_in_epoch"] == 1
    assert state["objective"]["freeze_book"] is not None
    second = build(tmp_path)
    res = second.fit(resume=True)
    assert res["status"] == "done" and res["step"] == 8 and second.resumed
    _assert_same_model(second.model, straight.model)
    assert second.objective.state_dict()["freeze_book"] == straight.objective.state_dict()["freeze_book"]
    assert second.objective.acc_ema == pytest.approx(straight.objective.acc_ema)
    # and the run really differs from one that did not train the second half
    assert any(not torch.equal(v, first.model.state_dict()[k]) for k, v in second.model.state_dict().items())


def test_sigkill_after_half_checkpoint_then_resume_equals_straight(tmp_path, straight):
    out, prog = tmp_path / "run", tmp_path / "progress.jsonl"
    script = tmp_path / "killed_run.py"
    script.write_text(KILLED_RUN)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(script), str(out), str(prog)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            recs = read_progress(prog)
            if any(r["event"] == "checkpoint" and r["step"] == 4 for r in recs) and \
                    any(r["event"] == "step" and r["step"] >= 5 for r in recs):
                break
            if proc.poll() is not None:
                pytest.fail("training subprocess ended early:\n" + proc.stdout.read().decode())
            time.sleep(0.05)
        else:
            pytest.fail("no step-4 checkpoint within 60 s")
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    recs = read_progress(prog)
    assert not any(r["event"] == "status" for r in recs), "killed run must not have finished"
    assert load_train_state(out / CHECKPOINT_NAME)["step"] == 4
    resumed = _build()(out)
    res = resumed.fit(resume=True)
    assert res["step"] == 8
    _assert_same_model(resumed.model, straight.model)
