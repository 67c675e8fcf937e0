"""``rnnpool`` command line: a thin mapper onto the library.

Examples:
  rnnpool list
  rnnpool profile mobilenetv2_rnnpool --input 3x224x224 --compare mobilenetv2 --plot mem.png
  rnnpool profile torchvision:resnet18 --dtype int8 --convention tensor --json r18.json --csv r18.csv
  rnnpool profile --zoo [--markdown]
  rnnpool train classify --model mobilenetv2_rnnpool --data DATA --input-size 224 --epochs 300
  torchrun --nproc_per_node 4 -m rnnpool.cli train classify --model mobilenetv2_rnnpool --data DATA
  rnnpool eval classify --model mobilenetv2_rnnpool --weights runs/classify/exp/weights/best.pt --data DATA
  rnnpool train detect --model rnnpool_face_c --train wider_face_train_bbx_gt.txt --val wider_face_val_bbx_gt.txt
  rnnpool eval detect --model rnnpool_face_c --weights best.pt --val wider_face_val_bbx_gt.txt --gt-dir eval_tools/ground_truth
  rnnpool detect photo.jpg --model rnnpool_face_c --weights best.pt -o out.png
  rnnpool export c rnnpool_face_quant --weights best.pt --calib images/ -o out/ --target cortex-m4 --run photo.jpg
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

from .errors import InvalidInputError, RnnpoolError

def _parse_shape(text: str) -> List[int]:
    try:
        shape = [int(v) for v in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"input shape must look like 3x224x224, got {text!r}") from None
    if len(shape) not in (3, 4) or min(shape) <= 0:
        raise argparse.ArgumentTypeError(f"input shape must be CxHxW or NxCxHxW with positive sizes, got {text!r}")
    return shape


def _default_input(name: str) -> List[int]:
    from .models import is_fitted_file, list_models, model_info

    if is_fitted_file(name):  # a model saved by rnnpool fit: the input it was fitted at
        from .models.checkpoint import fitted_input_shape

        return list(fitted_input_shape(name) or (3, 224, 224))
    return list(model_info(name).input_shape) if name in list_models() else [3, 224, 224]


def _parse_bytes(text: str) -> int:
    """'256KiB', '0.25MiB', '262144' (bytes) -> bytes."""
    units = {"kib": 2**10, "mib": 2**20, "kb": 10**3, "mb": 10**6, "b": 1}
    lowered = text.strip().lower()
    for unit, factor in units.items():
        if lowered.endswith(unit):
            number, scale = lowered[: -len(unit)], factor
            break
    else:
        number, scale = lowered, 1
    try:
        value = float(number) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"RAM must look like 256KiB, 0.25MiB or 262144, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"RAM must be positive, got {text!r}")
    return int(value)


def cmd_fit(args: argparse.Namespace) -> None:
    from .fit import fit_model, save_fitted
    from .models import create_model

    shape = args.input or _default_input(args.model)
    model = create_model(args.model)
    fitted, report = fit_model(model, shape[-3:], args.ram, args.dtype, args.convention, args.objective, name=args.model,
                               downsampling=args.downsampling, last_pool=args.last_pool)
    out = _human_output(args)
    print(report.table(), file=out)
    if args.json:
        _write_json(report.to_dict(), args.json, out)
    if args.plot:
        from .fit.plot import plot_fit

        plot_fit(report, args.plot)
        print(f"wrote {args.plot} (peak RAM against MAdds of every candidate, the budget and the pick)", file=out)
    if args.save:
        if fitted is None:
            raise InvalidInputError(f"nothing to save: no candidate fits {args.ram:,} B (see the table)")
        save_fitted(fitted, report, args.save)
        print(f"wrote {args.save} (the fitted model; its RNNPool is untrained: 'rnnpool profile {args.save}' takes it)", file=out)


def cmd_list(args: argparse.Namespace) -> None:
    from .models import list_models, model_info

    for name in list_models(args.pattern):
        info = model_info(name)
        print(f"{name:26s} {info.task:15s} {'x'.join(map(str, info.input_shape)):10s} {info.description}")


def _write_json(data: Any, path: str, say_to=None) -> None:
    """``data`` as JSON to the file ``path`` (saying so on ``say_to`` if given), or to standard output for ``-``."""
    text = json.dumps(data, indent=2)
    if path == "-":
        print(text)
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
        if say_to is not None:
            print(f"wrote {path}", file=say_to)


def _human_output(args: argparse.Namespace):
    """Where the readable report goes: standard error when ``--json -`` takes standard output, so that stays
    valid JSON."""
    return sys.stderr if getattr(args, "json", None) == "-" else sys.stdout


def cmd_profile(args: argparse.Namespace) -> None:
    from .analysis import compare_table, profile_model
    from .analysis.plot import plot_memory
    from .analysis.zoo import zoo_markdown, zoo_rows
    from .models import create_model

    if args.zoo:  # a minute or two: say which model is being profiled (on stderr, the table stays clean)
        rows = zoo_rows(lambda i, n, name: print(f"[{i + 1}/{n}] {name}", file=sys.stderr, flush=True))
        if args.markdown:
            print(zoo_markdown(rows))
        else:
            for row in rows:
                print("  ".join(f"{k}={v}" for k, v in row.items()))
        return
    if not args.model:
        raise InvalidInputError("give a MODEL (see 'rnnpool list') or --zoo")
    names = [args.model] + ([args.compare] if args.compare else [])
    profiles = []
    for name in names:
        shape = args.input or _default_input(name)
        dtype = args.dtype or ("int8" if args.convention == "stream" else "fp32")
        if args.convention == "stream" and dtype == "int8":
            from .deploy.stream_profile import stream_profile

            profiles.append(stream_profile(create_model(name), shape, name, ram_bytes=args.ram_kib * 1024))
        else:
            profiles.append(profile_model(create_model(name), shape, dtype, args.convention, name=name))
    out = _human_output(args)
    for p in profiles:
        print(p.table(), file=out)
        print(file=out)
    if len(profiles) > 1:
        print(compare_table(profiles), file=out)
    if args.json:  # the model's profile; with --compare, the other one under "compare"
        extra = {"compare": profiles[1].to_dict()} if len(profiles) > 1 else {}
        _write_json({**profiles[0].to_dict(), **extra}, args.json, out)
    if args.csv:
        profiles[0].save_csv(args.csv)
        print(f"wrote {args.csv}", file=out)
    if args.plot:
        plot_memory(profiles, args.plot)
        print(f"wrote {args.plot} (held RAM per layer" + (", models overlaid" if len(profiles) > 1 else "")
              + ", peak marked)", file=out)


def _config(cls, args: argparse.Namespace):
    """A run config (dataclass ``cls``) from the parsed options of the same names; the rest keep defaults."""
    return cls(**{f: getattr(args, f) for f in cls.__dataclass_fields__ if hasattr(args, f)})


def _model_kwargs(args: argparse.Namespace) -> Optional[dict]:
    """The --model-arg options as a dict, None when there are none."""
    return dict(args.model_arg) if args.model_arg else None


def cmd_train_classify(args: argparse.Namespace) -> None:
    from .engine import ClassifyConfig, train_classifier

    args.model_kwargs = _model_kwargs(args) or {}
    train_classifier(_config(ClassifyConfig, args))


def cmd_eval_classify(args: argparse.Namespace) -> None:
    from .engine import evaluate_checkpoint

    result = evaluate_checkpoint(args.model, args.weights, args.data, args.layout, args.input_size, args.batch_size,
                                 args.workers, args.device, args.skip_bad, _model_kwargs(args))
    print(f"{result['model']} at {result['input_size']}x{result['input_size']}: top-1 {result['top1']:.4f} on "
          f"{result['samples']} images (loss {result['loss']:.4f})")
    for name, acc in zip(result["classes"], result["per_class"]):
        print(f"  {name:20s} {acc:.4f}")


def _model_arg(text: str) -> Tuple[str, Any]:
    """KEY=VALUE, the value read as YAML: downsample=avg, width_mult=0.5, block_config=[12,8]."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"model arguments look like KEY=VALUE (e.g. downsample=avg), got {text!r}")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"cannot read the value of {text!r}") from None


def _scales(text: str) -> List[float]:
    try:
        scales = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"scales must be comma-separated numbers like 0.5,1,1.5, got {text!r}") from None
    if not scales or min(scales) <= 0:
        raise argparse.ArgumentTypeError(f"scales must be positive, got {text!r}")
    return scales


def _grad_clip(text: str) -> Optional[float]:
    """A gradient-norm bound from the command line: a positive number, or 0 for no clipping (None)."""
    try:
        norm = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"the gradient norm must be a number (0: no clipping), got {text!r}") from None
    if not norm >= 0:
        raise argparse.ArgumentTypeError(f"the gradient norm must be positive (0: no clipping), got {text!r}")
    return norm or None


def _size_bins(text: str) -> List[float]:
    from .metrics.widerface import parse_size_bins

    try:
        return parse_size_bins(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def cmd_train_detect(args: argparse.Namespace) -> None:
    from .engine import DetectConfig, train_detector

    train_detector(_config(DetectConfig, args))


def cmd_eval_detect(args: argparse.Namespace) -> None:
    from .engine import build_detector, evaluate_detector

    model = build_detector(args.model, args.weights, args.device)
    result = evaluate_detector(model, args.val, args.image_root, args.eval_scales, args.gt_dir, args.skip_bad, args.plot,
                               args.size_bins)
    flat = {**{k: v for k, v in result.items() if not isinstance(v, dict)},
            **{f"ap_{s}": v for s, v in result.get("ap_by_size", {}).items()},
            **{f"faces_{s}": v for s, v in result.get("faces_by_size", {}).items()}}
    print("  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in flat.items()))


def cmd_detect(args: argparse.Namespace) -> None:
    from .engine import build_detector, detect_image

    model = build_detector(args.model, args.weights, args.device)
    faces = detect_image(model, args.image, args.output, args.scales, args.threshold)
    print(json.dumps({"image": args.image, "faces": faces}))


def cmd_export_c(args: argparse.Namespace) -> None:
    from .deploy.export import export_c, image_files
    from .deploy.int8_reference import DetectionSettings

    if args.weights:  # the checkpoint names its model: check a given one, or take it
        from .models.checkpoint import checkpoint_model

        args.model = checkpoint_model(args.weights, args.model)
    elif not args.model:
        raise InvalidInputError("give a MODEL (see 'rnnpool list'), or --weights of a training run")
    settings = DetectionSettings(score_threshold=args.threshold)
    input_size = _export_input_size(args.model, args.input, args.input_size)
    check = []
    if args.check:
        if args.check_limit < 1:
            raise InvalidInputError(f"--check-limit must be at least 1, got {args.check_limit}")
        check = image_files(args.check, args.check_limit, "--check")
    report = export_c(args.model, args.output, args.weights, args.calib, args.target, args.run, args.ram_kib * 1024, settings,
                      input_size, args.seed, not args.no_row_cache, calibration=args.calibration, percentile=args.percentile,
                      equalize=args.equalize, check=check)
    if args.json:
        _write_json(report, args.json)
    print(format_export(report), file=_human_output(args))
    if report.get("bit_exact") is False:
        where = report.get("first_differing_map")
        raise SystemExit("error: the C program's output differs from the int8 reference: " + "; ".join(report["mismatches"][:3])
                         + (f" (first differing map: {where})" if where else ""))
    checked = report.get("checked")
    if checked and checked["bit_exact"] < checked["images"]:
        first = next(r for r in checked["runs"] if not r["bit_exact"])
        raise SystemExit(f"error: the C program's output differs from the int8 reference on {checked['images'] - checked['bit_exact']} "
                         f"of {checked['images']} --check images, first {first['image']}: " + "; ".join(first["mismatches"]))


def _export_input_size(model: str, shape: Optional[List[int]], size: Optional[int]) -> Optional[int]:
    """The classifier input side from --input CxHxW (or --input-size); a detector's input is fixed."""
    if shape is None:
        return size
    from .models import is_zoo_name, model_info

    info = model_info(model) if is_zoo_name(model) else None  # (outside the zoo: a classifier)
    shape = shape[1:] if len(shape) == 4 and shape[0] == 1 else shape
    if len(shape) != 3:
        raise InvalidInputError(f"--input must be CxHxW (one image), got {'x'.join(map(str, shape))}")
    if info is not None and info.task == "detection":
        if tuple(shape) != tuple(info.input_shape):
            raise InvalidInputError(f"{model}'s input is fixed at {'x'.join(map(str, info.input_shape))}, got --input {'x'.join(map(str, shape))}")
        return None
    if shape[0] != 3 or shape[1] != shape[2]:
        raise InvalidInputError(f"{model} takes square RGB inputs (3xNxN), got --input {'x'.join(map(str, shape))}")
    if size is not None and size != shape[1]:
        raise InvalidInputError(f"--input {'x'.join(map(str, shape))} and --input-size {size} disagree")
    return shape[1]


def format_export(report: dict) -> str:
    """The export report's main numbers as a few lines."""
    s = report["schedule"]
    cal = report["calibration"]
    method = {"percentile": f"{cal.get('percentile')}th percentiles", "mse": "least squared error"}.get(cal.get("method"), "min/max")
    if cal.get("equalized"):
        method += f"; RNNPool outputs equalized: {', '.join(cal['equalized'])}"
    calibrated = ("with the activation ranges its quantization-aware fine-tuning kept" if cal.get("method") == "qat"
                  else f"calibrated ({method}) on {cal['images']} images of {cal['source']}")
    lines = [f"{report['model']} ({report['weights']}), {calibrated}",
             f"arena {s['arena_bytes']:,} B (layer by layer it would be {s['layer_by_layer_bytes']:,} B); largest: "
             + ", ".join(f"{b['name']} {b['bytes']:,} B" for b in s["largest_buffers"][:3])]
    if s.get("choices"):
        lines.append("planner (to fit the RAM): " + "; ".join(s["choices"]))
    lines.append(f"predicted RAM on the M4 (profile --convention stream): {report['predicted_ram']['total']:,} B")
    m4 = report.get("cortex_m4")
    if m4:
        lines.append(f"Cortex-M4: RAM {m4['ram_bytes']:,} B = static {m4['static_ram_bytes']:,} + stack {m4['stack_high_water_bytes']:,} "
                     f"+ exception frame {m4['exception_frame_bytes']}; flash {m4['flash_bytes']:,} B; {m4['instructions'] / 1e6:.1f} M "
                     f"instructions ({m4['seconds_at_168mhz_lower_bound']:.2f} s at 168 MHz, a lower bound)")
        lines.append(f"claimed RAM under interrupts every {m4['claimed_ram_run']['systick_every_ticks']} ticks: "
                     f"{'same output' if m4['claimed_ram_run']['same_output'] else 'DIFFERENT OUTPUT'}; "
                     f"with 64 B less: {m4['claimed_minus_64']}")
    stm = report.get("stm32f439")
    if stm:
        lines.append(f"STM32F439: {stm['elf']} and {stm['bin']} ({stm['bin_bytes']:,} B); SRAM {stm['sram_bytes']:,} B, "
                     f"CCM {stm['ccm_bytes']:,} B, flash {stm['flash_bytes']:,} B")
    if "logits" in report:
        lines.append(f"class scores (int8 logits): {report['logits']}")
    elif "detections" in report:
        lines.append(f"{len(report['detections'])} detections ({report['detections_in']})")
    if "bit_exact" in report:
        lines.append(f"bit-exact with the int8 reference: {report['bit_exact']}")
    checked = report.get("checked")
    if checked:
        from .deploy.export import instruction_spread

        counts = [r["instructions"] for r in checked["runs"] if "instructions" in r]
        spread = f"; {instruction_spread(counts)}" if counts else ""
        lines.append(f"checked on {checked['images']} images ({checked['on']}): {checked['bit_exact']} bit-exact{spread}")
    return "\n".join(lines)


def _config_defaults(config: str) -> dict:
    """The default of every field of the run settings class ``config`` of :mod:`rnnpool.engine.config`
    (dataclasses only: no torch while the parser is built)."""
    from .engine import config as configs

    return {name: f.default for name, f in getattr(configs, config).__dataclass_fields__.items()}


def _data_arguments(p: argparse.ArgumentParser, evaluating: bool = False) -> None:
    """The data and model options of ``train classify`` and ``eval classify``, defaulting to ClassifyConfig's
    values; when evaluating, the model and input size default to the checkpoint's."""
    default = _config_defaults("ClassifyConfig")
    if evaluating:
        p.add_argument("--model", help="zoo classifier name (default: the one --weights was trained as)")
    else:
        p.add_argument("--model", required=True, help="zoo classifier name (see 'rnnpool list'), torchvision:NAME, or a "
                                                       "model saved by 'rnnpool fit --save' (.pt)")
    p.add_argument("--data", required=True, help="folder with train/ and val/ (or test/) subfolders")
    p.add_argument("--layout", choices=["imagefolder", "vww"], default=default["layout"],
                   help="one folder per class, or Visual Wake Words person/ + no_person/")
    p.add_argument("--input-size", dest="input_size", type=int, default=None if evaluating else default["input_size"],
                   help="square input side" + (" (default: the one --weights was trained at, else the model's)" if evaluating
                                               else f" (default {default['input_size']})"))
    p.add_argument("--batch-size", dest="batch_size", type=int, default=default["batch_size"], help="per process")
    p.add_argument("--workers", type=int, default=default["workers"])
    p.add_argument("--device", default=default["device"])
    p.add_argument("--skip-bad", dest="skip_bad", action="store_true", help="skip unreadable images and count them")
    p.add_argument("--model-arg", dest="model_arg", type=_model_arg, action="append", metavar="KEY=VALUE",
                   help="model option, repeatable: downsample=avg|max|strided_conv|renet, last_pool=rnnpool, width_mult=0.5, "
                        "intermediate_pool=rnnpool, block_config=[12,8] (eval: default from the checkpoint)")


def _run_arguments(p: argparse.ArgumentParser, config: str) -> None:
    """Options every training run has (:class:`rnnpool.engine.TrainConfig`), defaulting to ``config``'s values."""
    default = _config_defaults(config)
    p.add_argument("--epochs", type=int, default=default["epochs"])
    p.add_argument("--lr", type=float, default=default["lr"])
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default=default["optimizer"])
    p.add_argument("--momentum", type=float, default=default["momentum"], help="SGD momentum")
    p.add_argument("--weight-decay", dest="weight_decay", type=float, default=default["weight_decay"])
    p.add_argument("--schedule", choices=["cosine", "step"], default=default["schedule"])
    p.add_argument("--step-size", dest="step_size", type=int, default=default["step_size"], help="epochs per 10x decay (step schedule)")
    p.add_argument("--warmup-epochs", dest="warmup_epochs", type=int, default=default["warmup_epochs"])
    p.add_argument("--no-amp", dest="amp", action="store_false", help="no mixed precision on CUDA")
    p.add_argument("--seed", type=int, default=default["seed"])
    p.add_argument("--deterministic", action="store_true", help="deterministic CUDA kernels (bit-exact GPU reruns/resumes)")
    p.add_argument("--project", default=default["project"])
    p.add_argument("--name", default=default["name"])
    p.add_argument("--exist-ok", dest="exist_ok", action="store_true")
    p.add_argument("--resume", metavar="CKPT", help="continue from a run's weights/last.pt")
    p.add_argument("--weights", metavar="CKPT", help="start from these trained weights (a checkpoint of this model)")
    p.add_argument("--qat", action="store_true",
                   help="quantization-aware fine-tuning of --weights: train and validate the int8 program's arithmetic; "
                        "its checkpoints keep the activation ranges, which 'rnnpool export c' then uses")
    p.add_argument("--qat-calibration", dest="qat_calibration", type=int, default=default["qat_calibration"], metavar="N",
                   help="training images that fix a QAT run's activation ranges")
    p.add_argument("--max-steps", dest="max_steps", type=int, default=0, help="cap on steps per epoch (0: all)")
    p.add_argument("--stop-epoch", dest="stop_epoch", type=int, default=0,
                   help="stop after this epoch, to --resume later (the schedule still spans --epochs)")
    p.add_argument("--time-limit", dest="time_limit", type=float, default=0.0, metavar="MIN",
                   help="stop after the last epoch that fits in MIN minutes of wall time (the schedule still spans --epochs)")


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Every option's default after its help text, in this parser and its subcommands (where it has one: not
    for flags or options without a value, nor where the help already says it)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _show_defaults(child)
        elif action.option_strings and action.nargs != 0 and action.default not in (None, argparse.SUPPRESS) \
                and "default" not in (action.help or ""):
            action.help = (f"{action.help} " if action.help else "") + "(default: %(default)s)"


def _command(sub, name: str, help: str, description: Optional[str] = None) -> argparse.ArgumentParser:
    """A subcommand whose --help starts with its own description (its one-line help unless given)."""
    return sub.add_parser(name, help=help, description=description or f"{help[0].upper()}{help[1:]}.",
                          formatter_class=argparse.RawDescriptionHelpFormatter)


PROFILE_EXAMPLES = """Peak RAM, MAdds and params per layer of a zoo model or torchvision:NAME.

Examples:
  rnnpool profile mobilenetv2_rnnpool --input 3x224x224 --compare mobilenetv2 --plot mem.png
  rnnpool profile torchvision:resnet18 --dtype int8 --convention tensor --json r18.json --csv r18.csv
  rnnpool profile rnnpool_face_quant --convention stream --ram-kib 128
  rnnpool profile --zoo --markdown"""


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnpool", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = _command(sub, "list", "list the zoo's models")
    p.add_argument("pattern", nargs="?", default="*", help="glob, e.g. '*face*'")
    p.set_defaults(func=cmd_list)
    p = _command(sub, "profile", "peak RAM, MAdds and params per layer", PROFILE_EXAMPLES)
    p.add_argument("model", nargs="?", help="zoo name or torchvision:NAME")
    p.add_argument("--input", type=_parse_shape, help="CxHxW (default: the model's own)")
    p.add_argument("--dtype", choices=["fp32", "fp16", "int8"], help="activation type (default fp32; int8 for stream)")
    p.add_argument("--convention", choices=["layer", "tensor", "stream"], default="layer",
                   help="layer: the paper's; tensor: TFLM/MCUNet; stream: the deployed int8 program's RAM on the M4")
    p.add_argument("--ram-kib", dest="ram_kib", type=int, default=256,
                   help="stream: the M4's RAM the program must fit (the planner trades work for RAM to fit it)")
    p.add_argument("--compare", metavar="OTHER", help="a second model to put side by side")
    p.add_argument("--plot", metavar="PNG")
    p.add_argument("--json", metavar="PATH", help="the profile as JSON ('-': standard output, the table then goes to stderr)")
    p.add_argument("--csv", metavar="PATH")
    p.add_argument("--zoo", action="store_true", help="every zoo model: params, MAdds, peak RAM (both conventions, fp32/int8)")
    p.add_argument("--markdown", action="store_true", help="with --zoo: a Markdown table")
    p.set_defaults(func=cmd_profile)

    p = _command(sub, "fit", "make a model fit a RAM budget by placing RNNPool in its trunk")
    p.add_argument("model", help="zoo name, torchvision:NAME, package.module:factory (your own model) or a saved fitted .pt")
    p.add_argument("--ram", type=_parse_bytes, required=True, help="the budget, e.g. 256KiB or 0.25MiB")
    p.add_argument("--input", type=_parse_shape, help="CxHxW (default: the model's own, else 3x224x224)")
    p.add_argument("--dtype", choices=["fp32", "fp16", "int8"], default="int8")
    p.add_argument("--convention", choices=["layer", "tensor", "stream"], default="layer",
                   help="layer: the paper's; tensor: TFLM/MCUNet; stream: the int8 C program's RAM (models export c takes)")
    p.add_argument("--objective", choices=["least-replaced", "madds", "params"], default="least-replaced",
                   help="how to pick among the candidates that fit: keep the most of the original (the fewest layers "
                        "replaced, then the widest RNNPool, then the fewest MAdds, preferring those with no more MAdds "
                        "than the original; the paper's placements), or the fewest MAdds or params (default: least-replaced)")
    p.add_argument("--last-pool", action="store_true",
                   help="also replace the final global pooling with a last-layer RNNPool (h1 = h2 = channels / 4)")
    p.add_argument("--downsampling", type=int, nargs="+", choices=[4, 8], default=[4, 8],
                   help="RNNPool strides to try (the paper's models use 4)")
    p.add_argument("--save", metavar="PT", help="write the fitted model (architecture + weights)")
    p.add_argument("--json", metavar="PATH", help="the report as JSON ('-': standard output)")
    p.add_argument("--plot", metavar="PNG", help="peak RAM against MAdds of every candidate, the budget and the pick")
    p.set_defaults(func=cmd_fit)

    train = _command(sub, "train", "train a model").add_subparsers(dest="task", required=True)
    p = _command(train, "classify", "train a classifier (single process or under torchrun)")
    _data_arguments(p)
    _run_arguments(p, "ClassifyConfig")
    classify = _config_defaults("ClassifyConfig")
    p.add_argument("--label-smoothing", dest="label_smoothing", type=float, default=classify["label_smoothing"])
    p.add_argument("--rnn-clip", dest="rnn_clip", type=float, default=classify["rnn_clip"],
                   help="max grad norm of the RNNPool parameters")
    p.add_argument("--min-scale", dest="min_scale", type=float, default=classify["min_scale"],
                   help="random-resized-crop scale (VWW: 0.2)")
    p.add_argument("--data-on-device", dest="data_on_device", action="store_true",
                   help="decode every image once onto the device and crop / flip there (small datasets of one image size, "
                        "e.g. CIFAR-10 on a GPU, where the loader would be the bottleneck)")
    p.add_argument("--teacher", help="distil from this model (zoo name, torchvision:NAME or fitted .pt), e.g. the original "
                                     "of a fitted model")
    p.add_argument("--teacher-weights", dest="teacher_weights", metavar="CKPT", help="the teacher's trained weights")
    p.add_argument("--bn-momentum", dest="bn_momentum", type=float,
                   help="every BatchNorm's momentum (default: the model's own; torchvision's MobileNetV3 has 0.01, whose "
                        "running statistics lag a short run's weights)")
    p.add_argument("--distill-temperature", dest="distill_temperature", type=float, default=classify["distill_temperature"])
    p.add_argument("--distill-weight", dest="distill_weight", type=float, default=classify["distill_weight"],
                   help="share of the distillation term in the loss")
    p.set_defaults(func=cmd_train_classify)

    p = _command(train, "detect", "train a face detector (S3FD recipe; single process or under torchrun)")
    p.add_argument("--model", required=True, help="zoo face detector (see 'rnnpool list *face*')")
    p.add_argument("--train", required=True, help="annotations: WIDER FACE .txt, .json or .csv")
    p.add_argument("--val", help="validation annotations (AP every --eval-period epochs)")
    p.add_argument("--image-root", dest="image_root", help="folder the annotation paths are relative to")
    detect = _config_defaults("DetectConfig")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=detect["batch_size"], help="per process")
    p.add_argument("--input-size", dest="input_size", type=int, default=detect["input_size"], help="square training crops")
    p.add_argument("--workers", type=int, default=detect["workers"])
    p.add_argument("--device", default=detect["device"])
    p.add_argument("--skip-bad", dest="skip_bad", action="store_true", help="drop bad boxes/images and count them")
    _run_arguments(p, "DetectConfig")
    p.add_argument("--eval-period", dest="eval_period", type=int, default=detect["eval_period"])
    p.add_argument("--eval-scales", dest="eval_scales", type=_scales, default=[1.0], help="e.g. 0.5,1,1.5 (multi-scale test)")
    p.add_argument("--grad-clip", dest="grad_clip", type=_grad_clip, default=detect["grad_clip"], metavar="NORM",
                   help="clip the whole gradient to this norm (0: not clipped)")
    p.set_defaults(func=cmd_train_detect)

    evaluate = _command(sub, "eval", "evaluate a model").add_subparsers(dest="task", required=True)
    p = _command(evaluate, "classify", "top-1 and per-class accuracy on the val split")
    _data_arguments(p, evaluating=True)
    p.add_argument("--weights", help="checkpoint (weights/best.pt); none: the initial weights")
    p.set_defaults(func=cmd_eval_classify)
    p = _command(evaluate, "detect", "WIDER FACE AP (all, <= 3 faces; easy/medium/hard with --gt-dir)")
    p.add_argument("--model", help="zoo face model (default: the one --weights was trained as)")
    p.add_argument("--weights", help="checkpoint; none: the initial weights")
    p.add_argument("--val", required=True, help="annotations of the images to evaluate")
    p.add_argument("--image-root", dest="image_root")
    p.add_argument("--gt-dir", dest="gt_dir", help="official WIDER FACE ground truth (wider_*_val.mat)")
    p.add_argument("--eval-scales", dest="eval_scales", type=_scales, default=[1.0])
    p.add_argument("--plot", help="precision-recall PNG")
    p.add_argument("--size-bins", dest="size_bins", type=_size_bins, default=[], metavar="EDGES",
                   help="AP by face size too, sqrt(w*h) in pixels binned at these edges, e.g. 16,32,64")
    p.add_argument("--device", default="auto")
    p.add_argument("--skip-bad", dest="skip_bad", action="store_true")
    p.set_defaults(func=cmd_eval_detect)

    p = _command(sub, "detect", "find faces in one image and draw them")
    p.add_argument("image")
    p.add_argument("--model", help="zoo face model (default: the one --weights was trained as)")
    p.add_argument("--weights")
    p.add_argument("-o", "--output", help="PNG/JPEG with the boxes drawn")
    p.add_argument("--scales", type=_scales, default=[1.0])
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_detect)

    export = _command(sub, "export", "deploy a model").add_subparsers(dest="format", required=True)
    p = _command(export, "c", "int8 C99 code (host, Cortex-M4 in QEMU, STM32F439), checked against the int8 reference")
    p.add_argument("model", nargs="?", help="zoo model (rnnpool_face_quant, rnnpool_face_m4, mobilenetv2_035_rnnpool, ...; "
                                             "default: the one --weights was trained as)")
    p.add_argument("--weights", help="checkpoint from 'rnnpool train' (default: the model's initialisation under --seed)")
    p.add_argument("--calib", help="calibration image or folder of images (like the images the model will see; required "
                                   "unless --weights come from a --qat run, which keep their ranges)")
    p.add_argument("--calibration", choices=["minmax", "percentile", "mse"], default="minmax",
                   help="activation ranges: min/max of the calibration images, their percentiles (--percentile), or the "
                        "range whose int8 rounding and clipping of their values has the least squared error")
    p.add_argument("--percentile", type=float, default=99.99, help="with --calibration percentile: keep this share")
    p.add_argument("--no-equalize", dest="equalize", action="store_false",
                   help="calibrate RNNPool's output as it is (by default every channel is first moved to one range, which "
                        "leaves the float model unchanged and int8 more precise: see benchmarks/calibration.py)")
    p.add_argument("-o", "--output", required=True, help="folder for the C sources, Makefile and memory report")
    p.add_argument("--target", choices=["host", "cortex-m4", "stm32f439"], default="host")
    p.add_argument("--run", help="image to run the built program on and compare with the int8 reference")
    p.add_argument("--check", help="image or folder of images to run the program on after --run, each compared with the "
                                   "int8 reference (the M4 build in QEMU, linked with the RAM it claimed)")
    p.add_argument("--check-limit", dest="check_limit", type=int, default=100,
                   help="with --check: at most this many images of the folder (sorted)")
    p.add_argument("--json", help="write the report (RAM, flash, instructions, bit_exact, outputs) here ('-': standard output)")
    p.add_argument("--ram-kib", dest="ram_kib", type=int, default=256, help="RAM of the Cortex-M4 (KiB)")
    p.add_argument("--input", type=_parse_shape, help="CxHxW, e.g. 3x224x224 (classifiers: any square side; detectors: their own)")
    p.add_argument("--input-size", dest="input_size", type=int, help="classifiers: the square input side (default: the model's)")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed when no --weights are given")
    p.add_argument("--no-row-cache", dest="no_row_cache", action="store_true",
                   help="RNNPool recomputes the row sweeps overlapping patches share (less RAM, more instructions)")
    p.add_argument("--threshold", type=float, default=0.5, help="detection score threshold")
    p.set_defaults(func=cmd_export_c)
    _show_defaults(parser)
    return parser


# What bad input raises in the library (missing or corrupt files, unknown names, bad settings, a failed
# build): the CLI prints the message, which names the problem, instead of a traceback.
USER_ERRORS = (RnnpoolError, OSError)  # anything else is a bug in rnnpool: its traceback shows


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Run the command. A user error exits with status 1 and ``error: <message>``, Ctrl-C with 130;
    RNNPOOL_TRACEBACK=1 shows the traceback instead."""
    args = make_parser().parse_args(argv)
    try:
        args.func(args)
    except KeyboardInterrupt:
        if _want_traceback():
            raise
        print("\ninterrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except USER_ERRORS as err:
        if _want_traceback():
            raise
        raise SystemExit(f"error: {_one_line(err)}") from None


def _one_line(err: BaseException) -> str:
    """A user error's message. One raised in a DataLoader worker comes back wrapped in the worker's traceback
    ("Caught BadSampleError in DataLoader worker process 0. Original Traceback ..."): keep its last line's message,
    as with --workers 0."""
    message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    if message.startswith("Caught ") and "Original Traceback" in message:
        last = [line for line in message.splitlines() if line.strip()][-1]
        message = last.split(": ", 1)[1] if ": " in last else last
    return message


def _want_traceback() -> bool:
    return os.environ.get("RNNPOOL_TRACEBACK", "") not in ("", "0")


if __name__ == "__main__":
    main(sys.argv[1:])
