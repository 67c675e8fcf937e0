"""The Triton forward kernel's launch settings on a GPU: sequences per program, warps and the tl.dot precision.

    python benchmarks/triton_variants.py [--json PATH]

Times rnnpool.nn.fused_triton's forward kernel alone (no autograd, states not saved) on RNN1's row grid of two
operator-benchmark configs at batch 8 (DenseNet121: 48 units padded to 64; Face-C: 16 units), for every BLOCK x
num_warps x precision, with triton.testing.do_bench (median), and the largest difference of each variant's final
states from the default's. What it is for: choosing fused_triton._config's settings from measurements.
"""
import argparse
import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import run_info, write_json  # noqa: E402

from rnnpool.nn import RNNPool2d, fused  # noqa: E402

# name: (input channels, (H, W), patch, stride, hidden, padding), as benchmarks/operator.py
CONFIGS = {"densenet121": (64, (112, 112), 8, 4, 48, 2), "rnnpool_face_c": (3, (480, 640), 8, 4, 16, 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--json", default="benchmarks/results/triton_variants.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("this benchmark times the Triton kernels on a CUDA GPU, and none is available here")
    import triton
    from triton.testing import do_bench

    from rnnpool.nn import fused_triton

    rows = []
    for config, (channels, (h, w), patch, stride, hidden, padding) in CONFIGS.items():
        torch.manual_seed(0)
        layer = RNNPool2d(channels, patch, stride, hidden, hidden, padding=padding).cuda()
        x = torch.randn(args.batch, channels, h, w, device="cuda")
        with torch.no_grad():
            out_h, out_w = layer(x).shape[2:]
            row_grid = layer._grids(layer._project(x, padding, padding), out_h, out_w)[0]
            base, geometry = fused._grid_view(row_grid)
            constants = fused._inference_constants(layer.rnn1, "triton")
        steps, n, lines, m, units = geometry[0]
        sequences = n * lines * m
        padded, default_block, use_dot = fused_triton._config(units, torch.float32)

        def launch(block: int, warps: int, precision: str, out: torch.Tensor) -> None:
            fused_triton._forward_kernel[(triton.cdiv(sequences, block), 1)](
                *fused_triton._launch_args(base, geometry), *constants, out, sequences * units, lines * m * units,
                m * units, units, 1, out, GATE=0, UPDATE=1, HP=padded, BLOCK=block, SAVE=False, USE_DOT=use_dot,
                PRECISION=precision, num_warps=warps)

        default = (default_block, 4, "ieee")
        reference = torch.full((sequences, units), float("nan"), device="cuda")
        launch(*default, reference)
        for variant in itertools.product((16, 32, 64, 128), (2, 4, 8), ("ieee", "tf32x3")):
            if not use_dot and variant[2] != "ieee":
                continue
            out = torch.full((sequences, units), float("nan"), device="cuda")
            try:
                launch(*variant, out)
                torch.cuda.synchronize()
                ms = do_bench(lambda: launch(*variant, out), warmup=10, rep=40, return_mode="median")
            except Exception as err:  # a variant Triton cannot compile (registers, shared memory): say so, go on
                print(f"{config:16s} {variant} failed: {str(err)[:120]}")
                continue
            row = {"config": config, "units": units, "sequences": sequences, "steps": steps, "block": variant[0],
                   "num_warps": variant[1], "precision": variant[2], "kernel_us": ms * 1e3, "default": variant == default,
                   "max_abs_diff": (out - reference).abs().max().item(), "finite": bool(out.isfinite().all())}
            rows.append(row)
            print(f"{config:16s} block {variant[0]:3d} warps {variant[1]} {variant[2]:7s} {row['kernel_us']:8.1f} us "
                  f"diff {row['max_abs_diff']:.1e}{'  (default)' if row['default'] else ''}")
    write_json(args.json, {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                           "triton": triton.__version__, "batch": args.batch, "runs": rows, "run": run_info()})


if __name__ == "__main__":
    main()
