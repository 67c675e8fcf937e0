"""Fast RNNPool2d vs the unfold + per-step-loop baseline: time and peak memory, forward and forward+backward.

    python benchmarks/operator.py [--device cpu|cuda] [--repeats 5] [--json benchmarks/results/operator.json]

Times are the best of ``--repeats`` runs, baseline and fast interleaved so both see the same machine load;
peak memory is what the call allocates beyond its input and weights (rnnpool.analysis.measure).
Target (issue 2): fast forward throughput >= 3x the baseline on CPU at every config, >= 10x on a GPU.
"""
import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, Dict

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline_rnnpool import UnfoldLoopRNNPool  # noqa: E402


from rnnpool.analysis.measure import peak_allocated_bytes  # noqa: E402
from rnnpool.nn import RNNPool2d  # noqa: E402

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


def bench_config(config: str, device: str, repeats: int) -> Dict[str, dict]:
    """Both implementations on one config: best time and peak memory, forward and forward+backward."""
    channels, (h, w), patch, stride, hidden, padding, batch = CONFIGS[config]
    torch.manual_seed(0)
    layer = RNNPool2d(channels, patch, stride, hidden, hidden, padding=padding).to(device)
    impls = {"baseline": UnfoldLoopRNNPool(layer), "fast": layer}
    x = torch.randn(batch, channels, h, w, device=device)
    with torch.no_grad():
        max_diff = (impls["fast"](x) - impls["baseline"](x)).abs().max().item()

    def call(module: torch.nn.Module, mode: str) -> Callable[[], object]:
        if mode == "forward":
            return lambda: torch.no_grad()(module)(x)
        return lambda: module(x).sum().backward()

    results = {name: {"config": config, "impl": name, "device": device, "batch": batch, "max_abs_diff": max_diff} for name in impls}
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--json", default="benchmarks/results/operator.json")
    args = parser.parse_args()

    rows = []
    summary = {}
    print(f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} repeats={args.repeats}")
    print(f"{'config':22s} {'impl':9s} {'fwd ms':>9s} {'fwd img/s':>10s} {'fwd MiB':>8s} {'f+b ms':>9s} {'f+b MiB':>8s}")
    for config in args.configs:
        results = bench_config(config, args.device, args.repeats)
        for name, r in results.items():
            rows.append(r)
            print(f"{config:22s} {name:9s} {r['forward_ms']:9.1f} {r['forward_images_per_s']:10.1f} "
                  f"{r['forward_peak_mib']:8.1f} {r['forward_backward_ms']:9.1f} {r['forward_backward_peak_mib']:8.1f}")
        base, fast = results["baseline"], results["fast"]
        summary[config] = {
            "forward_speedup": base["forward_ms"] / fast["forward_ms"],
            "forward_backward_speedup": base["forward_backward_ms"] / fast["forward_backward_ms"],
            "forward_memory_ratio": base["forward_peak_mib"] / max(fast["forward_peak_mib"], 1e-9),
            "max_abs_diff": base["max_abs_diff"],
        }
        s = summary[config]
        print(f"{'':22s} speed-up forward {s['forward_speedup']:.1f}x, forward+backward {s['forward_backward_speedup']:.1f}x, "
              f"forward memory {s['forward_memory_ratio']:.1f}x less, max |diff| {s['max_abs_diff']:.1e}")
    target = 10.0 if args.device == "cuda" else 3.0
    met = all(s["forward_speedup"] >= target for s in summary.values())
    print(f"target: forward speed-up >= {target:.0f}x at every config: {'MET' if met else 'NOT MET'}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": args.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
                               "target_forward_speedup": target, "target_met": met, "runs": rows, "summary": summary}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
