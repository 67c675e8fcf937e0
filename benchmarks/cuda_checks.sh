#!/usr/bin/env bash
# The GPU checks of issue 13 in one call, for a lent CUDA machine (no install: the repository on PYTHONPATH).
#
#     OUT=/tmp/out bash benchmarks/cuda_checks.sh [tests|operator|train_step|profile|variants ...]
#     OUT=/tmp/out DATA=/tmp/data [BUDGET=7.5] bash benchmarks/cuda_checks.sh training
#
# Runs, each under its own time limit so that one hang does not take the others with it: the Triton kernels'
# tests and the fused-operator tests on the GPU, the operator benchmark on CUDA (fused Triton kernels vs the
# unfold + per-step baseline and vs nn.GRU on cuDNN), the training-step benchmark on CUDA, and a profile of the
# kernels of a forward and a forward+backward, and (asked for by name) the forward kernel's launch settings
# (benchmarks/triton_variants.py). Logs and JSON go to $OUT; copy the JSON to benchmarks/results/ and run
# benchmarks/readme_tables.py.
set -u
OUT=${OUT:?set OUT to a folder for the logs and JSON}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
steps=${*:-tests operator train_step profile}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"

for step in $steps; do
  start=$(date +%s)
  case $step in
    tests)
      # (each Triton kernel variant compiles on first use, a few seconds each: pytest-xdist spreads them)
      workers=$(python3 -c "import xdist" 2>/dev/null && echo "-n 8")
      timeout 200 python3 -m pytest -q -p no:cacheprovider $workers -rf --durations=5 tests/nn/test_fused_triton.py \
        tests/nn/test_fused.py 2>&1 | tee "$OUT/tests.log" | tail -25 ;;
    operator)
      timeout 200 python3 benchmarks/operator.py --device cuda --no-compile --repeats 5 \
        --json "$OUT/operator_cuda.json" 2>&1 | tee "$OUT/operator.log" ;;
    train_step)
      timeout 90 python3 benchmarks/train_step.py --device cuda --repeats 10 \
        --json "$OUT/train_step_cuda.json" 2>&1 | tee "$OUT/train_step.log" ;;
    variants)
      timeout 150 python3 benchmarks/triton_variants.py --json "$OUT/triton_variants.json" 2>&1 | tee "$OUT/variants.log" ;;
    profile)
      timeout 60 python3 - <<'EOF' 2>&1 | tee "$OUT/profile.log"
import torch
from torch.profiler import ProfilerActivity, profile
from rnnpool.nn import RNNPool2d
for name, (c, size, k, s, h, p, n) in {"mobilenetv2 b8": (32, (112, 112), 6, 4, 16, 1, 8),
                                       "densenet121 b8": (64, (112, 112), 8, 4, 48, 2, 8),
                                       "face_c b8": (3, (480, 640), 8, 4, 16, 0, 8)}.items():
    layer = RNNPool2d(c, k, s, h, h, padding=p).cuda()
    x = torch.randn(n, c, *size, device="cuda")
    for mode in ("forward", "forward+backward"):
        call = (lambda: layer(x).sum().backward()) if mode != "forward" else (lambda: torch.no_grad()(layer)(x))
        for _ in range(3):
            call()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                call()
            torch.cuda.synchronize()
        print(f"== {name} {mode} (5 calls)")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=60))
EOF
      ;;
    training)
      # Issue 10's long runs side by side on the one GPU, fitted into BUDGET minutes (default 7.5): the CIFAR-10
      # 0.35x pair and the pooling ablation (each job decodes the images onto the GPU; at most PAIR_EPOCHS epochs,
      # fewer if its timed probe says they do not fit, cut at the budget in any case), and face detector runs
      # (FACE_JOBS: MODEL:BATCH:LR[:GRAD_CLIP] entries, GRAD_CLIP 0 for none, the library's norm 10 where left out;
      # by default Face-M4 and Face-Quant; FACE_EPOCHS, cut at the budget; FACE_JOBS= runs none). The jobs share the
      # GPU by time slices and all go at about the same pace: on an H200 (2026-11-27, BUDGET=8.2 PAIR_EPOCHS=40) six
      # CIFAR jobs finished 40 epochs (the default PAIR_EPOCHS) in 6-6.5 minutes beside the face jobs; RNNPool as the
      # last pool (13 s an epoch in its probe) was fitted to 30 and trained its 40 alone in a second call. DATA holds
      # cifar10/ and faces/ as in ../shared/data. Everything lands in $OUT/training.tgz (the JSON rows, logs,
      # metrics.csv of every run, the detectors' best weights, the 0.35x RNNPool classifier's best weights).
      budget=${BUDGET:-7.5}
      export TQDM_DISABLE=1  # (no progress bars in the logs)
      data=${DATA:?set DATA to a folder with cifar10/ and faces/}
      work=/tmp/training && rm -rf $work && mkdir -p $work/logs $work/json $work/weights
      hard=$(python3 -c "print(int($budget * 60 + 90))")  # (after the budget: the final evaluation and profile)
      for spec in mobilenetv2_035 mobilenetv2_035_rnnpool mobilenetv2_035_rnnpool@downsample=avg \
                  mobilenetv2_035_rnnpool@downsample=max mobilenetv2_035_rnnpool@downsample=strided_conv \
                  mobilenetv2_035_rnnpool@downsample=renet mobilenetv2_035@last_pool=rnnpool; do
        name=$(echo "$spec" | tr '@=,' '___')
        OMP_NUM_THREADS=1 timeout $hard python3 benchmarks/train_pairs.py --data "$data/cifar10" --pairs "$spec" \
          --input-size 64 --epochs ${PAIR_EPOCHS:-40} --batch-size 256 --lr 0.2 --warmup-epochs 2 --min-scale 0.25 --workers 1 \
          --device ${DEVICE:-cuda} --time-budget "$budget" --project $work/pairs --json $work/json/pairs_$name.json \
          > $work/logs/pairs_$name.log 2>&1 &
      done
      for face in ${FACE_JOBS-rnnpool_face_m4:16:0.005 rnnpool_face_quant:32:0.01}; do
        IFS=: read -r model batch lr clip <<< "$face"
        label=$model${clip:+_clip$clip}
        OMP_NUM_THREADS=2 timeout $hard python3 benchmarks/train_faces.py --train "$data/faces/train_bbx_gt.txt" \
          --val "$data/faces/val_bbx_gt.txt" --models $model --epochs ${FACE_EPOCHS:-65} --input-size 320 --batch-size $batch \
          --lr $lr ${clip:+--grad-clip $clip --suffix _clip$clip} --eval-period 5 --workers 5 --device ${DEVICE:-cuda} \
          --time-limit "$budget" --project $work/faces --weights-out $work/weights --json $work/json/faces_$label.json \
          > $work/logs/faces_$label.log 2>&1 &
      done
      wait
      nvidia-smi --query-gpu=name,memory.used --format=csv > $work/logs/gpu_after.txt
      cp $work/pairs/mobilenetv2_035_rnnpool/weights/best.pt $work/weights/mobilenetv2_035_rnnpool_cifar64.pt 2>/dev/null
      (cd $work && find pairs faces -name metrics.csv | tar czf "$OUT/training.tgz" logs json weights -T -)
      tail -n 3 $work/logs/*.log ;;
  esac
  echo "== step $step took $(( $(date +%s) - start )) s"
done
