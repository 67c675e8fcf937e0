"""C99 code generation for a :class:`~rnnpool.deploy.quantize.QuantizedGraph`.

The generated ``model.c`` holds the weights as ``const`` arrays (flash) and one static arena for every
activation, laid out by :mod:`rnnpool.deploy.planner`. The schedule has two parts:

- **streaming**: the image arrives row by row (:c:func:`model_push_row`). Every layer up to and including
  the first RNNPool runs as soon as its input rows are there, on ring buffers of only as many rows as its
  kernel spans; heads on those maps turn their rows into detection candidates at once. Only the
  RNNPool's output map is ever whole.
- **layer by layer** from there on, MobileNetV2 blocks row by row (only ``k`` expanded rows live), a
  stride-1 3x3 depthwise convolution in place when its input dies with it.

The runtime kernels (``rnnpool_rt.c``), ``main.c``, the platform files and the Makefile are copied next
to it; ``memory_report.json`` gives arena bytes under the plan and under layer-by-layer allocation.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple, Union

import numpy as np

from .int8_reference import DetectionSettings, head_key_params
from .planner import Buffer, check_plan, layer_by_layer_peak, peak_step, plan_arena
from .quantize import QConv, QFastGRNN, QMBConv, QRNNPool, QuantizedGraph

RUNTIME_DIR = Path(__file__).parent / "c"
RUNTIME_FILES = ("rnnpool_rt.h", "rnnpool_rt.c", "main.c", "platform.h", "platform_host.c", "platform_m4.c", "m4.ld", "Makefile")


def _ident(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)


def _c_array(ctype: str, name: str, values: np.ndarray, per_line: int = 24) -> str:
    flat = [int(v) for v in np.asarray(values).reshape(-1)]
    fmt = (lambda v: f"INT64_C({v})") if ctype == "int64_t" else str
    rows = [", ".join(fmt(v) for v in flat[i : i + per_line]) for i in range(0, len(flat), per_line)]
    body = ",\n    ".join(rows) if rows else "0"
    return f"static const {ctype} {name}[{max(1, len(flat))}] = {{\n    {body}\n}};\n"


def _float_literal(value: float) -> str:
    return f"{float(np.float32(value)):.9e}f"


@dataclass
class _Step:
    """One layer-by-layer step: a conv, an MBConv block, a (conf, loc) head pair or a later RNNPool."""

    kind: str  # "conv" | "mbconv" | "head" | "rnnpool"
    ops: List[Union[QConv, QMBConv, QRNNPool]]
    head: int = -1


@dataclass
class ExportPlan:
    arena_bytes: int
    layer_by_layer_bytes: int
    layer_by_layer_peak_layer: str
    layer_by_layer_peak_tensors: List[str]
    plan_peak_buffers: List[str]
    buffers: List[Buffer] = field(default_factory=list)
    flash_weight_bytes: int = 0

    def as_dict(self) -> Dict:
        return {
            "arena_bytes": self.arena_bytes,
            "layer_by_layer_bytes": self.layer_by_layer_bytes,
            "layer_by_layer_peak_layer": self.layer_by_layer_peak_layer,
            "layer_by_layer_peak_tensors": self.layer_by_layer_peak_tensors,
            "plan_peak_buffers": self.plan_peak_buffers,
            "weight_bytes": self.flash_weight_bytes,
            "buffers": [{"name": b.name, "bytes": b.size, "offset": b.offset, "steps": [b.first, b.last], "alias": b.alias}
                        for b in self.buffers],
        }


class _Generator:
    def __init__(self, graph: QuantizedGraph, settings: DetectionSettings) -> None:
        self.graph, self.settings = graph, settings
        self.decl: List[str] = []  # constant arrays and structs
        self.weight_bytes = 0
        self.luts: Dict[bytes, str] = {}
        self.tensors = graph.tensors
        self.head_of = {h.conf: i for i, h in enumerate(graph.heads)}
        self.loc_of = {h.loc: i for i, h in enumerate(graph.heads)}
        self._split()

    # ---- schedule -------------------------------------------------------------------------------
    def _split(self) -> None:
        ops = self.graph.ops
        pools = [i for i, op in enumerate(ops) if isinstance(op, QRNNPool)]
        if not pools:
            raise NotImplementedError("C export streams the image into the first RNNPool; this graph has none")
        first = pools[0]
        self.prefix = ops[:first]
        self.pool: QRNNPool = ops[first]
        self.streamed = [self.graph.input]
        for op in self.prefix:
            if not isinstance(op, QConv):
                raise NotImplementedError(f"only convolutions can stream before the first RNNPool, got {type(op).__name__}")
            if op.input not in self.streamed:
                raise NotImplementedError(f"{op.output} reads {op.input}, which is not streamed")
            if op.output not in self.head_of and op.output not in self.loc_of:
                self.streamed.append(op.output)
        for op in ops:
            if isinstance(op, QRNNPool) and op.patch[0] > 16:
                raise NotImplementedError(f"C export supports RNNPool patches of at most 16 rows, got {op.patch}")
            for conv in ([op] if isinstance(op, QConv) else op.convs() if isinstance(op, QMBConv) else []):
                if conv.kernel > 7:  # RT_MAX_KERNEL in rnnpool_rt.c
                    raise NotImplementedError(f"C export supports kernels of at most 7x7, got {conv.kernel} ({conv.output})")
        if self.pool.input not in self.streamed:
            raise NotImplementedError("the first RNNPool must read the image or a streamed map")
        self.steps: List[_Step] = []
        rest = ops[first + 1 :]
        by_output = {op.output: op for op in rest}
        for op in rest:
            if op.input in self.streamed:
                raise NotImplementedError(f"{op.output} reads the streamed map {op.input} after the RNNPool")
            if op.output in self.loc_of:
                continue  # emitted with its conf conv
            if op.output in self.head_of:
                index = self.head_of[op.output]
                self.steps.append(_Step("head", [op, by_output[self.graph.heads[index].loc]], index))
            elif isinstance(op, QMBConv):
                self.steps.append(_Step("mbconv", [op]))
            elif isinstance(op, QRNNPool):
                self.steps.append(_Step("rnnpool", [op]))
            else:
                self.steps.append(_Step("conv", [op]))
        self.consumers: Dict[str, List] = {t: [] for t in self.streamed}
        for op in self.prefix + [self.pool]:
            if op.output in self.loc_of:
                continue
            self.consumers[op.input].append(op)

    def _shape(self, name: str) -> Tuple[int, int, int]:
        c, h, w = self.tensors[name].shape
        return h, w, c

    def _bytes(self, name: str) -> int:
        h, w, c = self._shape(name)
        return h * w * c

    def ring_rows(self, name: str) -> int:
        return max(op.patch[0] if isinstance(op, QRNNPool) else op.kernel for op in self.consumers[name])

    # ---- constants ------------------------------------------------------------------------------
    def _array(self, ctype: str, name: str, values: np.ndarray) -> str:
        self.decl.append(_c_array(ctype, name, values))
        self.weight_bytes += np.asarray(values).size * {"int8_t": 1, "int16_t": 2, "int32_t": 4, "int64_t": 8}[ctype]
        return name

    def conv(self, op: QConv) -> str:
        n = _ident(op.output)
        w = self._array("int8_t", f"w_{n}", op.weight)
        b = self._array("int32_t", f"b_{n}", op.bias)
        m = self._array("int32_t", f"m_{n}", op.mult)
        s = self._array("int32_t", f"s_{n}", op.shift)
        cin = op.weight.shape[3] * op.groups
        self.decl.append(
            f"static const rt_conv conv_{n} = {{{cin}, {op.out_channels}, {op.kernel}, {op.stride}, {op.padding}, {op.groups}, "
            f"{op.maxout}, {op.input_zero_point}, {op.output_zero_point}, {op.act_min}, {op.act_max}, {w}, {b}, {m}, {s}}};\n")
        return f"conv_{n}"

    def lut(self, table: np.ndarray) -> str:
        key = table.tobytes()
        if key not in self.luts:
            self.luts[key] = self._array("int16_t", f"lut_{len(self.luts)}", table)
        return self.luts[key]

    def cell(self, cell: QFastGRNN, name: str) -> str:
        a = {k: self._array(t, f"{k}_{name}", getattr(cell, k)) for k, t in (
            ("weight", "int8_t"), ("w_mult", "int32_t"), ("w_shift", "int32_t"), ("recurrent", "int8_t"),
            ("u_mult", "int32_t"), ("u_shift", "int32_t"), ("bias_gate", "int32_t"), ("bias_update", "int32_t"))}
        self.decl.append(
            f"static const rt_fastgrnn cell_{name} = {{{cell.hidden_size}, {cell.input_size}, {cell.input_zero_point}, "
            f"{a['weight']}, {a['w_mult']}, {a['w_shift']}, {a['recurrent']}, {a['u_mult']}, {a['u_shift']}, "
            f"{a['bias_gate']}, {a['bias_update']}, {cell.zeta}, {cell.nu}, {self.lut(cell.lut_gate)}, {self.lut(cell.lut_update)}}};\n")
        return f"cell_{name}"

    def rnnpool(self, op: QRNNPool) -> str:
        n = _ident(op.output)
        c1, c2 = self.cell(op.rnn1, n + "_1"), self.cell(op.rnn2, n + "_2")
        mult = self._array("int64_t", f"om_{n}", op.out_mult)
        bias = self._array("int64_t", f"ob_{n}", op.out_bias)
        h, w, c = self._shape(op.input)
        out_w = (w - op.patch[1]) // op.stride[1] + 1
        self.decl.append(
            f"static const rt_rnnpool pool_{n} = {{{op.patch[0]}, {op.patch[1]}, {op.stride[0]}, {op.stride[1]}, {c}, {w}, "
            f"{out_w}, {op.pad[1]}, &{c1}, &{c2}, {mult}, {bias}, {op.out_shift}, {op.output_zero_point}}};\n")
        return f"pool_{n}"

    def mbconv(self, op: QMBConv) -> str:
        n = _ident(op.output)
        expand = f"&{self.conv(op.expand)}" if op.expand is not None else "NULL"
        dw, project = self.conv(op.depthwise), self.conv(op.project)
        add = "NULL"
        if op.add is not None:
            a = op.add
            self.decl.append(f"static const rt_add add_{n} = {{{a.a_zero_point}, {a.b_zero_point}, {a.output_zero_point}, "
                             f"{a.mult_a}, {a.mult_b}, {a.shift}}};\n")
            add = f"&add_{n}"
        h_in, w_in, _ = self._shape(op.input)
        h_out, w_out, _ = self._shape(op.output)
        hidden = op.depthwise.out_channels
        self.decl.append(f"static const rt_mbconv_block block_{n} = {{{expand}, &{dw}, &{project}, {add}, {h_in}, {w_in}, {h_out}, "
                         f"{w_out}, {hidden}}};\n")
        return f"block_{n}"

    def mbconv_scratch(self, op: QMBConv) -> int:
        _, w_in, _ = self._shape(op.input)
        _, w_out, _ = self._shape(op.output)
        hidden = op.depthwise.out_channels
        return (op.depthwise.kernel * w_in * hidden if op.expand is not None else 0) + w_out * hidden

    def head_struct(self, index: int, anchor_offset: int) -> str:
        head = self.graph.heads[index]
        mult, threshold = head_key_params(self.graph, self.settings)[index]
        loc = self.tensors[head.loc]
        _, w, _ = self._shape(head.conf)
        self.decl.append(f"static const rt_head head_{index} = {{{mult}, {threshold}, {loc.zero_point}, {_float_literal(loc.scale)}, "
                         f"{_float_literal(head.stride)}, {_float_literal(head.anchor_size)}, {anchor_offset}, {w}}};\n")
        return f"head_{index}"

    # ---- memory ---------------------------------------------------------------------------------
    def plan(self) -> ExportPlan:
        buffers: List[Buffer] = []
        for t in self.streamed:
            h, w, c = self._shape(t)
            buffers.append(Buffer(f"ring_{_ident(t)}", self.ring_rows(t) * w * c, 0, 0))
        for op in self.prefix:
            if op.output in self.head_of or op.output in self.loc_of:
                _, w, c = self._shape(op.output)
                buffers.append(Buffer(f"row_{_ident(op.output)}", w * c, 0, 0))
        pools = [self.pool] + [s.ops[0] for s in self.steps if s.kind == "rnnpool"]
        scratch = max(self.pool_scratch_words(p) for p in pools) * 4
        last_use: Dict[str, int] = {}
        for i, step in enumerate(self.steps, start=1):
            last_use[step.ops[0].input] = i
        tensors: Dict[str, Buffer] = {}
        tensors[self.pool.output] = Buffer(_ident(self.pool.output), self._bytes(self.pool.output), 0, last_use.get(self.pool.output, 0))
        buffers.append(Buffer("rnnpool_scratch", scratch, 0, 0))
        for i, step in enumerate(self.steps, start=1):
            op = step.ops[0]
            if step.kind == "head":
                for o in step.ops:
                    buffers.append(Buffer(_ident(o.output), self._bytes(o.output), i, i))
                continue
            out = Buffer(_ident(op.output), self._bytes(op.output), i, last_use.get(op.output, i))
            if step.kind == "mbconv":
                buffers.append(Buffer(f"scratch_{i}", self.mbconv_scratch(op), i, i))
            elif step.kind == "rnnpool":
                buffers.append(Buffer(f"rnnpool_scratch_{i}", scratch, i, i))
            elif self.inplace(op, last_use, i):
                out.alias = _ident(op.input)
                buffers.append(Buffer(f"scratch_{i}", 2 * self._shape(op.input)[1] * self._shape(op.input)[2], i, i))
            tensors[op.output] = out
        buffers += tensors.values()
        arena = plan_arena(buffers)
        check_plan(buffers)
        _, names = peak_step(buffers)
        lbl = layer_by_layer_peak(*self._layers())
        return ExportPlan(arena, lbl[0], lbl[1], lbl[2], names, buffers, self.weight_bytes)

    def inplace(self, op, last_use: Dict[str, int], step: int) -> bool:
        return (isinstance(op, QConv) and op.groups > 1 and op.kernel == 3 and op.stride == 1 and op.padding == 1
                and last_use.get(op.input) == step and op.input != self.graph.input
                and self._shape(op.input) == self._shape(op.output))

    def _layers(self) -> Tuple[List[Tuple[str, List[str], str]], Dict[str, int]]:
        layers, sizes = [], {name: self._bytes(name) for name in self.tensors}
        for op in self.graph.ops:
            if isinstance(op, QMBConv):
                x = op.input
                for conv in op.convs():
                    layers.append((conv.output, [x], conv.output))
                    x = conv.output
                if op.add is not None:
                    layers.append((op.output, [x, op.input], op.output))
            else:
                layers.append((op.output, [op.input], op.output))
        return layers, sizes

    @staticmethod
    def pool_scratch_words(op: QRNNPool) -> int:
        (r, c), h1, h2 = op.patch, op.rnn1.hidden_size, op.rnn2.hidden_size
        return r * c * h1 + (r + c) * h1 + (r + c) * h2 + 2 * max(h1, h2)

    # ---- code -----------------------------------------------------------------------------------
    def source(self, plan: ExportPlan) -> Tuple[str, str]:
        offsets = {b.name: b.offset for b in plan.buffers}
        body: List[str] = []
        state: List[str] = []
        anchor_offsets, total = [], 0
        for head in self.graph.heads:
            anchor_offsets.append(total)
            _, h, w = self.tensors[head.conf].shape
            total += h * w
        heads = [self.head_struct(i, anchor_offsets[i]) for i in range(len(self.graph.heads))]

        def buf(name: str) -> str:
            return f"(arena + {offsets[name]})"

        # streaming part
        body += [f"static void feed_{_ident(t)}(int t);" for t in self.streamed]
        by_output = {op.output: op for op in self.prefix}
        pool_name = self.rnnpool(self.pool)
        for t in self.streamed:
            h, w, c = self._shape(t)
            ring, rows = buf(f"ring_{_ident(t)}"), self.ring_rows(t)
            lines = [f"static void feed_{_ident(t)}(int t) {{", "    const int8_t *rows[16];", "    (void)rows;"]
            for op in self.consumers[t]:
                n = _ident(op.output)
                counter = f"next_{n}"
                state.append(counter)
                if isinstance(op, QRNNPool):
                    oh = (h - op.patch[0]) // op.stride[0] + 1
                    _, ow_total, oc = self._shape(op.output)
                    lines += [
                        f"    while ({counter} < {oh} && {counter} * {op.stride[0]} + {op.patch[0] - 1} <= t) {{",
                        f"        for (int i = 0; i < {op.patch[0]}; ++i) rows[i] = {ring} + (size_t)(({counter} * {op.stride[0]} + i) % {rows}) * {w * c};",
                        f"        rt_rnnpool_row(&{pool_name}, rows, {buf(n)} + (size_t){counter} * {ow_total * oc}, (int32_t *){buf('rnnpool_scratch')});",
                        f"        ++{counter};", "    }"]
                    continue
                oh, ow, oc = self._shape(op.output)
                conv = self.conv(op)
                gather = (f"        for (int i = 0; i < {op.kernel}; ++i) {{ const int y = {counter} * {op.stride} - {op.padding} + i; "
                          f"rows[i] = (y < 0 || y >= {h}) ? NULL : {ring} + (size_t)(y % {rows}) * {w * c}; }}")
                cond = f"    while ({counter} < {oh} && ({counter} * {op.stride} - {op.padding} + {op.kernel - 1} < {h - 1} ? {counter} * {op.stride} - {op.padding} + {op.kernel - 1} : {h - 1}) <= t) {{"
                lines += [cond, gather]
                if op.output in self.head_of:
                    index = self.head_of[op.output]
                    loc = by_output[self.graph.heads[index].loc]
                    conf_row, loc_row = buf(f"row_{n}"), buf(f"row_{_ident(loc.output)}")
                    lines += [
                        f"        rt_conv_row(&{conv}, rows, {w}, {ow}, {conf_row});",
                        f"        rt_conv_row(&{self.conv(loc)}, rows, {w}, {ow}, {loc_row});",
                        f"        model_hashes[{2 * index}] = rt_fnv1a(model_hashes[{2 * index}], {conf_row}, {ow * 2});",
                        f"        model_hashes[{2 * index + 1}] = rt_fnv1a(model_hashes[{2 * index + 1}], {loc_row}, {ow * 4});",
                        f"        rt_head_row(&{heads[index]}, {counter}, {conf_row}, {loc_row}, model_candidates);"]
                else:
                    out_ring, out_rows = buf(f"ring_{n}"), self.ring_rows(op.output)
                    lines += [f"        rt_conv_row(&{conv}, rows, {w}, {ow}, {out_ring} + (size_t)({counter} % {out_rows}) * {ow * oc});",
                              f"        feed_{n}({counter});"]
                lines += [f"        ++{counter};", "    }"]
            lines.append("}")
            body += lines

        # layer-by-layer part
        finish = ["void model_finish(void) {"]
        pool_h, pool_w, pool_c = self._shape(self.pool.output)
        valid = (self._shape(self.pool.input)[0] - self.pool.patch[0]) // self.pool.stride[0] + 1
        finish.append(f"    for (int y = {valid}; y < {pool_h}; ++y) rt_rnnpool_pad_row(&{pool_name}, {buf(_ident(self.pool.output))} + (size_t)y * {pool_w * pool_c});")
        for i, step in enumerate(self.steps, start=1):
            op = step.ops[0]
            h_in, w_in, c_in = self._shape(op.input)
            src = buf(_ident(op.input))
            if step.kind == "head":
                conf, loc = step.ops
                oh, ow, _ = self._shape(conf.output)
                cb, lb = buf(_ident(conf.output)), buf(_ident(loc.output))
                index = step.head
                finish += [
                    f"    rt_conv_layer(&{self.conv(conf)}, {src}, {h_in}, {w_in}, {cb}, {oh}, {ow});",
                    f"    rt_conv_layer(&{self.conv(loc)}, {src}, {h_in}, {w_in}, {lb}, {oh}, {ow});",
                    f"    model_hashes[{2 * index}] = rt_fnv1a(model_hashes[{2 * index}], {cb}, {oh * ow * 2});",
                    f"    model_hashes[{2 * index + 1}] = rt_fnv1a(model_hashes[{2 * index + 1}], {lb}, {oh * ow * 4});",
                    f"    for (int y = 0; y < {oh}; ++y) rt_head_row(&{heads[index]}, y, {cb} + (size_t)y * {ow * 2}, {lb} + (size_t)y * {ow * 4}, model_candidates);"]
            elif step.kind == "mbconv":
                finish.append(f"    rt_mbconv(&{self.mbconv(op)}, {src}, {buf(_ident(op.output))}, {buf(f'scratch_{i}')});")
            elif step.kind == "rnnpool":
                p = self.rnnpool(op)
                oh_valid = (h_in - op.patch[0]) // op.stride[0] + 1
                oh, ow, oc = self._shape(op.output)
                finish += [
                    "    {", "        const int8_t *rows[16];",
                    f"        for (int y = 0; y < {oh_valid}; ++y) {{",
                    f"            for (int i = 0; i < {op.patch[0]}; ++i) rows[i] = {src} + (size_t)(y * {op.stride[0]} + i) * {w_in * c_in};",
                    f"            rt_rnnpool_row(&{p}, rows, {buf(_ident(op.output))} + (size_t)y * {ow * oc}, (int32_t *){buf(f'rnnpool_scratch_{i}')});",
                    "        }",
                    f"        for (int y = {oh_valid}; y < {oh}; ++y) rt_rnnpool_pad_row(&{p}, {buf(_ident(op.output))} + (size_t)y * {ow * oc});",
                    "    }"]
            else:
                oh, ow, _ = self._shape(op.output)
                conv = self.conv(op)
                if f"scratch_{i}" in offsets and step.kind == "conv":
                    finish.append(f"    rt_depthwise_inplace(&{conv}, {src}, {h_in}, {w_in}, {buf(f'scratch_{i}')});")
                else:
                    finish.append(f"    rt_conv_layer(&{conv}, {src}, {h_in}, {w_in}, {buf(_ident(op.output))}, {oh}, {ow});")
        finish.append("}")

        c, h, w = self.graph.input_shape
        image_ring = buf(f"ring_{_ident(self.graph.input)}")
        image_rows = self.ring_rows(self.graph.input)
        api = [
            "void model_reset(rt_candidates *candidates, uint32_t *hashes) {",
            "    model_candidates = candidates;", "    model_hashes = hashes;",
            f"    for (int i = 0; i < {2 * len(self.graph.heads)}; ++i) hashes[i] = RT_FNV_INIT;",
            *[f"    {s} = 0;" for s in state], "}",
            f"int8_t *model_input_row(int y) {{ return {image_ring} + (size_t)(y % {image_rows}) * {w * c}; }}",
            f"void model_push_row(int y) {{ feed_{_ident(self.graph.input)}(y); }}",
        ]
        source = "\n".join([
            "/* Generated by rnnpool.deploy.codegen: do not edit. */",
            '#include "model.h"', "", "#include <stddef.h>", "",
            *self.decl, "",
            f"/* One arena for every activation: {plan.arena_bytes} bytes (see memory_report.json). */",
            f"static union {{ int64_t align; int8_t bytes[{max(8, plan.arena_bytes)}]; }} arena_storage;",
            "#define arena (arena_storage.bytes)",
            "static rt_candidates *model_candidates;", "static uint32_t *model_hashes;",
            *[f"static int {s};" for s in state], "",
            *body, "", *api, "", *finish, ""])
        s = self.settings
        header = "\n".join([
            "/* Generated by rnnpool.deploy.codegen: do not edit. */",
            "#ifndef MODEL_H", "#define MODEL_H", "", '#include "rnnpool_rt.h"', "",
            f"#define MODEL_INPUT_HEIGHT {h}", f"#define MODEL_INPUT_WIDTH {w}", f"#define MODEL_INPUT_CHANNELS {c}",
            f"#define MODEL_INPUT_ROW_BYTES {w * c}", f"#define MODEL_NUM_HEADS {len(self.graph.heads)}",
            f"#define MODEL_ARENA_BYTES {plan.arena_bytes}",
            f"#define MODEL_MAX_CANDIDATES {s.max_candidates}", f"#define MODEL_MAX_DETECTIONS {s.max_detections}",
            f"#define MODEL_NMS_THRESHOLD {_float_literal(s.nms_threshold)}", "",
            "/* Start an image; candidates and the 2 * MODEL_NUM_HEADS output checksums go to the given places. */",
            "void model_reset(rt_candidates *candidates, uint32_t *hashes);",
            "/* Where row y of the image (MODEL_INPUT_ROW_BYTES int8 values, pixel - 128) must be written. */",
            "int8_t *model_input_row(int y);",
            "/* Row y has been written: run every layer it completes. */",
            "void model_push_row(int y);",
            "/* All rows pushed: run the remaining layers. */",
            "void model_finish(void);", "", "#endif", ""])
        return header, source


def generate_c(graph: QuantizedGraph, out_dir: Union[str, Path], settings: DetectionSettings = DetectionSettings()) -> ExportPlan:
    """Write the C program for ``graph`` into ``out_dir`` (created); returns its memory plan."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gen = _Generator(graph, settings)
    plan = gen.plan()
    header, source = gen.source(plan)
    plan.flash_weight_bytes = gen.weight_bytes
    (out / "model.h").write_text(header)
    (out / "model.c").write_text(source)
    for name in RUNTIME_FILES:
        shutil.copyfile(RUNTIME_DIR / name, out / name)
    (out / "memory_report.json").write_text(json.dumps(plan.as_dict(), indent=2))
    return plan


def format_plan(plan: ExportPlan) -> str:
    """Human-readable summary: arena under the plan vs layer by layer, and what sits at each peak."""
    return (f"arena (planned, streamed image): {plan.arena_bytes:,} B; at its peak: {', '.join(plan.plan_peak_buffers)}\n"
            f"layer-by-layer allocation: {plan.layer_by_layer_bytes:,} B; peak at {plan.layer_by_layer_peak_layer} "
            f"holding {', '.join(plan.layer_by_layer_peak_tensors)}")


__all__ = ["ExportPlan", "format_plan", "generate_c"]
