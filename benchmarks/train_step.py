"""Training step time of the RNNPool models against their baselines: one SGD step, batch 8 and 32, at 224x224.

    python benchmarks/train_step.py [--device cpu|cuda] [--batches 8 32] [--repeats 5] [--json PATH]

MCUNetV2 reports MobileNetV2-RNNPool training 3.2x slower than MobileNetV2 on a GPU (the sequential
recurrence). Here each step is forward, cross-entropy, backward and an SGD (momentum 0.9) update on random
images and labels (10 classes, ImageNet-10), the models interleaved within each repeat so all see the same
machine load; the table keeps the median and the best of ``--repeats`` steps after two warm-up steps, and
the ratio RNNPool / baseline of the medians. Target (issue 13): the ratio <= 1.3 on a GPU, and below 1 on a
CPU, where the RNNPool layer is cheaper than the blocks it replaces. Writes
benchmarks/results/train_step_<device type>.json.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import run_info, write_json  # noqa: E402

from rnnpool.models import create_model  # noqa: E402

PAIRS = [("mobilenetv2", "mobilenetv2_rnnpool"), ("mobilenetv2_035", "mobilenetv2_035_rnnpool")]


def make_step(name: str, batch: int, size: int, device: torch.device) -> Callable[[], None]:
    """A closure doing one SGD step of ``name`` on a fixed random batch."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, input_size=size).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(batch, 3, size, size, device=device)
    labels = torch.randint(0, 10, (batch,), device=device)
    criterion = nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        criterion(model(images), labels).backward()
        optimizer.step()

    return step


def timed(step: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", nargs="+", type=int, default=[8, 32])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="default: benchmarks/results/train_step_<device type>.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows: List[Dict] = []
    for batch in args.batches:
        for baseline, rnnpool in PAIRS:
            steps = {name: make_step(name, batch, args.size, device) for name in (baseline, rnnpool)}
            for step in steps.values():  # warm-up: allocator, cuDNN's choices, first-touch of the weights
                step()
                step()
            times: Dict[str, List[float]] = {name: [] for name in steps}
            for _ in range(args.repeats):
                for name, step in steps.items():
                    times[name].append(timed(step, device))
            med = {name: statistics.median(t) for name, t in times.items()}
            rows.append({"batch": batch, "baseline": baseline, "rnnpool": rnnpool, "baseline_ms": 1e3 * med[baseline],
                         "rnnpool_ms": 1e3 * med[rnnpool], "baseline_best_ms": 1e3 * min(times[baseline]),
                         "rnnpool_best_ms": 1e3 * min(times[rnnpool]), "ratio": med[rnnpool] / med[baseline]})
            r = rows[-1]
            print(f"batch {batch:3d}  {baseline:18s} {r['baseline_ms']:9.1f} ms   {rnnpool:26s} {r['rnnpool_ms']:9.1f} ms   "
                  f"ratio {r['ratio']:.2f}", flush=True)
            del steps
    name = "cpu" if device.type == "cpu" else device.type
    payload = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "threads": torch.get_num_threads(), "torch": torch.__version__, "size": args.size, "repeats": args.repeats,
               "run": run_info(), "results": rows}
    write_json(args.json or Path(__file__).resolve().parent / "results" / f"train_step_{name}.json", payload)


if __name__ == "__main__":
    main()
