"""Multi-process data parallel on CPU (gloo): 2 ranks x batch 2 == 1 rank x batch 4.

The two ranks are started the way torchrun starts them (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT in the environment), so the trainer's own torchrun path is what
runs. The objective is the real random-mask strategy: it draws each sample's masks from
``sample_generator(seed, step, sample_index)`` and every sample has the same length (same
number of picked tokens), so the per-rank mean losses average to the global mean and
the two runs must agree up to the float error of the gradient all-reduce. The same
processes then run the adversarial strategy for a few steps under DDP (it must work
there; its inverse-accuracy weights follow each rank's own accuracy, so no equality is
claimed) and write a checkpoint holding both ranks' RNG states and the freeze book; DDP
wraps its two passes (``AdversarialPasses``), and in ``masker_grad='full'`` mode the ranks
end with equal weights.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch

from smu_explain.resume import load_train_state

BUILD = r'''
import numpy as np, torch
from smu_explain.datasets import EncodedPiece, TokenDataset, collate
from smu_explain.masker import make_strategy
from smu_explain.model import MidiBert, ModelConfig
from smu_explain.tokenizer import Tokenizer
from smu_explain.tokenizer_config import TokenizerConfig
from smu_explain.callbacks import Callback
from smu_explain.train_config import TrainConfig
from smu_explain.trainer import Trainer

class Record(Callback):
    """Per step: the global mean loss and the norm of the averaged gradient."""
    def __init__(self):
        self.rows = []
    def on_step_end(self, trainer, info):
        self.rows.append([info["loss"], info["grad_norm"]])

def build(out_dir, objective=None, steps=4, batch_size=4):
    torch.set_num_threads(1)
    tok = Tokenizer(TokenizerConfig(max_len=8))
    rng = np.random.default_rng(0)
    pieces = []
    for p in range(4):
        toks = np.stack([rng.integers(2, v, size=16) for v in tok.vocab_sizes], 1).astype(np.int64)
        spans = np.array([[0, 8], [8, 16]], dtype=np.int64)
        pieces.append(EncodedPiece(f"p{p}", f"g{p}", "synth", "", toks, spans, toks[spans[:, 0]].copy()))
    train = TokenDataset(pieces, "pretrain")
    torch.manual_seed(0)
    model = MidiBert(ModelConfig.named("tiny", tok.vocab_sizes, tok.attributes, max_len=8, dropout=0.0))
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=1e-3, eval_every=0, checkpoint_every=0,
                      out_dir=str(out_dir), device="cpu")
    return Trainer(model, objective or make_strategy("random", ratio=0.4), train, None, cfg, callbacks=[Record()],
                   collate_fn=collate)
'''

RANK_SCRIPT = BUILD + r'''
import sys, torch
import torch.distributed as dist
from smu_explain.masker import make_strategy
out = sys.argv[1]
# one process group for both runs (re-creating one on the same port in a loop races)
dist.init_process_group("gloo")
tr = build(out + "/invariant")
res = tr.fit()
assert tr.dist.world_size == 2 and tr.local_batch_size == 2, (tr.dist, tr.local_batch_size)
if tr.dist.rank == 0:
    torch.save({"weights": {k: v.clone() for k, v in tr.model.state_dict().items()},
                "rows": tr.callbacks[0].rows}, out + "/ddp_weights.pt")
adv = build(out + "/adversarial", objective=make_strategy("adversarial", freeze_every=1), steps=3)
res = adv.fit()
assert res["status"] == "done", res
assert type(adv.train_model.module).__name__ == "AdversarialPasses"  # DDP wraps the step's one call
full = build(out + "/adversarial_full", objective=make_strategy("adversarial", masker_grad="full"), steps=2)
assert full.fit()["status"] == "done"
w = torch.cat([p.detach().flatten() for p in full.model.parameters()])
ws = [torch.zeros_like(w) for _ in range(2)]
dist.all_gather(ws, w)
assert torch.equal(ws[0], ws[1])  # the gradients of both passes were synced
# the group was made here, so it is torn down here: exiting with gloo's threads alive can
# abort the interpreter ("terminate called without an active exception")
dist.barrier()
dist.destroy_process_group()
print("rank", tr.dist.rank, "ok", flush=True)
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_ranks(argv: list[str], timeout: float) -> list[str]:
    """Two processes of ``argv`` started the way torchrun starts them (gloo, one thread each); both must exit
    0; their outputs (stdout and stderr). Only these children are killed, and only if still running."""
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port, OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout)[0].decode())
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, o in zip(procs, outs, strict=False):
        assert p.returncode == 0, o
    return outs


def test_two_gloo_ranks_equal_one_process(tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    _run_two_ranks([sys.executable, str(script), str(tmp_path)], timeout=120)
    # single process, same global batch, in this process (RANK unset -> no process group)
    assert "RANK" not in os.environ
    ns: dict = {}
    exec(compile(BUILD, "ddp_build", "exec"), ns)
    n = torch.get_num_threads()
    try:
        single = ns["build"](tmp_path / "single")
        single.fit()
    finally:
        torch.set_num_threads(n)
    assert single.dist.world_size == 1
    saved = torch.load(tmp_path / "ddp_weights.pt", weights_only=True)
    # same global loss and same averaged-gradient norm at every step (tight)
    rows = single.callbacks[0].rows
    assert len(rows) == len(saved["rows"]) == 4
    for (l1, g1), (l2, g2) in zip(rows, saved["rows"], strict=False):
        assert l2 == pytest.approx(l1, rel=1e-5) and g2 == pytest.approx(g1, rel=1e-4)
    # same weights: AdamW divides by sqrt(v), so a near-zero gradient whose float sum differs
    # in the last bits can move a weight by up to ~lr; the tolerance is a small fraction of
    # what the 4 steps moved the weights (max ~4 * lr = 4e-3)
    init = ns["build"](tmp_path / "init").model.state_dict()
    moved = 0
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(saved["weights"][k], v, rtol=0, atol=2.5e-4, msg=k)
        moved += int((v - init[k]).abs().max() > 1e-3)
    assert moved > 10  # training really changed the weights
    # the adversarial run's checkpoint holds both ranks' RNG states and its freeze book
    st = load_train_state(tmp_path / "adversarial")
    assert st["world_size"] == 2 and len(st["rng"]) == 2 and st["step"] == 3
    assert not torch.equal(st["rng"][0]["torch"], st["rng"][1]["torch"])
    assert st["objective"]["freeze_book"] is not None


def test_fit_batch_rounds_a_small_training_set_to_the_ranks(monkeypatch, capsys):
    """smu pretrain / finetune shrink the batch to a small training set; under torchrun it must stay a
    multiple of the ranks (13 windows on 2 ranks: 12, not 13, which the trainer refuses)."""
    from smu_explain.cli_setup import fit_batch
    from smu_explain.errors import SMUInputError

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert fit_batch(32, 100) == 32 and fit_batch(32, 13) == 13
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert fit_batch(32, 13) == 12 and "multiple of the 2 ranks" in capsys.readouterr().err
    assert fit_batch(8, 13) == 8
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(SMUInputError, match="fewer than the 4 ranks"):
        fit_batch(32, 3)


def test_smu_pretrain_on_two_ranks_with_fewer_windows_than_the_batch(tmp_path):
    """The README's torchrun line on a small folder: two gloo ranks started as torchrun starts them run
    `smu pretrain` with the default batch (32) on 3 sample files (fewer windows than 32) to the end."""
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    data = tmp_path / "data"
    data.mkdir()
    for name in ("bach_bwv66_6.mid", "bach_bwv269.mid", "mozart_k545_mvt1_exposition.mid"):
        shutil.copy(root / "sample_midi" / name, data / name)
    outs = _run_two_ranks([sys.executable, "-m", "smu_explain.cli", "pretrain", "--strategy", "random",
                           "--data", str(data), "--config", "tiny", "--steps", "2", "--max-len", "96",
                           "--out", str(tmp_path / "run"), "--val-fraction", "0", "--no-bar"], timeout=180)
    assert "7 training windows < batch size 32; using batch size 6 (a multiple of the 2 ranks)" in outs[0]
    assert (tmp_path / "run" / "model.safetensors").is_file()
