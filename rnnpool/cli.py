"""``rnnpool`` command line: a thin mapper onto the library.

Examples:
  rnnpool list
  rnnpool profile mobilenetv2_rnnpool --input 3x224x224 --compare mobilenetv2 --plot mem.png
  rnnpool profile torchvision:resnet18 --dtype int8 --convention tensor --json r18.json --csv r18.csv
  rnnpool profile --zoo [--markdown]
"""
from __future__ import annotations

import argparse
import difflib
import sys
from typing import List, Optional, Sequence

from torch import nn


def _parse_shape(text: str) -> List[int]:
    try:
        shape = [int(v) for v in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"input shape must look like 3x224x224, got {text!r}") from None
    if len(shape) not in (3, 4) or min(shape) <= 0:
        raise argparse.ArgumentTypeError(f"input shape must be CxHxW or NxCxHxW with positive sizes, got {text!r}")
    return shape


def build_model(name: str) -> nn.Module:
    """A zoo model by name, or ``torchvision:NAME`` for any torchvision classification model."""
    if name.startswith("torchvision:"):
        import torchvision

        tv_name = name.split(":", 1)[1]
        available = torchvision.models.list_models(module=torchvision.models)
        if tv_name not in available:
            close = difflib.get_close_matches(tv_name, available, n=1)
            raise SystemExit(f"error: unknown torchvision model {tv_name!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
        return torchvision.models.get_model(tv_name, weights=None)
    from .models import create_model

    try:
        return create_model(name)
    except KeyError as err:
        raise SystemExit(f"error: {err.args[0]}") from None


def _default_input(name: str) -> List[int]:
    from .models import list_models, model_info

    return list(model_info(name).input_shape) if name in list_models() else [3, 224, 224]


def cmd_list(args: argparse.Namespace) -> None:
    from .models import list_models, model_info

    for name in list_models(args.pattern):
        info = model_info(name)
        print(f"{name:26s} {info.task:15s} {'x'.join(map(str, info.input_shape)):10s} {info.description}")


def cmd_profile(args: argparse.Namespace) -> None:
    from .analysis import compare_table, profile_model
    from .analysis.plot import plot_memory
    from .analysis.zoo import zoo_markdown, zoo_rows

    if args.zoo:
        rows = zoo_rows()
        if args.markdown:
            print(zoo_markdown(rows))
        else:
            for row in rows:
                print("  ".join(f"{k}={v}" for k, v in row.items()))
        return
    if not args.model:
        raise SystemExit("error: give a MODEL (see 'rnnpool list') or --zoo")
    names = [args.model] + ([args.compare] if args.compare else [])
    profiles = []
    for name in names:
        shape = args.input or _default_input(name)
        profiles.append(profile_model(build_model(name), shape, args.dtype, args.convention, name=name))
    for p in profiles:
        print(p.table())
        print()
    if len(profiles) > 1:
        print(compare_table(profiles))
    if args.json:
        profiles[0].save_json(args.json)
    if args.csv:
        profiles[0].save_csv(args.csv)
    if args.plot:
        plot_memory(profiles, args.plot)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnpool", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="list the zoo's models")
    p.add_argument("pattern", nargs="?", default="*", help="glob, e.g. '*face*'")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("profile", help="peak RAM, MAdds and params per layer", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help="zoo name or torchvision:NAME")
    p.add_argument("--input", type=_parse_shape, help="CxHxW (default: the model's own)")
    p.add_argument("--dtype", choices=["fp32", "fp16", "int8"], default="fp32")
    p.add_argument("--convention", choices=["layer", "tensor"], default="layer")
    p.add_argument("--compare", metavar="OTHER", help="a second model to put side by side")
    p.add_argument("--plot", metavar="PNG")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--csv", metavar="PATH")
    p.add_argument("--zoo", action="store_true", help="every zoo model: params, MAdds, peak RAM (both conventions, fp32/int8)")
    p.add_argument("--markdown", action="store_true", help="with --zoo: a Markdown table")
    p.set_defaults(func=cmd_profile)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = make_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main(sys.argv[1:])
