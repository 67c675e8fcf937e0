"""Fast RNNPool2d vs the unfold + per-step-loop baseline: time and peak memory, forward and forward+backward.

    python benchmarks/operator.py [--device cpu|cuda] [--repeats 5] [--json benchmarks/results/operator.json]

Implementations: ``baseline`` (benchmarks/baseline_rnnpool.py), ``fast`` (RNNPool2d, eager) and
``compiled`` (RNNPool2d with rnnpool.nn.compile_recurrence: each recurrent step fused by torch.compile;
compile time is excluded, it happens in the warm-up call). Times are the best of ``--repeats`` runs, the
implementations interleaved so all see the same machine load; peak memory is what the call allocates
beyond its input and weights (rnnpool.analysis.measure).
Target (issue 2): forward throughput >= 3x the baseline on CPU at every config, >= 10x on a GPU. Also the
time per image of forward+backward at batch 8 against batch 1 (it must not grow with the batch).
"""
import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import run_info, write_json  # noqa: E402
from baseline_rnnpool import UnfoldLoopRNNPool  # noqa: E402

from rnnpool.analysis.measure import peak_allocated_bytes  # noqa: E402
from rnnpool.nn import RNNPool2d, compile_recurrence  # noqa: E402

# name: (input channels, (H, W), patch, stride, h1 = h2, padding, batch)
CONFIGS = {
    "mobilenetv2": (32, (112, 112), 6, 4, 16, 1, 8),
    "mobilenetv2_035_vww": (8, (112, 112), 6, 4, 8, 1, 8),
    "densenet121": (64, (112, 112), 8, 4, 48, 2, 8),
    "rnnpool_face_c": (3, (480, 640), 8, 4, 16, 0, 1),
    "rnnpool_face_quant": (4, (240, 320), 8, 4, 4, 0, 4),
    "rnnpool_face_m4": (4, (120, 160), 8, 4, 16, 0, 8),
}


def _timed(fn: Callable[[], object], device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench_config(config: str, device: str, repeats: int, compiled: bool = True) -> Dict[str, dict]:
    """The implementations on one config: best time and peak memory, forward and forward+backward."""
    channels, (h, w), patch, stride, hidden, padding, batch = CONFIGS[config]
    torch.manual_seed(0)
    layer = RNNPool2d(channels, patch, stride, hidden, hidden, padding=padding).to(device)
    impls = {"baseline": UnfoldLoopRNNPool(layer), "fast": layer}
    if compiled:
        impls["compiled"] = compile_recurrence(copy.deepcopy(layer))
    x = torch.randn(batch, channels, h, w, device=device)
    with torch.no_grad():
        reference = impls["baseline"](x)
        diffs = {name: (module(x) - reference).abs().max().item() for name, module in impls.items()}

    def call(module: torch.nn.Module, mode: str) -> Callable[[], object]:
        if mode == "forward":
            return lambda: torch.no_grad()(module)(x)
        return lambda: module(x).sum().backward()

    results = {name: {"config": config, "impl": name, "device": device, "batch": batch, "max_abs_diff": diffs[name]}
               for name in impls}
    for mode in ("forward", "forward_backward"):
        times = {name: [] for name in impls}
        for name, module in impls.items():
            call(module, mode)()  # warm-up
        for _ in range(repeats):
            for name, module in impls.items():
                times[name].append(_timed(call(module, mode), device))
        for name, module in impls.items():
            best = min(times[name])
            results[name][f"{mode}_ms"] = best * 1e3
            results[name][f"{mode}_images_per_s"] = batch / best
            results[name][f"{mode}_peak_mib"] = peak_allocated_bytes(call(module, mode), device) / 2**20
    return results


SCALING_CONFIG, SCALING_BATCHES = "rnnpool_face_c", (1, 8)


def bench_batch_scaling(device: str, repeats: int) -> Dict[str, object]:
    """Forward+backward of the eager layer at two batch sizes of one config: the time per image should not
    grow with the batch (autograd once zero-filled a whole-grid gradient per chunk and per step: 0.76 s at
    batch 1, 24.4 s at batch 8 for Face-C 640x480)."""
    channels, (h, w), patch, stride, hidden, padding, _ = CONFIGS[SCALING_CONFIG]
    torch.manual_seed(0)
    layer = RNNPool2d(channels, patch, stride, hidden, hidden, padding=padding).to(device)
    inputs = {n: torch.randn(n, channels, h, w, device=device) for n in SCALING_BATCHES}
    calls = {n: (lambda x=x: layer(x).sum().backward()) for n, x in inputs.items()}
    times: Dict[int, List[float]] = {n: [] for n in SCALING_BATCHES}
    for call in calls.values():
        call()  # warm-up
    for _ in range(repeats):
        for n, call in calls.items():
            times[n].append(_timed(call, device))
    ms = {n: min(t) * 1e3 for n, t in times.items()}
    small, large = SCALING_BATCHES
    return {"config": SCALING_CONFIG, "impl": "fast", "device": device, "forward_backward_ms": {str(n): v for n, v in ms.items()},
            "per_image_growth": (ms[large] / large) / (ms[small] / small)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--no-compile", dest="compiled", action="store_false", help="skip the compiled variant")
    parser.add_argument("--json", default="benchmarks/results/operator.json")
    args = parser.parse_args()

    rows = []
    summary = {}
    print(f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} repeats={args.repeats}")
    print(f"{'config':22s} {'impl':9s} {'fwd ms':>9s} {'fwd img/s':>10s} {'fwd MiB':>8s} {'f+b ms':>9s} {'f+b MiB':>8s}")
    for config in args.configs:
        results = bench_config(config, args.device, args.repeats, args.compiled)
        for name, r in results.items():
            rows.append(r)
            print(f"{config:22s} {name:9s} {r['forward_ms']:9.1f} {r['forward_images_per_s']:10.1f} "
                  f"{r['forward_peak_mib']:8.1f} {r['forward_backward_ms']:9.1f} {r['forward_backward_peak_mib']:8.1f}")
        base = results["baseline"]
        summary[config] = {"max_abs_diff": max(r["max_abs_diff"] for r in results.values())}
        for name in [n for n in results if n != "baseline"]:
            r = results[name]
            summary[config].update({
                f"{name}_forward_speedup": base["forward_ms"] / r["forward_ms"],
                f"{name}_forward_backward_speedup": base["forward_backward_ms"] / r["forward_backward_ms"],
                f"{name}_forward_memory_ratio": base["forward_peak_mib"] / max(r["forward_peak_mib"], 1e-9)})
            s = summary[config]
            print(f"{'':22s} {name}: speed-up forward {s[f'{name}_forward_speedup']:.1f}x, forward+backward "
                  f"{s[f'{name}_forward_backward_speedup']:.1f}x, forward memory {s[f'{name}_forward_memory_ratio']:.1f}x less")
    scaling = bench_batch_scaling(args.device, args.repeats)
    small, large = SCALING_BATCHES
    print(f"forward+backward {scaling['config']} (fast): batch {small} {scaling['forward_backward_ms'][str(small)]:.0f} ms, "
          f"batch {large} {scaling['forward_backward_ms'][str(large)]:.0f} ms; time per image x{scaling['per_image_growth']:.2f} "
          f"at batch {large}")
    target = 10.0 if args.device == "cuda" else 3.0
    met = {}
    for name in ("fast", "compiled"):
        if all(f"{name}_forward_speedup" in s for s in summary.values()):
            met[name] = all(s[f"{name}_forward_speedup"] >= target for s in summary.values())
            print(f"target: {name} forward speed-up >= {target:.0f}x at every config: {'MET' if met[name] else 'NOT MET'}")
    write_json(args.json, {"device": args.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
                           "target_forward_speedup": target, "target_met": met, "runs": rows, "summary": summary,
                           "batch_scaling": scaling, "repeats": args.repeats, "run": run_info()})


if __name__ == "__main__":
    main()
