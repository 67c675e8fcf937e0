"""Fast RNNPool2d vs the unfold + per-step-loop baseline: time and peak memory, forward and forward+backward.

    python benchmarks/operator.py [--device cpu|cuda] [--repeats 5] [--batches 1 8] [--json benchmarks/results/operator.json]

Implementations: ``baseline`` (benchmarks/baseline_rnnpool.py), ``fused`` (RNNPool2d as it runs by default: on
CPUs the fused FastGRNN kernel of rnnpool.nn.fused, on GPUs the Triton kernels of rnnpool.nn.fused_triton),
``eager`` (RNNPool2d with the kernels switched off: its PyTorch path) and ``compiled`` (the eager path with
rnnpool.nn.compile_recurrence: each recurrent step fused by torch.compile; compile time is excluded, it happens
in the warm-up call). On a GPU (or with ``--gru``) also ``gru``: ``nn.GRU`` (cuDNN on a GPU) running the same
recurrences as the layer (RNN1 over every patch row and column, RNN2 both ways over their summaries, the same
hidden sizes and steps) on inputs made beforehand, so only its recurrences are timed; issue 13 asks the fused
layer to be at least as fast. Every config runs at each of
``--batches``; forward+backward at the largest. Times are the best of ``--repeats`` samples, each the mean of
back-to-back calls lasting at least SAMPLE_SECONDS, the implementations interleaved so all see the same machine
load; peak memory is what the call allocates beyond its input and weights (rnnpool.analysis.measure).
Targets (issue 13): forward >= 10x the baseline at every config and batch, forward+backward >= 5x at the
largest batch; on a GPU also no slower than ``gru``. Also the time per image of forward+backward at batch 8 against
batch 1 (it must not grow with the batch).
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
from rnnpool.nn.fused import fused_available, triton_available, use_fused  # noqa: E402
from rnnpool.nn.rnnpool import rnnpool_output_size  # noqa: E402

# name: (input channels, (H, W), patch, stride, h1 = h2, padding)
CONFIGS = {
    "mobilenetv2": (32, (112, 112), 6, 4, 16, 1),
    "mobilenetv2_035_vww": (8, (112, 112), 6, 4, 8, 1),
    "densenet121": (64, (112, 112), 8, 4, 48, 2),
    "rnnpool_face_c": (3, (480, 640), 8, 4, 16, 0),
    "rnnpool_face_quant": (4, (240, 320), 8, 4, 4, 0),
    "rnnpool_face_m4": (4, (120, 160), 8, 4, 16, 0),
}
TARGETS = {"cpu": {"forward": 10.0, "forward_backward": 5.0}, "cuda": {"forward": 10.0, "forward_backward": 5.0}}


class Eager(torch.nn.Module):
    """The layer with the fused kernel switched off (its PyTorch path)."""

    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with use_fused(False):
            return self.layer(x)


class GRUSteps(torch.nn.Module):
    """``nn.GRU`` doing the recurrences of ``layer`` on an input of ``shape`` (N, C, H, W): RNN1 (C -> h1) over the
    patches' rows (c steps) and columns (r steps), each line once as RNNPool sweeps it, and RNN2 (h1 -> h2) both
    ways over the r row and c column summaries of every patch. Its inputs are made here, outside the timing; the
    input it is called with is ignored."""

    def __init__(self, layer: RNNPool2d, shape) -> None:
        super().__init__()
        n, channels, height, width = shape
        (r, c), (sr, sc), (pr, pc) = layer.patch_size, layer.stride, layer.padding
        out_h, out_w = rnnpool_output_size(height, r, sr, pr), rnnpool_output_size(width, c, sc, pc)
        lines_h = (out_h - 1) * sr + r if sr <= r else out_h * r  # the image rows / columns patches use
        lines_w = (out_w - 1) * sc + c if sc <= c else out_w * c
        device = layer.rnn1.u1.device
        self.rnn1 = torch.nn.GRU(channels, layer.hidden_row).to(device)
        self.rnn2 = torch.nn.GRU(layer.hidden_row, layer.hidden_summary, bidirectional=True).to(device)
        self.inputs1 = [torch.randn(c, n * lines_h * out_w, channels, device=device),
                        torch.randn(r, n * out_h * lines_w, channels, device=device)]
        self.inputs2 = [torch.randn(steps, n * out_h * out_w, layer.hidden_row, device=device) for steps in (r, c)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        finals = [self.rnn1(seq)[1] for seq in self.inputs1] + [self.rnn2(seq)[1] for seq in self.inputs2]
        return torch.cat([f.reshape(-1) for f in finals])


SAMPLE_SECONDS = 0.05  # one timing sample runs a call repeatedly for at least this long (see _timed)


def _timed(fn: Callable[[], object], device: str, calls: int = 1) -> float:
    """Seconds per call of ``fn``, averaged over ``calls`` back-to-back calls."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls


def _calls_per_sample(fn: Callable[[], object], device: str) -> int:
    """Calls per timing sample: enough to last SAMPLE_SECONDS (a single call of a 1 ms layer on a shared machine is
    mostly scheduling noise), at least one. Every implementation is timed the same way."""
    return max(1, int(SAMPLE_SECONDS / max(_timed(fn, device), 1e-6)))


def bench_config(config: str, device: str, repeats: int, batch: int, backward: bool, compiled: bool = True,
                 gru: bool = False) -> Dict[str, dict]:
    """The implementations on one config at one batch: best time and peak memory, forward (and forward+backward)."""
    channels, (h, w), patch, stride, hidden, padding = CONFIGS[config]
    torch.manual_seed(0)
    layer = RNNPool2d(channels, patch, stride, hidden, hidden, padding=padding).to(device)
    impls = {"baseline": UnfoldLoopRNNPool(layer), "eager": Eager(layer)}
    if (device == "cpu" and fused_available()) or (device.startswith("cuda") and triton_available()):
        impls["fused"] = layer
    if compiled:
        impls["compiled"] = Eager(compile_recurrence(copy.deepcopy(layer)))
    x = torch.randn(batch, channels, h, w, device=device)
    if gru:
        impls["gru"] = GRUSteps(layer, x.shape)
    with torch.no_grad():
        reference = impls["baseline"](x)
        diffs = {name: (module(x) - reference).abs().max().item() if name != "gru" else None for name, module in impls.items()}

    def call(module: torch.nn.Module, mode: str) -> Callable[[], object]:
        if mode == "forward":
            return lambda: torch.no_grad()(module)(x)
        return lambda: module(x).sum().backward()

    results = {name: {"config": config, "impl": name, "device": device, "batch": batch, "max_abs_diff": diffs[name]}
               for name in impls}
    for mode in ("forward", "forward_backward") if backward else ("forward",):
        times = {name: [] for name in impls}
        for name, module in impls.items():
            call(module, mode)()  # warm-up
        calls = {name: _calls_per_sample(call(module, mode), device) for name, module in impls.items()}
        for _ in range(repeats):
            for name, module in impls.items():
                times[name].append(_timed(call(module, mode), device, calls[name]))
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
    channels, (h, w), patch, stride, hidden, padding = CONFIGS[SCALING_CONFIG]
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
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--no-compile", dest="compiled", action="store_false", help="skip the compiled variant")
    parser.add_argument("--gru", action="store_true", help="also time nn.GRU doing the same recurrences (always on a GPU)")
    parser.add_argument("--json", default="benchmarks/results/operator.json")
    args = parser.parse_args()

    gru = args.gru or args.device.startswith("cuda")
    rows = []
    summary: Dict[str, Dict[str, float]] = {}
    print(f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} repeats={args.repeats}")
    print(f"{'config':22s} {'batch':>5s} {'impl':9s} {'fwd ms':>9s} {'fwd img/s':>10s} {'fwd MiB':>8s} {'f+b ms':>9s} {'f+b MiB':>8s}")
    largest = max(args.batches)
    for config in args.configs:
        for batch in sorted(args.batches):
            results = bench_config(config, args.device, args.repeats, batch, batch == largest, args.compiled, gru)
            key = f"{config}@{batch}"
            summary[key] = {"config": config, "batch": batch,
                            "max_abs_diff": max(r["max_abs_diff"] for r in results.values() if r["max_abs_diff"] is not None)}
            for name, r in results.items():
                rows.append(r)
                print(f"{config:22s} {batch:5d} {name:9s} {r['forward_ms']:9.1f} {r['forward_images_per_s']:10.1f} "
                      f"{r['forward_peak_mib']:8.1f} {r.get('forward_backward_ms', float('nan')):9.1f} "
                      f"{r.get('forward_backward_peak_mib', float('nan')):8.1f}")
            base = results["baseline"]
            for name in [n for n in results if n != "baseline"]:
                r, s = results[name], summary[key]
                s[f"{name}_forward_speedup"] = base["forward_ms"] / r["forward_ms"]
                s[f"{name}_forward_memory_ratio"] = base["forward_peak_mib"] / max(r["forward_peak_mib"], 1e-9)
                line = f"{'':22s} {name}: forward {s[f'{name}_forward_speedup']:.1f}x"
                if "forward_backward_ms" in r:
                    s[f"{name}_forward_backward_speedup"] = base["forward_backward_ms"] / r["forward_backward_ms"]
                    s[f"{name}_forward_backward_memory_ratio"] = base["forward_backward_peak_mib"] / max(r["forward_backward_peak_mib"], 1e-9)
                    line += f", forward+backward {s[f'{name}_forward_backward_speedup']:.1f}x"
                print(line)
            if "gru" in results and "fused" in results:
                for mode in ("forward", "forward_backward"):
                    if f"{mode}_ms" in results["fused"]:
                        summary[key][f"fused_vs_gru_{mode}"] = results["gru"][f"{mode}_ms"] / results["fused"][f"{mode}_ms"]
    scaling = bench_batch_scaling(args.device, args.repeats)
    small, large = SCALING_BATCHES
    print(f"forward+backward {scaling['config']} (default path): batch {small} {scaling['forward_backward_ms'][str(small)]:.0f} ms, "
          f"batch {large} {scaling['forward_backward_ms'][str(large)]:.0f} ms; time per image x{scaling['per_image_growth']:.2f} "
          f"at batch {large}")
    targets = TARGETS["cuda" if args.device.startswith("cuda") else "cpu"]
    met: Dict[str, Dict[str, bool]] = {}
    for name in ("fused", "eager", "compiled"):
        for mode, target in targets.items():
            values = [s[f"{name}_{mode}_speedup"] for s in summary.values() if f"{name}_{mode}_speedup" in s]
            if values:
                met.setdefault(name, {})[mode] = min(values) >= target
                print(f"target: {name} {mode} >= {target:.0f}x the baseline everywhere: "
                      f"{'MET' if min(values) >= target else 'NOT MET'} (lowest {min(values):.1f}x)")
    versus = [s["fused_vs_gru_forward"] for s in summary.values() if "fused_vs_gru_forward" in s]
    if versus:
        met.setdefault("fused", {})["as_fast_as_gru"] = min(versus) >= 1.0
        print(f"target: fused forward at least as fast as nn.GRU doing the same steps everywhere: "
              f"{'MET' if min(versus) >= 1.0 else 'NOT MET'} (lowest {min(versus):.2f}x nn.GRU's speed)")
    write_json(args.json, {"device": args.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
                           "targets": targets, "target_met": met, "batches": sorted(args.batches), "runs": rows,
                           "summary": summary, "batch_scaling": scaling, "repeats": args.repeats, "sample_seconds": SAMPLE_SECONDS,
                           "run": run_info()})


if __name__ == "__main__":
    main()
