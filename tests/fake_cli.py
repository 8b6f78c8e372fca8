"""A stand-in for ``smu pretrain`` used by the run-registry and app tests.

It writes the progress JSONL format of ARCHITECTURE.md quickly, without torch.
``--mode``: ``ok`` (all steps, then status done), ``slow`` (0.1 s per step,
SIGTERM -> status cancelled), ``crash`` (a few steps, a traceback, exit 1),
``stubborn`` (ignores SIGTERM: only SIGKILL ends it). Default: ``$FAKE_CLI_MODE`` or ``ok``.
"""

import argparse
import json
import os
import signal
import sys
import time


def main() -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    pre = sub.add_parser("pretrain")
    for a in ("--strategy", "--data", "--config", "--out", "--progress"):
        pre.add_argument(a, required=True)
    pre.add_argument("--steps", type=int, required=True)
    pre.add_argument("--mode", default=os.environ.get("FAKE_CLI_MODE", "ok"))
    pre.add_argument("--log-every", type=int, default=1)
    pre.add_argument("--no-bar", action="store_true")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    f = open(args.progress, "a", encoding="utf-8")  # noqa: SIM115  open for the whole fake run (emit writes to it)
    t0 = time.time()

    def emit(**rec):
        rec.update(time=time.time(), wall_s=time.time() - t0)
        f.write(json.dumps(rec) + "\n")
        f.flush()

    state = {"stop": False}

    def on_term(signum, frame):
        state["stop"] = True

    if args.mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, on_term)
    emit(event="start", step=0, total_steps=args.steps, config={"size": args.config},
         world_size=1, device="cpu", n_params=1000, resumed=False)
    print("fake training started", flush=True)
    for step in range(1, args.steps + 1):
        if state["stop"]:
            emit(event="status", status="cancelled", message="cancelled by SIGTERM", step=step - 1)
            return 0
        if args.mode == "crash" and step == 3:
            print("Traceback (most recent call last):\nRuntimeError: boom at step 3", file=sys.stderr,
                  flush=True)
            return 1
        stats = {"loss": 5.0 / step, "ce_pitch": 3.0 / step, "ce_duration": 2.0 / step}
        if args.strategy == "adversarial":
            stats.update(masker_loss=0.7 - 0.01 * step, score_mean=0.5, frozen_in_batch=0.0)
        if step % args.log_every == 0:
            emit(event="step", step=step, epoch=0, loss=5.0 / step, lr=1e-4, tokens_per_s=1000.0,
                 stats=stats)
        if args.mode in ("slow", "stubborn"):
            time.sleep(0.1)
    emit(event="status", status="done", message="finished", step=args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
