"""Fast RNNPool2d vs the unfold + per-step-loop baseline: time and peak memory, forward and forward+backward.

    python benchmarks/operator.py [--device cpu|cuda] [--repeats 5] [--json benchmarks/results/operator.json]

Each (config, implementation) is measured in its own subprocess so that the peak resident memory
(CPU: ru_maxrss growth; CUDA: torch.cuda.max_memory_allocated) belongs to that run alone.
Target (issue 2): fast forward throughput >= 3x the baseline on CPU at every config, >= 10x on a GPU.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline_rnnpool import UnfoldLoopRNNPool  # noqa: E402

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


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(config: str, impl: str, device: str, repeats: int) -> dict:
    """Time and peak memory of one implementation on one config (run inside a fresh process)."""
    channels, (h, w), patch, stride, hidden, padding, batch = CONFIGS[config]
    torch.manual_seed(0)
    layer = RNNPool2d(channels, patch, stride, hidden, hidden, padding=padding).to(device)
    module = layer if impl == "fast" else UnfoldLoopRNNPool(layer)
    x = torch.randn(batch, channels, h, w, device=device)
    result = {"config": config, "impl": impl, "device": device, "batch": batch}
    for mode in ("forward", "forward_backward"):
        def run() -> None:
            if mode == "forward":
                with torch.no_grad():
                    module(x)
            else:
                module(x).sum().backward()
        run()  # warm-up
        _sync(device)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            base = _rss_bytes()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            _sync(device)
            times.append(time.perf_counter() - start)
        peak = (torch.cuda.max_memory_allocated() if device == "cuda" else _rss_bytes()) - base
        result[f"{mode}_s"] = statistics.median(times)
        result[f"{mode}_images_per_s"] = batch / result[f"{mode}_s"]
        result[f"{mode}_peak_mib"] = max(peak, 0) / 2**20
    return result


def check_equal(config: str, device: str) -> float:
    """Largest |fast - baseline| on the config (both share weights), so the timing compares equal work."""
    channels, (h, w), patch, stride, hidden, padding, _ = CONFIGS[config]
    layer = RNNPool2d(channels, patch, stride, hidden, hidden, padding=padding).to(device)
    x = torch.randn(1, channels, h, w, device=device)
    with torch.no_grad():
        return (layer(x) - UnfoldLoopRNNPool(layer)(x)).abs().max().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--json", default="benchmarks/results/operator.json")
    parser.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        print(json.dumps(measure(args._child[0], args._child[1], args.device, args.repeats)))
        return

    rows = []
    header = f"{'config':22s} {'impl':9s} {'fwd ms':>9s} {'fwd img/s':>10s} {'fwd MiB':>8s} {'f+b ms':>9s} {'f+b MiB':>8s}"
    print(f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()}")
    print(header)
    summary = {}
    for config in args.configs:
        max_diff = check_equal(config, args.device)
        results = {}
        for impl in ("baseline", "fast"):
            cmd = [sys.executable, __file__, "--device", args.device, "--repeats", str(args.repeats), "--_child", config, impl]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            if proc.returncode:
                raise SystemExit(f"{config}/{impl} failed:\n{proc.stderr}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results[impl] = r
            rows.append(r)
            print(f"{config:22s} {impl:9s} {r['forward_s']*1e3:9.1f} {r['forward_images_per_s']:10.1f} "
                  f"{r['forward_peak_mib']:8.1f} {r['forward_backward_s']*1e3:9.1f} {r['forward_backward_peak_mib']:8.1f}")
        summary[config] = {
            "forward_speedup": results["baseline"]["forward_s"] / results["fast"]["forward_s"],
            "forward_backward_speedup": results["baseline"]["forward_backward_s"] / results["fast"]["forward_backward_s"],
            "max_abs_diff": max_diff,
        }
        s = summary[config]
        print(f"{'':22s} speed-up forward {s['forward_speedup']:.1f}x, forward+backward {s['forward_backward_speedup']:.1f}x, max |diff| {max_diff:.1e}")
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
