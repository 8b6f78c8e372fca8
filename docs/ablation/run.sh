#!/usr/bin/env bash
# One tiny pre-training run of the ablation table in docs/PRETRAINING.md, then its recovery
# next to the no-model rules on POP909 validation songs.
#   docs/ablation/run.sh NAME STRATEGY STEPS [extra smu pretrain flags]
#   e.g. docs/ablation/run.sh D random 600
set -euo pipefail
name=$1; strat=$2; steps=$3; shift 3
cd "$(dirname "$0")/../.."
out=${ABLATION_OUT:-runs/ablation}/$name-$strat
files=$(python -c "
from pathlib import Path
from smu_explain import data
fs = [str(r.path) for r in data.melody_task(seed=0).splits['train']]
print(' '.join(fs + sorted(str(p) for p in Path('sample_midi').glob('*.mid'))))")
OMP_NUM_THREADS=${THREADS:-1} python -m smu_explain.cli pretrain --strategy "$strat" --data $files \
  --config "docs/ablation/$name.json" --out "$out" --steps "$steps" --batch-size 16 --val-fraction 0.02 \
  --eval-every 200 --checkpoint-every 200 --no-bar "$@"
python bench/baselines.py --no-context-check --model "$out"
