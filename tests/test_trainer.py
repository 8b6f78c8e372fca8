"""The training loop: progress file, determinism, NaN stop, config, checkpoints, callbacks."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest
import torch

from smu_explain.callbacks import Callback, EarlyStopping, ProgressFile, read_progress
from smu_explain.checkpoint import load_model
from smu_explain.datasets import EncodedPiece, TokenDataset, collate
from smu_explain.errors import SMUCheckpointError, SMUInputError, SMUTrainingError
from smu_explain.masker import make_strategy
from smu_explain.model import MidiBert, ModelConfig
from smu_explain.resume import CHECKPOINT_NAME, decode_plain, encode_plain, load_train_state
from smu_explain.seeding import epoch_permutation, sample_seed
from smu_explain.tokenizer import Tokenizer
from smu_explain.tokenizer_config import TokenizerConfig
from smu_explain.train_config import TrainConfig, lr_factor
from smu_explain.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def synth_dataset(n_pieces=4, notes=24, max_len=8, seed=0):
    """Random-token pieces cut into windows of ``max_len`` (the last may be shorter)."""
    tok = Tokenizer(TokenizerConfig(max_len=max_len))
    rng = np.random.default_rng(seed)
    pieces = []
    for p in range(n_pieces):
        toks = np.stack([rng.integers(2, v, size=notes) for v in tok.vocab_sizes], 1).astype(np.int64)
        spans = np.array([[a, min(a + max_len, notes)] for a in range(0, notes, max_len)], dtype=np.int64)
        pieces.append(EncodedPiece(f"p{p}", f"g{p}", "synth", "", toks, spans, toks[spans[:, 0]].copy()))
    return TokenDataset(pieces, "pretrain"), tok


def tiny_model(tok, dropout=0.0, seed=0):
    torch.manual_seed(seed)
    return MidiBert(ModelConfig.named("tiny", tok.vocab_sizes, tok.attributes, max_len=16, dropout=dropout))


def make_trainer(tmp_path, objective=None, callbacks=(), val=True, seed=0, model_seed=0, **cfg):
    ds, tok = synth_dataset()
    val_ds, _ = synth_dataset(2, seed=1)
    kw = dict(steps=6, batch_size=4, eval_every=3, checkpoint_every=3, log_every=1, out_dir=str(tmp_path / "run"),
              seed=seed)
    kw.update(cfg)
    return Trainer(tiny_model(tok, seed=model_seed), objective or make_strategy("random"), ds,
                   val_ds if val else None, TrainConfig(**kw), callbacks=callbacks, collate_fn=collate)


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_progress_file_lines_and_outputs(tmp_path):
    prog = tmp_path / "progress.jsonl"
    tr = make_trainer(tmp_path, callbacks=[ProgressFile(prog)])
    result = tr.fit()
    assert result["status"] == "done" and result["step"] == 6
    recs = read_progress(prog)
    events = [r["event"] for r in recs]
    assert events[0] == "start" and events[-1] == "status"
    assert recs[-1]["status"] == "done"
    steps = [r for r in recs if r["event"] == "step"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    for r in steps:
        assert math.isfinite(r["loss"]) and r["lr"] == pytest.approx(1e-4)
        assert r["tokens_per_s"] > 0 and "time" in r and "wall_s" in r
        assert {"acc_pitch", "w_pitch", "n_picked"} <= set(r["stats"])
    evals = [r for r in recs if r["event"] == "eval"]
    assert [r["step"] for r in evals] == [3, 6]
    assert {"val_loss", "val_acc", "val_loss_pitch"} <= set(evals[0]["metrics"])
    assert [r["step"] for r in recs if r["event"] == "checkpoint"] == [3, 6]
    # 4 pieces x 3 windows = 12 samples, batch 4: an epoch is 3 steps
    assert [r["epoch"] for r in recs if r["event"] == "epoch"] == [0, 1]
    out = tmp_path / "run"
    assert (out / CHECKPOINT_NAME).is_file() and (out / "model.safetensors").is_file()
    assert json.loads((out / "train_config.json").read_text())["batch_size"] == 4
    # the model folder loads back with the trained weights
    again = load_model(out)
    for k, v in tr.model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[k], v)


def test_training_lowers_the_loss(tmp_path):
    ds, tok = synth_dataset(n_pieces=2, notes=16)
    cfg = TrainConfig(steps=40, batch_size=4, lr=3e-3, eval_every=0, checkpoint_every=0,
                      out_dir=str(tmp_path / "r"))
    tr = Trainer(tiny_model(tok), make_strategy("random", ratio=0.5), ds, ds, cfg, collate_fn=collate)
    before = tr.objective.validate(tr.model, tr.ordered_loader(ds), ratio=0.5)["loss"]
    tr.fit()
    after = tr.last_metrics["val_loss"]
    assert after < before - 0.3, (before, after)


def test_same_seed_same_weights_other_seed_differs(tmp_path):
    a = make_trainer(tmp_path / "a", seed=3)
    a.fit()
    b = make_trainer(tmp_path / "b", seed=3)
    b.fit()
    c = make_trainer(tmp_path / "c", seed=4)
    c.fit()
    wa, wb, wc = weights(a.model), weights(b.model), weights(c.model)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0)
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)


class NanAt:
    """Wraps an objective; its loss becomes NaN from training step ``at`` (1-based) on."""

    def __init__(self, inner, at):
        self.inner, self.at = inner, at

    def loss(self, model, batch, state):
        loss, stats = self.inner.loss(model, batch, state)
        if state["train"] and state["step"] + 1 >= self.at:
            loss = loss * float("nan")
        return loss, stats


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    prog = tmp_path / "p.jsonl"
    tr = make_trainer(tmp_path, objective=NanAt(make_strategy("random"), 5), callbacks=[ProgressFile(prog)],
                      val=False, steps=8, checkpoint_every=2)
    ckpt = tmp_path / "run" / CHECKPOINT_NAME
    with pytest.raises(SMUTrainingError, match=r"step 5\b.*last good checkpoint \(step 4\)"):
        tr.fit()
    state = load_train_state(ckpt)
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    last = read_progress(prog)[-1]
    assert last["event"] == "status" and last["status"] == "failed" and "step 5" in last["message"]
    assert max(r["step"] for r in read_progress(prog) if r["event"] == "step") == 4


def test_train_config_json_round_trip_and_errors(tmp_path):
    cfg = TrainConfig(steps=7, batch_size=3, schedule="cosine", warmup_steps=2, bf16=True)
    p = tmp_path / "c.json"
    cfg.save(p)
    assert TrainConfig.load(p) == cfg
    with pytest.raises(SMUInputError, match="unknown keys"):
        TrainConfig.from_dict({"steps": 3, "stepz": 4})
    with pytest.raises(SMUInputError, match="steps or epochs"):
        TrainConfig(steps=None, epochs=None).validate()
    with pytest.raises(SMUInputError, match="schedule"):
        TrainConfig(schedule="exp").validate()
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(SMUInputError, match="bad.json"):
        TrainConfig.load(tmp_path / "bad.json")


def test_lr_schedule():
    assert lr_factor(0, 100, 10, "constant", 0.0) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "constant", 0.0) == pytest.approx(1.0)
    assert lr_factor(50, 100, 10, "constant", 0.0) == 1.0
    assert lr_factor(10, 100, 10, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_factor(100, 100, 10, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(55, 100, 10, "linear", 0.0) == pytest.approx(0.5)


def test_lr_follows_schedule_in_the_loop(tmp_path):
    seen = []

    class Rec(Callback):
        def on_step_end(self, trainer, info):
            seen.append(info["lr"])

    tr = make_trainer(tmp_path, callbacks=[Rec()], val=False, steps=4, warmup_steps=2, schedule="linear")
    tr.fit()
    assert seen == pytest.approx([tr.lr_at(s) for s in range(4)])
    assert seen[0] == pytest.approx(0.5e-4) and seen[1] == pytest.approx(1e-4) and seen[3] < seen[2]


def test_data_order_is_a_function_of_seed_and_epoch_and_shards_cover_the_batch(tmp_path):
    assert epoch_permutation(50, 1, 0) == epoch_permutation(50, 1, 0)
    assert epoch_permutation(50, 1, 0) != epoch_permutation(50, 1, 1)
    assert sorted(epoch_permutation(50, 1, 3)) == list(range(50))
    tr = make_trainer(tmp_path, batch_size=4)
    one = tr._epoch_batches(2)
    tr.dist.world_size = 2
    shards = []
    for r in range(2):
        tr.dist.rank = r
        shards.append(tr._epoch_batches(2))
    for k, full in enumerate(one):
        assert shards[0][k] + shards[1][k] == full
    assert sample_seed(0, 1, 2) == sample_seed(0, 1, 2) != sample_seed(0, 1, 3)


def test_bf16_autocast_on_cpu(tmp_path):
    tr = make_trainer(tmp_path, bf16=True, steps=2, eval_every=0)
    res = tr.fit()
    assert res["status"] == "done" and math.isfinite(res["metrics"]["val_loss"])


def test_request_stop_writes_checkpoint_and_cancelled_status(tmp_path):
    prog = tmp_path / "p.jsonl"

    class StopAt(Callback):
        def on_step_end(self, trainer, info):
            if trainer.step == 2:
                trainer.request_stop("cancelled by SIGTERM")

    tr = make_trainer(tmp_path, callbacks=[StopAt(), ProgressFile(prog)], steps=6, checkpoint_every=0)
    res = tr.fit()
    assert res["status"] == "cancelled" and res["step"] == 2
    assert load_train_state(tmp_path / "run")["step"] == 2
    last = read_progress(prog)[-1]
    assert last["status"] == "cancelled" and last["message"] == "cancelled by SIGTERM"


def test_early_stopping_keeps_best(tmp_path):
    best_steps = []
    vals = iter([1.0, 2.0, 1.5, 1.9, 1.2, 3.0, 3.0])

    class FakeEval:
        def __init__(self):
            self.inner = make_strategy("random")

        def loss(self, model, batch, state):
            return self.inner.loss(model, batch, state)

        def evaluate(self, model, loader, state):
            return {"val_acc": next(vals)}

    stopper = EarlyStopping("val_acc", "max", patience=2, on_improve=lambda t, m: best_steps.append(t.step))
    tr = make_trainer(tmp_path, objective=FakeEval(), callbacks=[stopper], steps=20, eval_every=1)
    res = tr.fit()
    assert res["status"] == "done" and res["step"] == 4
    assert best_steps == [1, 2] and stopper.best == 2.0
    assert "early stopping" in res["message"]


def test_checkpoint_loading_refuses_pickled_objects_and_garbage(tmp_path):
    bad = tmp_path / "evil.pt"
    torch.save({"format": "smu_explain.train_state", "x": pickle.dumps, "obj": NanAt(None, 1)}, bad)
    with pytest.raises(SMUCheckpointError, match="unreadable or unsafe"):
        load_train_state(bad)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a zip")
    with pytest.raises(SMUCheckpointError, match="junk.pt"):
        load_train_state(junk)
    with pytest.raises(SMUCheckpointError, match="nothing to resume"):
        load_train_state(tmp_path / "missing")


def test_objective_state_with_numpy_round_trips_weights_only(tmp_path):
    st = {"flags": np.array([True, False, True]), "ema": [0.5, np.float32(0.25)], "n": {3: 4}, "t": (1, 2)}
    path = tmp_path / "s.pt"
    torch.save(encode_plain(st), path)
    back = decode_plain(torch.load(path, weights_only=True))
    np.testing.assert_array_equal(back["flags"], st["flags"])
    assert back["ema"] == [0.5, 0.25] and back["n"] == {3: 4} and back["t"] == [1, 2]


def test_too_few_samples_is_a_clear_error(tmp_path):
    tr = make_trainer(tmp_path, batch_size=64)
    with pytest.raises(SMUInputError, match="fewer than batch_size"):
        tr.fit()


def test_worker_processes_give_the_same_run(tmp_path):
    a = make_trainer(tmp_path / "a", val=False, steps=4)
    a.fit()
    b = make_trainer(tmp_path / "b", val=False, steps=4, num_workers=2)
    b.fit()
    for k, v in weights(a.model).items():
        torch.testing.assert_close(v, b.model.state_dict()[k], rtol=0, atol=0)


def test_progress_lines_average_over_log_every_and_flush_on_stop(tmp_path):
    prog = tmp_path / "p.jsonl"
    seen = []

    class Rec(Callback):
        def on_step_end(self, trainer, info):
            seen.append(info["loss"])
            if trainer.step == 5:
                trainer.request_stop("stop")

    tr = make_trainer(tmp_path, callbacks=[Rec(), ProgressFile(prog)], val=False, steps=9, log_every=2)
    tr.fit()
    steps = [r for r in read_progress(prog) if r["event"] == "step"]
    assert [r["step"] for r in steps] == [2, 4, 5]  # the pending step 5 is written before the status
    assert steps[0]["loss"] == pytest.approx((seen[0] + seen[1]) / 2)
    assert steps[2]["loss"] == pytest.approx(seen[4])
