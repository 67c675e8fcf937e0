"""rnnpool fit on torchvision's mobile CNNs and ResNet18: does each fit the budget, and at what cost?

    python benchmarks/fit_models.py [--ram-kib 256] [--json benchmarks/results/fit_models.json]

For each model (3x224x224): the original's peak RAM ('layer' convention), MAdds and params, and the placement
``rnnpool fit`` picks with its default objective (the fewest layers replaced, then the widest RNNPool, then
the fewest MAdds, among the candidates under the budget), or why it could not be fitted. MobileNetV2 is also
fitted as the issue's acceptance asks (fp32, 0.25 MiB: the paper's MobileNetV2-RNNPool), and with a last-layer
RNNPool. The fitted models are untrained: this is about RAM and compute, not accuracy.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import run_info, write_json  # noqa: E402

from rnnpool.errors import RnnpoolError  # noqa: E402
from rnnpool.fit import describe, fit_model  # noqa: E402
from rnnpool.models import create_model  # noqa: E402

RUNS = [("torchvision:mobilenet_v2", "fp32", 2**18, False), ("torchvision:mobilenet_v2", "int8", None, False),
        ("torchvision:mobilenet_v2", "int8", None, True), ("torchvision:mobilenet_v3_small", "int8", None, False),
        ("torchvision:mnasnet0_5", "int8", None, False), ("torchvision:efficientnet_b0", "int8", None, False),
        ("torchvision:resnet18", "int8", None, False)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ram-kib", type=int, default=256, help="the budget of the int8 runs")
    parser.add_argument("--json", default=str(Path(__file__).resolve().parent / "results" / "fit_models.json"))
    args = parser.parse_args()
    rows = []
    for name, dtype, ram, last_pool in RUNS:
        ram = ram or args.ram_kib * 1024
        row = {"model": name, "dtype": dtype, "ram_bytes": ram, "last_pool": last_pool}
        try:
            _, report = fit_model(create_model(name), (3, 224, 224), ram, dtype, name=name, last_pool=last_pool)
        except RnnpoolError as err:
            row["error"] = str(err)
            print(f"{name}: {err}")
        else:
            print(report.table(), end="\n\n")
            chosen = report.candidates[report.chosen] if report.chosen is not None else None
            row.update({"original": report.original, "candidates": len(report.candidates), "objective": report.objective,
                        "chosen": report.to_dict()["candidates"][report.chosen] if chosen else None,
                        "rnnpool": describe(chosen) if chosen else None})
        rows.append(row)
    write_json(args.json, {"run": run_info(), "input": [3, 224, 224], "results": rows})


if __name__ == "__main__":
    main()
