"""Multi-process data parallel on CPU (gloo): 2 ranks x batch 2 == 1 rank x batch 4.

The two ranks are started the way torchrun starts them (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT in the environment), so the trainer's own torchrun path is what
runs. The objective draws its masks per sample from ``sample_generator(seed, step,
sample_index)`` and every sample has the same length (same number of picked tokens), so
the per-rank mean losses average to the global mean: the two runs must agree up to the
float error of the gradient all-reduce. The same processes then run the adversarial
strategy for a few steps under DDP (it must work there; its masks are drawn per batch,
so no equality is claimed) and write a checkpoint holding both ranks' RNG states.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch

from smu_explain.trainer import load_train_state

BUILD = r'''
import numpy as np, torch
import torch.nn.functional as F
from smu_explain.data import EncodedPiece, TokenDataset, collate
from smu_explain.model import MidiBert, ModelConfig
from smu_explain.tokenizer import MASK_ID, Tokenizer, TokenizerConfig
from smu_explain.trainer import Trainer, TrainConfig, sample_generator

class PerSampleMask:
    """Mask 3 of the 8 tokens of each sample, drawn per sample (sharding-invariant)."""
    def loss(self, model, batch, state):
        tok, am = batch["tokens"], batch["attention_mask"]
        picked = torch.zeros_like(am)
        for b in range(tok.shape[0]):
            g = sample_generator(state["seed"], state["step"], int(batch["sample_index"][b]))
            picked[b, torch.randperm(int(am[b].sum()), generator=g)[:3]] = True
        out = model(tok.masked_fill(picked[..., None], MASK_ID), am, heads_at=picked)
        tgt = tok[picked]
        loss = sum(F.cross_entropy(lg.float(), tgt[:, j]) for j, lg in enumerate(out["logits"])) / len(out["logits"])
        return loss, {}

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
    return Trainer(model, objective or PerSampleMask(), train, None, cfg, collate_fn=collate)
'''

RANK_SCRIPT = BUILD + r'''
import sys, torch
from smu_explain.masker import make_strategy
out = sys.argv[1]
tr = build(out + "/invariant")
res = tr.fit()
assert tr.dist.world_size == 2 and tr.local_batch_size == 2, (tr.dist, tr.local_batch_size)
if tr.dist.rank == 0:
    torch.save({k: v.clone() for k, v in tr.model.state_dict().items()}, out + "/ddp_weights.pt")
adv = build(out + "/adversarial", objective=make_strategy("adversarial", freeze_every=1), steps=3)
res = adv.fit()
assert res["status"] == "done", res
print("rank", tr.dist.rank, "ok", flush=True)
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_equal_one_process(tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port, OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=120)[0].decode())
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, o in zip(procs, outs):
        assert p.returncode == 0, o
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
    ddp = torch.load(tmp_path / "ddp_weights.pt", weights_only=True)
    init = ns["build"](tmp_path / "init").model.state_dict()
    moved = 0
    for k, v in single.model.state_dict().items():
        print(k, (ddp[k] - v).abs().max().item(), (v - init[k]).abs().max().item())
        torch.testing.assert_close(ddp[k], v, rtol=1e-4, atol=1e-5, msg=k)
        moved += int(not torch.equal(v, init[k]))
    assert moved > 10  # training really changed the weights
    # the adversarial run's checkpoint holds both ranks' RNG states and its freeze book
    st = load_train_state(tmp_path / "adversarial")
    assert st["world_size"] == 2 and len(st["rng"]) == 2 and st["step"] == 3
    assert not torch.equal(st["rng"][0]["torch"], st["rng"][1]["torch"])
    assert st["objective"]["freeze_book"] is not None
