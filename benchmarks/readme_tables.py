"""The README's benchmark tables, generated from the committed JSON under benchmarks/results/.

    python benchmarks/readme_tables.py           # rewrite the tables in README.md
    python benchmarks/readme_tables.py --check   # exit 1 if README.md differs from the JSON

Each table sits between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` in README.md; a test checks that
they match the JSON, so a number in the README is always one a benchmark measured.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from rnnpool.deploy.accuracy import largest_loss
from rnnpool.deploy.export import instruction_spread

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _kib(n: float) -> str:
    return f"{n / 1024:,.1f} KiB"


def _weights(path: str) -> str:
    return "trained" if path.endswith(".pt") else "untrained"


QAT_TARGET_DROP = 0.005  # issue 10: int8 AP within 0.5 AP points of the float model's


def deploy_table(data: Dict) -> str:
    lines = ["| model | input | weights | RAM target | RAM = static + stack | predicted (`stream`) | flash | instructions / frame "
             "| MAdds / instruction | >= ms at 168 MHz | bit-exact | live int8 maps |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for r in data["results"]:
        target = _kib(r["ram_target_bytes"])
        if not r["fits"]:
            need = (f"needs {r['needed_bytes']:,} B ({_kib(r['needed_bytes'])})" if r.get("needed_bytes")
                    else r["error"].replace("|", "/"))
            lines.append(f"| {r['model']} | | {_weights(r['weights'])} | {target} | does not fit: {need} | | | | | | | |")
            continue
        size = f"{r['input']['width']}x{r['input']['height']}x{r['input']['channels']}"
        ram = f"{r['static_ram_bytes']:,} + {r['stack_bytes']:,} = **{_kib(r['ram_bytes'])}**"
        error = round(100 * r['prediction_error'], 1) + 0.0  # + 0.0: no "-0.0"
        predicted = f"{_kib(r['predicted_ram_bytes'])} ({error:+.1f}%)"
        instructions = f"{r['instructions'] / 1e9:.3f} G"
        if r.get("instruction_target"):
            met = "met" if r["instructions"] <= r["instruction_target"] else "not met"
            instructions += f" (target {r['instruction_target'] / 1e9:.2f} G: {met})"
        live = f"{r['liveness']['maps'] - len(r['liveness']['dead'])} / {r['liveness']['maps']}"
        lines.append(f"| {r['model']} | {size} | {_weights(r['weights'])} | {target} | {ram} | {predicted} | {_kib(r['flash_bytes'])} "
                     f"| {instructions} | {r['madds_per_instruction']:.3f} | {r['ms_at_168mhz_lower_bound']:,.0f} | "
                     f"{'yes' if r['bit_exact'] else 'NO'} | {live} |")
        if r.get("claimed_minus_64") and r["claimed_minus_64"] != "stack overflow":
            notes.append(f"- {r['model']} within {target}: relinked with 64 B less than claimed, the run ended with "
                         f"\"{r['claimed_minus_64']}\": no SysTick interrupt (every 10 ticks) landed at the stack's deepest "
                         f"point, where the claimed exception frame is needed.")
        if r.get("planner_choices"):
            notes.append(f"- {r['model']} within {target}: the planner recomputes {len(r['planner_choices'])} layers' rows "
                         f"to fit ({'; '.join(c.split(':')[0] for c in r['planner_choices'])}).")
        if "accuracy" in r:
            a = r["accuracy"]
            where = ""
            if a.get("tensor_sqnr_db"):
                name, before, after = largest_loss(a["tensor_sqnr_db"])
                where = f"; the largest loss of precision is at {name} ({before:.1f} dB -> {after:.1f} dB SQNR)"
            notes.append(f"- {r['model']} ({target} build), WIDER FACE protocol AP on {a['images']} validation images at the "
                         f"deployed input size: float {a['ap_fp32']:.3f}, int8 {a['ap_int8']:.3f} (drop {a['ap_drop']:+.3f}); "
                         f"head outputs at {a['head_sqnr_db']:.1f} dB SQNR{where}.")
            if "qat" in a:
                q = a["qat"]
                met = "met" if q["ap_drop"] <= QAT_TARGET_DROP else "not met"
                notes.append(f"  After quantization-aware fine-tuning ({q['weights'].split('/')[-1]}, the weights the program above "
                             f"runs): int8 {q['ap_int8']:.3f} (the same weights in float: {q['ap_fp32_of_tuned_weights']:.3f}), "
                             f"a drop of {q['ap_drop']:+.3f} from the float model's {a['ap_fp32']:.3f} (target "
                             f"{QAT_TARGET_DROP}: {met}); head outputs at {q['head_sqnr_db']:.1f} dB SQNR.")
        if "checked" in r:
            notes.append(_checked_note(r, target))
    stm = data.get("stm32f439")
    if stm:
        notes.append(f"- STM32F439 build (`--target stm32f439`) of {stm['model']}: flash {stm['flash_bytes']:,} B, SRAM "
                     f"{stm['sram_bytes']:,} B (of 192 KiB), CCM {stm['ccm_bytes']:,} B; the same code bit-exact on the host: "
                     f"{'yes' if stm['bit_exact_on_host'] else 'NO'} (built, not run on a board).")
    runs = []
    for r in data["results"] + ([stm] if stm else []):
        run = r.get("run", data)
        if "command" in run and (run["command"], run.get("date")) not in runs:
            runs.append((run["command"], run.get("date")))
    notes += [f"- Measured by `{command}` ({date})." for command, date in runs]
    references = ["", "For comparison (quoted, not measured here):", ""]
    references += [f"- {ref['what']}: {ref['ram'] + '; ' if ref['ram'] else ''}{ref['note']}." for ref in data["references"]]
    return "\n".join(lines + [""] + notes + references) + "\n"


def _checked_note(r: Dict, target: str) -> str:
    """What the program gave on the images it was run on after the measured one (``deploy_m4.py --check``)."""
    c = r["checked"]
    spread = instruction_spread([run["instructions"] for run in c["runs"]])
    exact = "all" if c["bit_exact"] == c["images"] else f"only {c['bit_exact']:,}"
    note = (f"- {r['model']} ({target} build), then run on {c['images']:,} images in QEMU ({c['on']}): {exact} bit-exact "
            f"with the int8 reference, {spread}")
    if "top1" in c:
        t = c["top1"]
        note += (f"; its top-1 from the M4's own class scores is **{100 * t['top1_m4']:.1f}%** on these {t['images']:,} CIFAR-10 test "
                 f"images (the first of each class in turn), the float PyTorch model's {100 * t['top1_fp32']:.1f}% on the same "
                 f"images at the same size (the same class for {100 * t['agreement']:.1f}%).")
    elif c["bit_exact"] == c["images"] and r.get("accuracy", {}).get("images") == c["images"]:
        note += (": the int8 AP above of the weights it runs is computed from head outputs equal to the M4's own, image "
                 "for image.")
    else:
        note += "."
    return note


def _recipe_runs(rows: List[Dict], describe: Callable[[Dict], str]) -> List[str]:
    """One line per distinct (recipe, command, machine) among ``rows``, naming the models it trained."""
    groups: Dict[str, List[str]] = {}
    for r in rows:
        groups.setdefault(describe(r), []).append(r["model"])
    return [f"{', '.join(models)}: {text}" for text, models in groups.items()]


def _where(r: Dict) -> str:
    run = r.get("run")
    if not run:
        return "on this 2-core CPU"
    return (f"on {run['accelerator']}" if _on_gpu(r) else "on a CPU") + f", {run['date']}, `{run['command']}`"


def _on_gpu(r: Dict) -> bool:
    """Whether the run that made row ``r`` had an accelerator (its run_info names one)."""
    return r.get("run", {}).get("accelerator", "none") != "none"


def train_faces_table(data: Dict) -> str:
    args = data["args"]
    lines = ["| model | input | AP (all faces) | AP (<= 3 faces) | best epoch / epochs done | MAdds | params | peak RAM int8 (`layer`) "
             "| train minutes |", "|---|---|---|---|---|---|---|---|---|"]
    for r in data["results"]:
        scheduled = r.get("epochs", args["epochs"])
        done = r.get("epochs_done", scheduled)
        lines.append(f"| {r['model']} | {r['input']} | {r['ap']:.3f} | {r['ap_le3']:.3f} | {r['best_epoch']} / "
                     f"{done if done == scheduled else f'{done} of {scheduled}'} | {r['madds'] / 1e6:.1f} M | {r['params']:,} "
                     f"| {r['peak_int8_kib']:.1f} KiB | {r['minutes']:.0f} |")

    def cut(r: Dict) -> str:
        done, scheduled = r.get("epochs_done"), r.get("epochs", args["epochs"])
        return f" (the time limit ended it after {done})" if done is not None and done < scheduled else ""

    def clipped(r: Dict) -> str:
        return f", gradient clipped to norm {r['grad_clip']:g}" if r.get("grad_clip") else ", gradient not clipped"

    def renamed(r: Dict) -> str:  # a row relabelled so that it can sit beside another run of the same label
        return f"; the run's own label: `{r['run_label']}`" if r.get("run_label") else ""

    def recipe(r: Dict) -> str:
        size, batch = r.get("input_size", args["input_size"]), r.get("batch_size", args["batch_size"])
        warm = r.get("warmup_epochs", args["warmup_epochs"])
        tuned = (f"quantization-aware fine-tuning of `{r['qat_from']}` (AP of the int8 arithmetic), "
                 if r.get("qat_from") else "")
        return (f"{tuned}crops of {size}x{size}, batch {batch}, SGD lr {r.get('lr', args['lr'])}, "
                f"{warm} warm-up epoch{'s' if warm != 1 else ''} then cosine, {r.get('epochs', args['epochs'])} "
                f"epochs{cut(r)}{clipped(r)}, validated every {r.get('eval_period', args['eval_period'])} "
                f"({'mixed precision' if r.get('amp') else 'float32'}; {_where(r)}{renamed(r)})")

    lines += ["", f"Trained on `{Path(args['train']).name}`, validated on `{Path(args['val']).name}`:", ""]
    lines += [f"- {line}." for line in _recipe_runs(data["results"], recipe)]
    lines.append("")
    for r in data["results"]:
        curve = ", ".join(f"{p['epoch']}: {p['ap']:.3f}" for p in r["curve"])
        if curve:
            lines.append(f"Learning curve of {r['model']} (epoch: val AP): {curve}.")
    return "\n".join(lines) + "\n"


def _schedule_left(r: Dict) -> float:
    """The cosine schedule's learning-rate factor after the row's last finished epoch (1 in warm-up, 0 at the end)."""
    warm, done, total = r.get("warmup_epochs", 1), r.get("epochs_done", r["epochs"]), r["epochs"]
    return 1.0 if done <= warm else 0.5 * (1 + math.cos(math.pi * (done - warm) / max(1, total - warm)))


def train_pairs_table(data: Dict) -> str:
    rows = data["results"]
    lines = ["| model | top-1 | epochs done / scheduled (lr left) | MAdds | peak RAM int8 (`layer`) | params | train minutes |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        done = r.get("epochs_done", r["epochs"])
        left = f" ({100 * _schedule_left(r):.0f}%)" if done < r["epochs"] else ""
        lines.append(f"| {r['model']} | {100 * r['top1']:.1f}% | {done} / {r['epochs']}{left} | {r['madds'] / 1e6:.1f} M "
                     f"| {r['peak_int8_kib']:.1f} KiB | {r['params']:,} | {r['minutes']:.0f} |")

    def recipe(r: Dict) -> str:
        images = f"{r['per_class']} training images per class" if r["per_class"] else "all training images"
        fitted_and_cut = "probe_train_epoch_s" in r and r.get("epochs_done", r["epochs"]) < r["epochs"]
        schedule = f"a schedule of at most {r['epochs']} epochs" if fitted_and_cut else f"{r['epochs']} epochs"
        return (f"{schedule} at {r['input_size']}x{r['input_size']}, batch {r['batch_size']}, SGD lr {r['lr']} "
                f"({r.get('warmup_epochs', 1)} warm-up epoch{'s' if r.get('warmup_epochs', 1) != 1 else ''}, cosine), "
                f"random-resized crops ({r['min_scale']}, 1) and flips{' on the GPU' if r.get('data_on_device') and _on_gpu(r) else ''}, "
                f"{images}, top-1 on {r['test_images']:,} test images ({'mixed precision' if r.get('amp') else 'float32'}; {_where(r)})")

    lines += [""] + [f"- {line}." for line in _recipe_runs(rows, recipe)]
    if any(r.get("epochs_done", r["epochs"]) < r["epochs"] for r in rows):
        lines.append("- lr left: the learning rate still left, as a share of its peak, where the time limit ended a run "
                     "before its schedule did.")
    return "\n".join(lines) + "\n"


OPERATOR_LABELS = {"mobilenetv2": "MobileNetV2", "mobilenetv2_035_vww": "MobileNetV2-0.35x VWW", "densenet121": "DenseNet121",
                   "rnnpool_face_c": "RNNPool-Face-C", "rnnpool_face_quant": "RNNPool-Face-Quant", "rnnpool_face_m4": "RNNPool-Face-M4"}


def operator_table(data: Dict) -> str:
    if "batches" not in data:  # an earlier run's format: one batch per config, the eager path named "fast"
        return _operator_table_v1(data)
    names = {"fused": "fused (default)", "eager": "eager", "compiled": "compiled", "gru": "nn.GRU, same steps"}
    impls = [i for i in names if any(r["impl"] == i for r in data["runs"])]
    lines = ["| config (`benchmarks/operator.py` CONFIGS) | batch | baseline forward / f+b ms | "
             + " | ".join(f"{names[i]} forward | {names[i]} f+b" for i in impls) + " |",
             "|---" * (3 + 2 * len(impls)) + "|"]
    runs = {(r["config"], r["batch"], r["impl"]): r for r in data["runs"]}
    for key, summary in data["summary"].items():
        config, batch = summary["config"], summary["batch"]
        base = runs[(config, batch, "baseline")]
        base_ms = f"{base['forward_ms']:,.1f}" + (f" / {base['forward_backward_ms']:,.1f}" if "forward_backward_ms" in base else "")
        cells = []
        for i in impls:
            forward = summary.get(f"{i}_forward_speedup")
            both = summary.get(f"{i}_forward_backward_speedup")
            cells.append(f"{forward:.1f}x" if forward else "")
            cells.append(f"{both:.1f}x" if both else "")
        lines.append(f"| {OPERATOR_LABELS.get(config, config)} | {batch} | {base_ms} | " + " | ".join(cells) + " |")
    lines.append("")
    for name, modes in data.get("target_met", {}).items():
        for mode, met in modes.items():
            if mode == "as_fast_as_gru":
                lowest = min(s["fused_vs_gru_forward"] for s in data["summary"].values() if "fused_vs_gru_forward" in s)
                lines.append(f"- fused (default) forward at least as fast as nn.GRU doing the same recurrences everywhere: "
                             f"{'met' if met else 'not met'} (lowest {lowest:.2f}x nn.GRU's speed).")
                continue
            lowest = min(s[f"{name}_{mode}_speedup"] for s in data["summary"].values() if f"{name}_{mode}_speedup" in s)
            lines.append(f"- {names.get(name, name)} {mode.replace('_', '+')}: target >= {data['targets'][mode]:.0f}x the baseline "
                         f"everywhere {'met' if met else 'not met'} (lowest {lowest:.1f}x).")
    largest = max(data["batches"])
    for config in ("rnnpool_face_c",):
        peaks = {i: runs.get((config, largest, i)) for i in ("baseline", "eager", "fused")}
        if all(peaks.values()) and "forward_backward_peak_mib" in peaks["fused"]:
            lines.append(f"- Peak memory of {OPERATOR_LABELS[config]} at batch {largest} (allocated by the call, "
                         f"`rnnpool.analysis.measure`): forward {peaks['fused']['forward_peak_mib']:,.0f} MiB fused, "
                         f"{peaks['eager']['forward_peak_mib']:,.0f} MiB eager, {peaks['baseline']['forward_peak_mib']:,.0f} MiB "
                         f"baseline; forward+backward {peaks['fused']['forward_backward_peak_mib']:,.0f} / "
                         f"{peaks['eager']['forward_backward_peak_mib']:,.0f} / {peaks['baseline']['forward_backward_peak_mib']:,.0f} MiB.")
    if data.get("batch_scaling"):
        lines.append("- " + _scaling_sentence(data, "default path"))
    lines.append("")
    where = data["run"].get("accelerator") if data["device"] != "cpu" else None
    lines.append(f"Forward+backward at batch {max(data['batches'])} only. Measured by `{data['run']['command']}` on "
                 f"{where or data['run'].get('processor') or data['device']} ({data['threads']} CPU threads, torch {data['torch']}, "
                 f"{data['run']['date']}); {_samples(data)}, the implementations interleaved.")
    return "\n".join(lines) + "\n"


def _samples(data: dict) -> str:
    """How the operator benchmark's times were taken."""
    if data.get("sample_seconds"):
        return (f"best of {data.get('repeats', 5)} samples, each the mean of back-to-back calls over at least "
                f"{data['sample_seconds'] * 1e3:.0f} ms")
    return f"best of {data.get('repeats', 5)} runs"


def _scaling_sentence(data: Dict, path: str) -> str:
    """How forward+backward time grows with the batch (issue 13: it must not grow faster than the batch)."""
    scaling = data["batch_scaling"]
    (small, t_small), (large, t_large) = sorted(((int(k), v) for k, v in scaling["forward_backward_ms"].items()))
    return (f"Forward+backward of {OPERATOR_LABELS.get(scaling['config'], scaling['config'])} ({path}): batch {small} "
            f"{t_small:,.0f} ms, batch {large} {t_large:,.0f} ms: the time per image is x{scaling['per_image_growth']:.2f} "
            f"at batch {large}" + (" (before the fix of issue 13: 0.76 s and 24.4 s, x4.0)." if data["device"] == "cpu" else "."))


def _operator_table_v1(data: Dict) -> str:
    runs = {(r["config"], r["impl"]): r for r in data["runs"]}
    impls = [i for i in ("fast", "compiled") if any(k[1] == i for k in runs)]
    names = {"fast": "eager", "compiled": "compiled"}
    lines = ["| config (`benchmarks/operator.py` CONFIGS) | "
             + " | ".join(f"{names[i]} forward | {names[i]} forward+backward" for i in impls) + " |",
             "|---" * (1 + 2 * len(impls)) + "|"]
    for config, summary in data["summary"].items():
        shape = next(x for x in data["runs"] if x["config"] == config)
        cells = [f"{summary[f'{i}_forward_speedup']:.1f}x | {summary[f'{i}_forward_backward_speedup']:.1f}x" for i in impls]
        lines.append(f"| {OPERATOR_LABELS.get(config, config)} (batch {shape['batch']}) | " + " | ".join(cells) + " |")
    lines.append("")
    if data.get("batch_scaling"):
        lines.append(_scaling_sentence(data, "eager"))
    device = data["run"].get("accelerator", data["device"]) if data["device"] != "cpu" else "cpu"
    lines.append(f"Measured by `{data['run']['command']}` on {device} ({data['threads']} CPU threads, torch {data['torch']}, "
                 f"{data['run']['date']}); {_samples(data)}, the implementations interleaved.")
    return "\n".join(lines) + "\n"


def train_step_table(data: Dict) -> str:
    lines = ["| batch | baseline | ms / step (median, best) | RNNPool model | ms / step (median, best) | RNNPool / baseline (medians) |",
             "|---|---|---|---|---|---|"]
    for r in data["results"]:
        lines.append(f"| {r['batch']} | {r['baseline']} | {r['baseline_ms']:.1f}, {r['baseline_best_ms']:.1f} | {r['rnnpool']} "
                     f"| {r['rnnpool_ms']:.1f}, {r['rnnpool_best_ms']:.1f} | {r['ratio']:.2f}x |")
    lines += ["", f"{data['repeats']} steps each at {data['size']}x{data['size']}, the models interleaved; measured by "
                  f"`{data['run']['command']}` on {data['device']} ({data['threads']} CPU threads, torch {data['torch']}, "
                  f"{data['run']['date']})."]
    return "\n".join(lines) + "\n"


def fit_models_table(data: Dict) -> str:
    lines = ["| model | dtype | budget | original peak / MAdds / params | RNNPool replaces | RNNPool (patch/stride, h1, h2) "
             "| fitted peak / MAdds / params |", "|---|---|---|---|---|---|---|"]
    notes = []
    for r in data["results"]:
        budget = f"{r['ram_bytes'] / 1024:.0f} KiB"
        if "error" in r:
            lines.append(f"| {r['model']} | {r['dtype']} | {budget} | | not fitted (see below) | | |")
            notes.append(f"- {r['model']}: {r['error']}.")
            continue
        o, c = r["original"], r["chosen"]
        before = f"{o['peak_bytes'] / 1024:,.1f} KiB / {o['madds'] / 1e6:.1f} M / {o['params']:,}"
        if c is None:
            lines.append(f"| {r['model']} | {r['dtype']} | {budget} | {before} | none of {r['candidates']} fits | | |")
            continue
        lines.append(f"| {r['model']} | {r['dtype']} | {budget} | {before} | {c['replaced']} | {r['rnnpool']} "
                     f"| {c['peak_bytes'] / 1024:,.1f} KiB "
                     f"({c['peak_bytes'] / o['peak_bytes']:.2f}x) / {c['madds'] / 1e6:.1f} M ({c['madds'] / o['madds']:.2f}x) / "
                     f"{c['params']:,} |")
    lines += [""] + notes + ([""] if notes else []) + [f"Input 3x{data['input'][1]}x{data['input'][2]}, convention 'layer'; measured by "
                             f"`{data['run']['command']}` ({data['run']['date']})."]
    return "\n".join(lines) + "\n"


def int8_classifier_table(data: Dict) -> str:
    args = data["args"]
    target = data["target_drop"]
    lines = ["| int8 model | its weights in float: top-1 | int8 top-1 (integer reference) | drop from the float model (points) "
             "| same class as its float weights |", "|---|---|---|---|---|"]
    for r in data["results"]:
        met = "met" if r["drop_from_float"] <= target else "not met"
        lines.append(f"| {r['model']}, {r['quantization']} | {100 * r['top1_fp32']:.2f}% | {100 * r['top1_int8']:.2f}% "
                     f"| {100 * r['drop_from_float']:+.2f} ({met}) | {100 * r['agreement']:.1f}% |")
    images = data["results"][0]["images"] if data["results"] else 0
    trained = data.get("float_training")

    def training_images(per_class: Optional[int]) -> str:
        return f"{per_class} training images per class" if per_class else "all training images"

    if trained:  # --float-weights: a classifier trained elsewhere
        float_model = (f"the float model: `{args['float_weights']}`, {trained['epochs_done']} epochs of a {trained['epochs']}-epoch "
                       f"cosine schedule (lr {trained['lr']}, batch {trained['batch_size']}) on {training_images(trained.get('per_class'))}; "
                       f"then {args['qat_epochs']} quantization-aware epochs (lr {args['qat_lr']}) from it on "
                       f"{training_images(args['per_class'])}")
    else:
        float_model = (f"{args['epochs']} float epochs on {training_images(args['per_class'])} (the float model: the "
                       f"post-training row's float weights), then {args['qat_epochs']} quantization-aware epochs "
                       f"(lr {args['qat_lr']}) from it")
    per_test = f"{args['test_per_class']} per class" if args["test_per_class"] else "the whole test split"
    lines += ["", f"CIFAR-10 at {args['input_size']}x{args['input_size']}: {float_model}; top-1 on {images:,} "
                  f"test images ({per_test}) as uint8 pixels; post-training quantization calibrated "
                  f"({args['calibration']}{', RNNPool outputs equalized' if args.get('equalize') else ''}) on 32 training "
                  f"images. Target: a drop of at most {100 * target:.1f} points. "
                  f"Measured by `{data['command']}` ({data['date']}, {data['processor']})."]
    return "\n".join(lines) + "\n"


def calibration_table(data: Dict) -> str:
    """One row per model, weights and calibration method: the mean over calibration sets, with their range (the
    weights named where a model was measured with more than one)."""
    groups: Dict[Tuple[str, str, str], List[Dict]] = {}
    weights: Dict[str, set] = {}
    for r in data["results"]:
        groups.setdefault((r["model"], r.get("weights", ""), r["method"]), []).append(r)
        weights.setdefault(r["model"], set()).add(r.get("weights", ""))
    lines = ["| model | calibration | float | int8 (integer reference) | drop (points) | head outputs SQNR | calibration sets |",
             "|---|---|---|---|---|---|---|"]
    commands: Dict[str, List[str]] = {}
    for (model, path, method), rows in groups.items():
        drops = [100 * r["drop"] for r in rows]
        int8 = [r["int8"] for r in rows]
        spread = f" ({min(drops):+.2f} .. {max(drops):+.2f})" if len(rows) > 1 else ""
        sqnr = f"{sum(r['head_sqnr_db'] for r in rows) / len(rows):.1f} dB" if "head_sqnr_db" in rows[0] else "-"
        label = f"{model} ({rows[0]['input']}{f', `{path}`' if len(weights[model]) > 1 else ''})"
        lines.append(f"| {label} | {method} | {rows[0]['metric']} {rows[0]['float']:.4f} | "
                     f"{sum(int8) / len(int8):.4f} | {sum(drops) / len(drops):+.2f}{spread} | {sqnr} | {len(rows)} |")
        run = rows[0]["run"]
        models = commands.setdefault(f"`{run['command']}` ({run['date']}, {run['processor']})", [])
        if model not in models:
            models.append(model)
    lines += [""] + [f"- {', '.join(models)}: measured by {command}." for command, models in commands.items()]
    return "\n".join(lines) + "\n"


def fit_train_table(data: Dict) -> str:
    args, fitted = data["args"], data["fitted"]
    lines = ["| model | top-1 | peak RAM int8 (`layer`) | MAdds | params | train minutes |", "|---|---|---|---|---|---|"]
    for r in data["results"]:
        lines.append(f"| {r['model']} | {100 * r['top1']:.1f}% | {r['peak_int8_bytes'] / 1024:.1f} KiB | {r['madds'] / 1e6:.2f} M "
                     f"| {r['params']:,} | {r['minutes']:.0f} |")
    lines += ["", f"`{args['model']}` (random init, 10 classes) at {args['input_size']}x{args['input_size']}, fitted by `rnnpool fit --objective {args.get('objective', 'madds')}` "
                  f"to {data['budget_bytes'] / 1024:.1f} KiB (its peak / {args['ram_divisor']:g}): {fitted['replaced']} -> RNNPool "
                  f"{fitted['patch']}/{fitted['stride']}, h {fitted['hidden_row']}/{fitted['hidden_summary']}. One recipe for the "
                  f"three: {args['epochs']} epochs, batch {args['batch_size']}, SGD lr {args['lr']} (1 warm-up epoch, cosine), "
                  f"BatchNorm momentum {args.get('bn_momentum')}, "
                  f"{args['per_class']} CIFAR-10 training images per class, top-1 on {data['results'][0]['test_images']:,} test "
                  f"images; the distilled run learns from the trained original (KL on softened logits + labels). "
                  f"Measured by `{data['command']}` ({data['date']}, {data['processor']})."]
    return "\n".join(lines) + "\n"


def reference_detectors_table(data: Dict) -> str:
    bins = list(data["results"][0]["ap_by_size"]) if data["results"] else []
    lines = ["| detector | AP (all faces) | AP (<= 3 faces) | " + " | ".join(f"AP {b}" for b in bins)
             + " | detections | ms / image (this CPU) |", "|---|---|---|" + "---|" * len(bins) + "---|---|"]
    for r in data["results"]:
        lines.append(f"| {r['detector']} | {r['ap']:.3f} | {r['ap_le3']:.3f} | "
                     + "".join(f"{r['ap_by_size'][b]:.3f} | " for b in bins)
                     + f"{r['detections']} | {1e3 * r['seconds_per_image']:.0f} |")
    haar = next((r["settings"] for r in data["results"] if not r["trained_here"]), {})
    ours = [r for r in data["results"] if r["trained_here"]]
    faces = data["results"][0]["faces_by_size"] if data["results"] else {}
    lines += ["", "Faces per size bin (sqrt(w h), the other faces ignored in each): "
              + ", ".join(f"{b}: {n}" for b, n in faces.items()) + ". "
              f"Haar: scale step {haar.get('scale_factor')}, {haar.get('min_neighbors')} neighbours, faces from "
              f"{haar.get('min_size')} px, {haar.get('input')} image; scores are the last stage's weights."
              + (f" Ours: the float model, {ours[0]['settings']['input']}, {ours[0]['settings']['threads']} threads; weights "
                 + ", ".join(f"`{r['weights']}`" for r in ours) + "." if ours else "")
              + f" Measured by `{data['command']}` ({data['date']})."]
    return "\n".join(lines) + "\n"


def triton_variants_table(data: Dict) -> str:
    """Per config: the default launch settings' kernel time, the fastest variant of each tl.dot precision."""
    lines = ["| config (RNN1 row grid, batch {}) | units | default (block, warps, precision) | fastest ieee | fastest tf32x3 | "
             "largest difference from the default |".format(data["batch"]), "|---|---|---|---|---|---|"]
    configs: Dict[str, List[Dict]] = {}
    for r in data["runs"]:
        configs.setdefault(r["config"], []).append(r)

    def cell(r: Dict) -> str:
        return f"{r['kernel_us']:,.0f} us ({r['block']}, {r['num_warps']}, {r['precision']})"

    for config, rows in configs.items():
        default = next(r for r in rows if r["default"])
        fastest = {p: min((r for r in rows if r["precision"] == p), key=lambda r: r["kernel_us"], default=None)
                   for p in ("ieee", "tf32x3")}
        lines.append(f"| {OPERATOR_LABELS.get(config, config)} | {rows[0]['units']} | {cell(default)} | "
                     + " | ".join(cell(r) if r else "-" for r in fastest.values())
                     + f" | {max(r['max_abs_diff'] for r in rows):.1e} |")
    lines += ["", f"The forward kernel alone (no autograd), median of `triton.testing.do_bench`; {len(data['runs'])} "
                  f"variants. Measured by `{data['run']['command']}` on {data['device']} (Triton {data['triton']}, "
                  f"torch {data['torch']}, {data['run']['date']})."]
    return "\n".join(lines) + "\n"


SECTIONS: Dict[str, Tuple[str, Callable[[Dict], str]]] = {
    "reference-detectors-table": ("reference_detectors.json", reference_detectors_table),
    "deploy-table": ("deploy_m4.json", deploy_table),
    "operator-table": ("operator.json", operator_table),
    "operator-cuda-table": ("operator_cuda.json", operator_table),
    "triton-variants-table": ("triton_variants.json", triton_variants_table),
    "train-step-cpu-table": ("train_step_cpu.json", train_step_table),
    "train-step-cuda-table": ("train_step_cuda.json", train_step_table),
    "train-faces-table": ("train_faces.json", train_faces_table),
    "face-clip-table": ("face_clip.json", train_faces_table),
    "train-pairs-table": ("train_pairs.json", train_pairs_table),
    "train-ablation-table": ("train_ablation.json", train_pairs_table),
    "train-ablation-cpu-table": ("train_ablation_cpu.json", train_pairs_table),
    "calibration-table": ("calibration.json", calibration_table),
    "fit-models-table": ("fit_models.json", fit_models_table),
    "int8-classifier-table": ("int8_classifier.json", int8_classifier_table),
    "fit-train-table": ("fit_train.json", fit_train_table),
}


def generated_sections(results: Path = RESULTS) -> Dict[str, str]:
    """Section name -> its generated text, for every section whose JSON exists."""
    out = {}
    for name, (file, make) in SECTIONS.items():
        path = results / file
        if path.is_file():
            out[name] = make(json.loads(path.read_text()))
    return out


def update(text: str, sections: Dict[str, str]) -> Tuple[str, List[str]]:
    """``text`` with each section replaced; also the names of sections missing from it."""
    missing = []
    for name, body in sections.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            missing.append(name)
            continue
        text = pattern.sub(lambda m: m.group(1) + body + m.group(2), text)
    return text, missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that README.md is up to date")
    parser.add_argument("--readme", default=str(ROOT / "README.md"))
    args = parser.parse_args()
    readme = Path(args.readme)
    text = readme.read_text()
    new, missing = update(text, generated_sections())
    if missing:
        sys.exit(f"error: {readme} has no markers for {', '.join(missing)}")
    if args.check:
        if new != text:
            sys.exit(f"error: {readme}'s tables differ from benchmarks/results; run python benchmarks/readme_tables.py")
        print(f"{readme} is up to date")
        return
    readme.write_text(new)
    print(f"updated {readme}")


if __name__ == "__main__":
    main()
