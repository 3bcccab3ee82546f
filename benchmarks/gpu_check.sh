#!/usr/bin/env bash
# Everything a lent GPU machine is asked to show, in one call that fits its short lease:
#
#   OUT=DIR bash benchmarks/gpu_check.sh [GROUP ...]          # on the GPU machine
#   OUT=DIR bash benchmarks/gpu_check.sh smoke [GROUP ...]    # the same steps, tiny, on a CPU
#
# GROUPs (default: all, in this order): bench - the train-step benchmark of the thesis model,
# float32 (full and TF32 precision) and bfloat16, batch 16 and 256; study -
# benchmarks.analysis (PCA and our K-Means sweep K = 2..10 with the exact silhouette) at
# 124,000 and 10,000 x 4,096; demo - configs/demo.py, all of it, then evaluate
# with the flip test and COCO AP; baseline - configs/baseline.py for 4 epochs on synthetic
# data (thesis crops, 256x256), then evaluate; analysis - analysis.skips and analysis.latent
# on that run; autoencoder - the autoencoder's two stages on that run and analysis.compare;
# fullstudy - analysis.latent (extraction, PCA, K-Means sweep, exact silhouette, figures) on
# 124,040 train crops made from the baseline data by benchmarks.full_split, with the baseline
# run's weights. GPU_CHECK_BASE_EPOCHS (default 4) sets the baseline run's length and
# GPU_CHECK_STUDY_ROWS (default "124000 10000") the study's sizes.
# The data are drawn and prepared on the CPUs in the background while the benchmark holds
# the GPU. Each step has a time limit, starts only if that limit ends before the deadline
# (GPU_CHECK_DEADLINE seconds, default 570) and the script goes on when one fails. On an
# H200 (2026-11-26) everything took about 15 minutes, more than one 10-minute call: pick
# groups. OUT gets log.txt (every step's output), summary.txt (each step's exit status, time
# and last lines: what the call prints) and artifacts.tar.gz (the analysis reports, run
# configs and eval JSON; no checkpoints or latents).
#
# Packages the GPU image lacks (ml_collections, tensorboardX, pycocotools) travel as wheels
# in .whl/ (benchmarks/README.md says how to fetch them) and go to /tmp/site; jax, flax,
# optax and orbax-checkpoint are the image's own.
set -u
OUT=${OUT:?set OUT to the output folder}
SMOKE=
[ "${1:-}" = smoke ] && { SMOKE=smoke; shift; }
GROUPS_WANTED=${*:-bench study demo baseline analysis autoencoder fullstudy}
want() { [[ " $GROUPS_WANTED " == *" $1 "* ]]; }
W=${GPU_CHECK_WORK:-/tmp/gpu_check}
DEADLINE=${GPU_CHECK_DEADLINE:-570}      # seconds: a step starts only if its limit ends before
T0=$(date +%s)
PY=${PYTHON:-python3}
rm -rf "$W" && mkdir -p "$W" "$OUT"
LOG=$OUT/log.txt SUM=$OUT/summary.txt
export PYTHONUNBUFFERED=1 SHG_JAX_CACHE=$W/cache XLA_PYTHON_CLIENT_MEM_FRACTION=0.95

elapsed() { echo $(( $(date +%s) - T0 )); }
note() { echo "[$(elapsed) s] $*" | tee -a "$SUM" >> "$LOG"; }
# step NAME LIMIT_S CMD...: CMD under a time limit; its output to the log, its tail to the summary.
step() {
  local name=$1 limit=$2; shift 2
  local s; s=$(date +%s)
  note "$name: $*"
  timeout "$limit" "$@" > "$W/$name.log" 2>&1
  local rc=$?
  cat "$W/$name.log" >> "$LOG"
  grep -v "^\s*$" "$W/$name.log" | grep -Ev 'it/s\]|s/it\]|^WARNING:absl|^[WI][0-9]{4} ' | tail -n "${TAIL:-12}" >> "$SUM"
  note "$name: exit $rc after $(( $(date +%s) - s )) s"
  return $rc
}
# in_time NAME LIMIT_S: whether a step with this limit still ends before the deadline.
in_time() { [ $(( $(elapsed) + $2 )) -le "$DEADLINE" ] || { note "skipped $1: would pass ${DEADLINE} s"; return 1; }; }

VERSIONS='import sys, jax, jaxlib, flax, optax, orbax.checkpoint as o, numpy, sklearn, scipy
print(sys.version.split()[0], "jax", jax.__version__, "jaxlib", jaxlib.__version__, "flax",
      flax.__version__, "optax", optax.__version__, "orbax", o.__version__, "numpy",
      numpy.__version__, "sklearn", sklearn.__version__, "scipy", scipy.__version__)'
IMPORTS='import jax, jax.numpy as jnp; from shg_jax import train, pretrain, coco_eval
from analysis import latent, skips, compare; print(jax.devices(), jax.jit(jnp.sum)(jnp.ones(3)))'
if [ -d .whl ] && [ "$SMOKE" != smoke ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
      .whl/*.whl >> "$LOG" 2>&1 && export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD}
TAIL=20 step env 90 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm \
  --format=csv 2>&1; nproc; $PY -c '$VERSIONS'; $PY -c '$IMPORTS'"
if [ "$SMOKE" = smoke ]; then
  BENCH=(--config=configs/demo.py --steps 1) F32=2,4 BF16=2
  DEMO=(--config.num_epochs=1 --config.synthetic.train=60 --config.synthetic.val=20
        --config.precise_bn.batch_size=8)
  SYN=(--train 60 --val 20 --size 96) PREP=(--size 64 --test-size 10)
  BASE=(--config.model.input_size=64 --config.model.features=16 --config.model.mid_features=8
        --config.model.stem_features=16 --config.model.depth=2 --config.num_epochs=2)
  AE=(--config.model.input_size=64 --config.model.features=16 --config.model.mid_features=8
      --config.model.stem_features=16 --config.model.depth=2 --config.model.ae_code_size=8
      '--config.model.ae_channels=(16, 8, 8)')
  PRE_EPOCHS=2 AE_EPOCHS=1 KS=2-3 STUDY=(--dims 64 --ks 2-3) STUDY_ROWS=(3000 600)
  FULL_ROWS=3000 FULL_BATCH=32
else
  BENCH=(--config=configs/baseline.py --steps 10) F32=16,256 BF16=16,256
  DEMO=() SYN=(--train 2000 --val 200 --size 320) PREP=(--size 256 --test-size 200)
  BASE=(--config.num_epochs=${GPU_CHECK_BASE_EPOCHS:-4}) AE=() PRE_EPOCHS=10 AE_EPOCHS=2
  KS=2-10 STUDY=(--dims 4096 --ks 2-10) STUDY_ROWS=(${GPU_CHECK_STUDY_ROWS:-124000 10000})
  FULL_ROWS=124040 FULL_BATCH=256
fi

# The data, on the CPUs, while the benchmark holds the GPU.
want demo && { ( JAX_PLATFORMS=cpu $PY -c "
import sys
from absl import flags
from ml_collections import config_flags
config_flags.DEFINE_config_file('config', 'configs/demo.py')
flags.FLAGS(['x'] + sys.argv[1:])
from data_prep.cache import ensure_synthetic
ensure_synthetic(flags.FLAGS.config)" "${DEMO[@]}" > "$W/bg_data_demo.log" 2>&1
  echo "exit $?" >> "$W/bg_data_demo.log" ) & DEMO_DATA=$!; }
want_run() { want baseline || want analysis || want autoencoder || want fullstudy; }
want_run && { ( set -o pipefail; JAX_PLATFORMS=cpu $PY -m data_prep.synthetic --out "$W/syn/coco" "${SYN[@]}" &&
  JAX_PLATFORMS=cpu $PY -m data_prep.coco --coco-root "$W/syn/coco" --out "$W/syn" "${PREP[@]}" &&
  { ! want fullstudy || JAX_PLATFORMS=cpu $PY -m benchmarks.full_split --src "$W/syn" \
      --out "$W/full" --rows $FULL_ROWS 2>&1 | tr '\r' '\n' | tail -n 2; }
  echo "exit $?" ) > "$W/bg_data_baseline.log" 2>&1 & BASE_DATA=$!; }

if want bench; then
  step bench_f32 150 $PY -m benchmarks.train_step --dtype float32 --batch $F32 "${BENCH[@]}"
  step bench_bf16 150 $PY -m benchmarks.train_step --dtype bfloat16 --batch $BF16 "${BENCH[@]}"
  # config.precision: the float32 rows above run at full float32 (the thesis' numerics);
  # TF32 is what JAX would pick on its own on this GPU.
  step bench_tf32 150 $PY -m benchmarks.train_step --dtype float32 --batch $F32 \
      "${BENCH[@]}" --config.precision=tensorfloat32
fi

if want study; then
  for rows in "${STUDY_ROWS[@]}"; do
    limit=$([ "$rows" -gt 50000 ] && echo 300 || echo 120)
    in_time "study_$rows" "$limit" && step "study_$rows" "$limit" $PY -m benchmarks.analysis --rows "$rows" \
        --impl ours --silhouette-sample 0 "${STUDY[@]}"
  done
fi

if want demo; then
  wait $DEMO_DATA; TAIL=3 step data_demo 1 cat "$W/bg_data_demo.log"
  in_time demo 150 && step demo 150 $PY main.py --config=configs/demo.py --workdir="$W/runs/demo" \
      "${DEMO[@]}" &&
  in_time demo_eval 40 && step demo_eval 40 $PY -m shg_jax.evaluate --workdir "$W/runs/demo" \
      --flip --coco-ap
fi

RUN=$W/runs/baseline
if want_run; then
  wait $BASE_DATA; TAIL=4 step data_baseline 1 cat "$W/bg_data_baseline.log"
  in_time baseline 150 && step baseline 150 $PY main.py --config=configs/baseline.py \
      --workdir="$RUN" --config.data_dir="$W/syn" "${BASE[@]}"
  want baseline && in_time baseline_eval 40 && step baseline_eval 40 $PY -m shg_jax.evaluate \
      --workdir "$RUN" --flip --coco-ap
fi
if want analysis; then
  in_time skips 45 && step skips 45 $PY -m analysis.skips --ckpt "$RUN" --out "$W/reports/skips"
  in_time latent 150 && step latent 150 $PY -m analysis.latent --ckpt "$RUN" \
      --out "$W/reports/latent" --subset all --ks $KS
fi
if want autoencoder && in_time ae_pretrain 60; then
  step ae_pretrain 60 $PY main.py --config=configs/autoencoder.py --config.stage=pretrain \
      --config.init_from="$RUN" --config.data_dir="$W/syn" --workdir="$W/runs/ae_pretrain" \
      --config.pretrain.num_epochs=$PRE_EPOCHS "${AE[@]}" &&
  in_time ae_finetune 80 && step ae_finetune 80 $PY main.py --config=configs/autoencoder.py \
      --config.stage=finetune --config.init_from="$W/runs/ae_pretrain" --config.data_dir="$W/syn" \
      --workdir="$W/runs/ae" --config.num_epochs=$AE_EPOCHS "${AE[@]}" &&
  in_time compare 60 && step compare 60 $PY -m analysis.compare --ckpt "$RUN" --ckpt "$W/runs/ae" \
      --out "$W/reports/compare" --ks $KS
fi

if want fullstudy; then
  in_time fullstudy 330 && TAIL=25 step fullstudy 330 $PY -m analysis.latent --ckpt "$RUN" \
      --data-dir "$W/full" --out "$W/reports/full" --subset all --ks $KS --batch-size $FULL_BATCH
fi

(cd "$W" && tar czf "$OUT/artifacts.tar.gz" --exclude='*.npy' --exclude='latents' reports \
    $(find runs -maxdepth 2 \( -name '*.json' -o -name eval \) 2>/dev/null)) 2>> "$LOG"
note "done"
cat "$SUM"
