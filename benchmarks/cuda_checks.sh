#!/usr/bin/env bash
# The GPU checks of issue 13 in one call, for a lent CUDA machine (no install: the repository on PYTHONPATH).
#
#     OUT=/tmp/out bash benchmarks/cuda_checks.sh [tests|operator|train_step|profile|variants ...]
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
  esac
  echo "== step $step took $(( $(date +%s) - start )) s"
done
