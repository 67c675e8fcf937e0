"""C99 code generation for a streaming :class:`~rnnpool.deploy.schedule.Schedule`.

:func:`generate_c` writes ``model.c`` / ``model.h`` from the templates in ``c/templates`` (weights as
``const`` arrays in flash, one static arena for every ring, state and scratch buffer, one ``run_`` function
per layer and one ``push_`` function per map), copies the runtime and platform files next to them, and
writes ``memory_report.json``. Weight rows are packed in the layout the kernels read: padded to whole
words (RT_PACK) and, where a kernel multiplies int8 weights with int16 data, each four columns stored
(0, 2, 1, 3) so that SXTB16 pairs them with the data's natural int16 pairs.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from .c_literals import C_TYPES, c_array, c_float, c_ident
from .fixedpoint import HIGH_WORD_SHIFT
from .int8_reference import DetectionSettings, head_key_params
from .quantize import QAvgPool, QConv, QFastGRNN, QL2Norm, QMBConv, QRNNPool, QuantizedGraph
from .runtime_limits import RUNTIME_DIR, padded
from .schedule import (Node, Schedule, ScheduleError, build_schedule, column_channels, conv_kdim, gathers_columns, mbconv_memory,
                       rnnpool_memory, rnnpool_valid_rows)

RUNTIME_SOURCES = ("rt_conv.c", "rt_mbconv.c", "rt_fastgrnn.c", "rt_rnnpool.c", "rt_pixel.c", "rt_detect.c")
RUNTIME_FILES = RUNTIME_SOURCES + ("rnnpool_rt.h", "rt_arith.h", "rt_kernels.h", "rt_fastgrnn_steps.inc", "main.c", "platform.h",
                                   "platform_host.c", "platform_cortex_m.h", "platform_m4.c", "m4.ld", "platform_stm32f4.c", "stm32f439.ld", "Makefile")
TEMPLATES = RUNTIME_DIR / "templates"
ALIGN = 8


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _template(name: str) -> Template:
    return Template((TEMPLATES / name).read_text())


def pack_rows(matrix: np.ndarray, width: int) -> np.ndarray:
    """int8 rows zero-padded to ``width`` columns."""
    rows = np.zeros((matrix.shape[0], width), dtype=np.int8)
    rows[:, : matrix.shape[1]] = matrix
    return rows


def depthwise_weights(op: QConv, kdim: int) -> np.ndarray:
    """A depthwise conv's weights widened to int16 as the kernel reads them: [kdim / 4][k*k][4], for each four
    channels c.. and each tap the pairs (c, c + 2), (c + 1, c + 3) (SXTB16's order of the input bytes)."""
    taps = op.kernel ** 2
    w = np.zeros((kdim, taps), dtype="<i2")
    w[: op.out_channels] = op.weight.reshape(op.out_channels, taps)
    return np.ascontiguousarray(w.reshape(kdim // 4, 4, taps)[:, [0, 2, 1, 3], :].transpose(0, 2, 1))


def widen_rows(matrix: np.ndarray, width: int, unpacked_data: bool) -> np.ndarray:
    """int16 rows zero-padded to ``width`` columns, as little-endian int32 words of two: each word meets one
    word of the data in an SMLAD. ``unpacked_data``: the data are int8 pixels unpacked by SXTB16 (each four
    inputs as the pairs (0, 2) and (1, 3)), so each four columns are stored (0, 2, 1, 3); otherwise the
    data are int16 in their natural order."""
    rows = np.zeros((matrix.shape[0], width), dtype="<i2")
    rows[:, : matrix.shape[1]] = matrix
    if unpacked_data:
        rows = rows.reshape(matrix.shape[0], -1, 4)[:, :, [0, 2, 1, 3]].reshape(matrix.shape[0], width)
    return np.ascontiguousarray(rows).view("<i4")


def chan_records(op: QConv, terms: int) -> np.ndarray:
    """rt_chan records (bias, mult, rsh, lsh) of a conv: its shift s as 33 + rsh - lsh, so the kernels need
    only the high word of the 64-bit product; raises if an accumulator shifted left by lsh overflows."""
    shift = op.shift.astype(np.int64)
    rsh, lsh = np.maximum(shift - 33, 0), np.maximum(33 - shift, 0)
    bound = np.abs(op.bias.astype(np.int64)) + terms * 127 * 255
    if ((bound << lsh) >= 2**31).any():
        worst = int(np.argmax(bound << lsh))
        raise ScheduleError(f"layer {op.output}: channel {worst}'s requantization multiplier "
                            f"{op.mult[worst] / 2.0 ** op.shift[worst]:.3g} is too large for 32-bit accumulators")
    return np.stack((op.bias.astype(np.int64), op.mult.astype(np.int64), rsh, lsh), 1)


def requant_form(op: QConv, chan: np.ndarray) -> str:
    """How the kernels requantize this conv (rnnpool_rt.h): the rounded high word of every channel's product
    (all shifts 32), shifts right only, or some channel shifting left."""
    if (op.shift == HIGH_WORD_SHIFT).all():
        return "RT_RQ_HIGH_WORD"
    return "RT_RQ_SHIFT_LEFT" if (chan[:, 3] > 0).any() else "RT_RQ_SHIFT_RIGHT"


@dataclass
class MemoryPlan:
    """Where every RAM buffer of the program sits: its region ("ram", or "ccm" for an STM32's core-coupled
    RAM) and offset in that region's arena."""

    arena_bytes: int  # the main arena
    offsets: Dict[str, int]
    sizes: Dict[str, int]
    kinds: Dict[str, str]
    layers: Dict[str, str]
    regions: Dict[str, str] = field(default_factory=dict)
    ccm_bytes: int = 0  # the CCM arena (0: none)
    weight_bytes: int = 0
    scratch_parts: Dict[str, int] = field(default_factory=dict)
    wide_layers: List[str] = field(default_factory=list)  # dense convs with int16 weights (widened_convs)

    def as_dict(self) -> Dict:
        return {"arena_bytes": self.arena_bytes, "ccm_arena_bytes": self.ccm_bytes, "weight_bytes": self.weight_bytes,
                "buffers": [{"name": n, "bytes": self.sizes[n], "region": self.regions[n], "offset": self.offsets[n],
                             "kind": self.kinds[n], "layer": self.layers[n]}
                            for n in sorted(self.offsets, key=lambda n: (self.regions[n], self.offsets[n]))],
                "scratch_uses": self.scratch_parts, "int16_weight_layers": self.wide_layers}


# Flash the program may spend on int16 copies of dense weights (an SMLAD per stored word, no unpacking),
# and the weights' total it must stay under: the paper's STM32F439 has 2 MB of flash, the code ~0.1 MB.
WIDE_WEIGHTS_BYTES = 512 * 1024
WEIGHTS_FLASH_LIMIT = 1536 * 1024


def widened_convs(schedule: Schedule, budget: int = WIDE_WEIGHTS_BYTES) -> Dict[int, QConv]:
    """The dense convs (1x1 included) whose weights are stored widened to int16, by id: those read most
    often (once per output pixel) first, while the extra flash stays within ``budget`` bytes and all the
    weights within WEIGHTS_FLASH_LIMIT (a model whose int8 weights are larger gets none widened)."""
    uses: List[Tuple[int, QConv]] = []
    for node in schedule.nodes:
        if node.kind == "conv":
            out = schedule.maps[node.outputs[0]]
            uses += [(out.height * out.width, op) for op in node.ops if not op.depthwise]
        elif node.kind == "mbconv":
            m, out = schedule.maps[node.op.input], schedule.maps[node.op.output]
            if node.op.expand is not None:
                uses.append((m.height * m.width, node.op.expand))
            uses.append((out.height * out.width, node.op.project))
    int8_bytes = sum(op.weight.size for node in schedule.nodes if node.kind in ("conv", "mbconv")
                     for op in (node.ops if node.kind == "conv" else node.op.convs()))
    budget = min(budget, max(0, WEIGHTS_FLASH_LIMIT - int8_bytes))
    chosen: Dict[int, QConv] = {}
    spent = 0
    for _, op in sorted(uses, key=lambda use: -use[0]):
        extra = op.out_channels * conv_kdim(op)  # one more byte per weight
        if spent + extra <= budget:
            chosen[id(op)] = op
            spent += extra
    return chosen


def plan_memory(schedule: Schedule, ram_capacity: Optional[int] = None, ccm_capacity: int = 0) -> MemoryPlan:
    """Lay the buffers side by side (every one is live for the whole frame: the rings stream), largest first.

    With ``ram_capacity``, buffers that do not fit it go to the CCM region (up to ``ccm_capacity``), largest
    first; if they fit neither, the error names the largest buffers."""
    buffers = sorted(schedule.buffers, key=lambda b: (-b.size, b.name))
    regions = {b.name: "ram" for b in buffers}
    if ram_capacity is not None and sum(_aligned(b.size) for b in buffers) > ram_capacity:
        ram_total, ccm_total = sum(_aligned(b.size) for b in buffers), 0
        for b in buffers:
            if ram_total <= ram_capacity:
                break
            if ccm_total + _aligned(b.size) <= ccm_capacity:
                regions[b.name] = "ccm"
                ram_total -= _aligned(b.size)
                ccm_total += _aligned(b.size)
        if ram_total > ram_capacity:
            largest = ", ".join(f"{b.name} ({b.size:,} B)" for b in buffers[:4])
            raise ScheduleError(f"the buffers need {ram_total:,} B of RAM beyond {ccm_total:,} B of CCM; the target has "
                                f"{ram_capacity:,} B (+ {ccm_capacity:,} B CCM); largest: {largest}")
    offsets, sizes, kinds, layers, ends = {}, {}, {}, {}, {"ram": 0, "ccm": 0}
    for b in buffers:
        region = regions[b.name]
        offsets[b.name], sizes[b.name], kinds[b.name], layers[b.name] = ends[region], b.size, b.kind, b.layer
        ends[region] += _aligned(b.size)
    return MemoryPlan(ends["ram"], offsets, sizes, kinds, layers, regions, ends["ccm"], scratch_parts=dict(schedule.scratch))


class _Emitter:
    def __init__(self, schedule: Schedule, settings: DetectionSettings, model_name: str, plan: MemoryPlan,
                 wide_weights_bytes: int = WIDE_WEIGHTS_BYTES) -> None:
        self.s, self.graph, self.settings, self.model_name = schedule, schedule.graph, settings, model_name
        self.plan = plan
        self.constants: List[str] = []
        self.checks: List[str] = []
        self.weight_bytes = 0
        self.luts: Dict[bytes, str] = {}
        self.wide = widened_convs(schedule, wide_weights_bytes)
        plan.wide_layers = [op.output for op in self.wide.values()]
        self.names = [c_ident(n.name) for n in schedule.nodes]
        self.traced = [name for name, m in schedule.maps.items() if m.rows and name != schedule.graph.input]  # every map a layer writes
        self.map_index = {name: i for i, name in enumerate(self.traced)}

    # ---- constants -------------------------------------------------------------------------------
    def array(self, ctype: str, name: str, values: np.ndarray) -> str:
        self.constants.append(c_array(ctype, name, values))
        self.weight_bytes += max(1, np.asarray(values).size) * C_TYPES[ctype]
        return name

    def conv(self, op: QConv) -> str:
        n = c_ident(op.output)
        kdim = conv_kdim(op)
        columns = gathers_columns(op)
        wide = id(op) in self.wide
        if op.depthwise:
            w = self.array("int16_t", f"w_{n}", depthwise_weights(op, kdim))
        elif columns:  # (dx, dy, c), the order of the column ring, channels padded as the ring holds them
            weight = op.weight.transpose(0, 2, 1, 3)
            weight = np.pad(weight, ((0, 0), (0, 0), (0, 0), (0, column_channels(op) - op.in_channels)))
            rows = weight.reshape(op.out_channels, -1)
        else:  # (dy, dx, c)
            rows = op.weight.reshape(op.out_channels, -1)
        if not op.depthwise:
            w = (self.array("int32_t", f"w_{n}", widen_rows(rows, kdim, unpacked_data=True)) if wide
                 else self.array("int8_t", f"w_{n}", pack_rows(rows, kdim)))
        chan = chan_records(op, conv_kdim(op) if not op.depthwise else op.kernel ** 2)
        self.constants.append(f"static const rt_chan chan_{n}[{op.out_channels}] = {{\n    "
                              + ", ".join(f"{{{b}, {m}, {r}, {l}}}" for b, m, r, l in chan.tolist()) + "\n};\n")
        self.weight_bytes += chan.size * 4
        pad = self.array("int8_t", f"pad_{n}", op.pad_values) if op.pad_values is not None else "NULL"
        self.constants.append(
            f"static const rt_conv conv_{n} = {{{op.in_channels}, {op.out_channels}, {op.kernel}, {op.stride}, {op.padding}, "
            f"{int(op.depthwise)}, {op.maxout}, {kdim}, {int(columns)}, {int(wide)}, {requant_form(op, chan)}, "
            f"{op.input_zero_point}, {op.output_zero_point}, {op.act_min}, {op.act_max}, {w}, chan_{n}, {pad}}};\n")
        return f"conv_{n}"

    def lut(self, gate: np.ndarray, update: np.ndarray) -> str:
        table = np.concatenate((gate, update))
        key = table.tobytes()
        if key not in self.luts:
            self.luts[key] = self.array("int16_t", f"lut_{len(self.luts)}", table)
        return self.luts[key]

    def cell(self, cell: QFastGRNN, name: str, state_input: bool) -> str:
        """rt_fastgrnn: each unit's W (U) row widened to int16 pairs, followed by its requantization constants."""
        wdim, udim = padded(cell.input_size), padded(cell.hidden_size)
        w_words = widen_rows(cell.weight, wdim, unpacked_data=not state_input)
        u_words = widen_rows(cell.recurrent, udim, unpacked_data=False)  # the state's order
        shift = cell.u_shift.astype(np.int64)
        w_shift = cell.w_shift.astype(np.int64)
        rsh = np.maximum(w_shift, 0)
        rnd = np.where(rsh > 0, np.left_shift(1, np.maximum(rsh - 1, 0)), 0)
        w_rows = np.concatenate((w_words, np.stack((np.maximum(-w_shift, 0), rsh, rnd, cell.bias_gate), 1)), 1)
        u_rows = np.concatenate((u_words, np.stack((np.left_shift(1, shift - 1), shift,
                                                    cell.bias_update.astype(np.int64) - cell.bias_gate), 1)), 1)
        w = self.array("int32_t", f"wrows_{name}", w_rows)
        u = self.array("int32_t", f"urows_{name}", u_rows)
        self.constants.append(
            f"static const rt_fastgrnn cell_{name} = {{{cell.hidden_size}, {cell.input_size}, {wdim}, {udim}, "
            f"{cell.input_zero_point}, {w}, {u}, {cell.zeta}, {cell.nu}, {self.lut(cell.lut_gate, cell.lut_update)}}};\n")
        return f"cell_{name}"

    def arena(self, buffer: str, extra: int = 0) -> str:
        macro = "CCM" if self.plan.regions[buffer] == "ccm" else "ARENA"
        return f"{macro}({self.plan.offsets[buffer] + extra})"

    def scratch(self, offset: int) -> str:
        return self.arena("scratch", offset)

    def check(self, name: str, condition: str) -> None:
        self.checks.append(f"RT_STATIC_ASSERT({name}, {condition});")

    # ---- nodes -----------------------------------------------------------------------------------
    def produce(self, outputs: List[str], indent: str = "        ") -> str:
        lines = [f"{indent}rows_{c_ident(o)} = oy + 1;" for o in outputs]
        lines += [f"{indent}RT_TRACE({self.map_index[o]}, rt_ring_row(&ring_{c_ident(o)}, oy), {self.s.maps[o].row_bytes});"
                  for o in outputs]
        lines += [f"{indent}push_{c_ident(o)}();" for o in outputs if self.s.maps[o].consumers]
        return "\n".join(lines) + "\n"

    def window(self, node: Node, i: int) -> Dict[str, object]:
        m = self.s.maps[node.inputs[0]]
        op = node.op
        if node.kind == "conv":
            k, stride, pad = op.kernel, op.stride, op.padding
        elif node.kind == "mbconv":
            k, stride, pad = op.depthwise.kernel, op.depthwise.stride, op.depthwise.padding
        else:
            k, stride, pad = op.patch[0], op.stride[0], op.padding[0]
        return {"node": self.names[i], "index": i, "input": c_ident(m.name), "in_h": m.height, "k": k, "span": k - 1,
                "stride": stride, "pad": pad}

    def node_conv(self, node: Node, i: int) -> str:
        m = self.s.maps[node.inputs[0]]
        structs = [self.conv(op) for op in node.ops]
        out = self.s.maps[node.outputs[0]]
        norm = "NULL"
        if node.norm is not None:
            norm = f"&{self.l2norm_struct(node.norm, self.names[i])}"
        if len(structs) == 1 and node.norm is None:
            call = f"rt_conv_row(&{structs[0]}, rows, {m.width}, {out.width}, outs[0], SCRATCH)"
        else:
            self.constants.append(f"static const rt_conv *const convs_{self.names[i]}[{len(structs)}] = "
                                  f"{{{', '.join('&' + s for s in structs)}}};\n")
            call = f"rt_conv_group_row(convs_{self.names[i]}, {len(structs)}, {norm}, rows, {m.width}, {out.width}, outs, SCRATCH)"
        for op in node.ops:
            if gathers_columns(op):
                self.check(f"scratch_{c_ident(op.output)}",
                           f"{self.plan.sizes['scratch']} >= RT_COLUMN_RING_BYTES({op.kernel}, {op.stride}, {column_channels(op)})")
            elif not op.depthwise:
                self.check(f"scratch_{c_ident(op.output)}", f"{self.plan.sizes['scratch']} >= RT_CONV_SCRATCH_BYTES({conv_kdim(op)})")
        comment = f"conv {', '.join(node.outputs)} <- {m.name}" + (" (L2Norm as gathered)" if node.norm is not None else "")
        return _template("node_conv.c.tmpl").substitute(
            self.window(node, i), comment=comment, out_h=out.height, count=len(structs), call=call,
            out_rows=", ".join(f"rt_ring_row(&ring_{c_ident(o)}, oy)" for o in node.outputs), produce=self.produce(node.outputs))

    def node_mbconv(self, node: Node, i: int) -> str:
        op: QMBConv = node.op
        name = self.names[i]
        m, out = self.s.maps[op.input], self.s.maps[op.output]
        expand = f"&{self.conv(op.expand)}" if op.expand is not None else "NULL"
        dw, project = self.conv(op.depthwise), self.conv(op.project)
        add = "NULL"
        if op.add is not None:
            a = op.add
            if 255 * (abs(a.mult_a) + abs(a.mult_b)) + (1 << (a.shift - 1)) >= 2**31:
                raise ScheduleError(f"layer {op.output}: the residual add's multipliers ({a.mult_a}, {a.mult_b}) do not "
                                    f"fit the kernel's 32-bit sum")
            self.constants.append(f"static const rt_add add_{name} = {{{a.a_zero_point}, {a.b_zero_point}, "
                                  f"{a.output_zero_point}, {a.mult_a}, {a.mult_b}, {a.shift}}};\n")
            add = f"&add_{name}"
        hidden = op.depthwise.out_channels
        self.constants.append(f"static const rt_mbconv block_{name} = {{{expand}, &{dw}, &{project}, {add}, {m.height}, "
                              f"{m.width}, {out.width}, {hidden}}};\n")
        k = op.depthwise.kernel
        _, parts = mbconv_memory(op, m.width, node.mode)
        offsets, at = {}, 0
        for part, size in parts.items():
            offsets[part] = at
            at += _aligned(size)
        row = m.width * hidden
        if node.mode == "rolling":
            slots = ", ".join(self.arena(f"state_{node.name}", j * row) for j in range(k - 1))
            self.check(f"fifo_{name}", f"{parts['fifo']} >= RT_FIFO_PIXELS({k}) * {hidden}")
        elif node.mode == "recompute":
            slots = ", ".join(self.scratch(offsets["rows"] + j * row) for j in range(k))
        else:
            slots = "NULL"
        self.check(f"mbconv_{name}", f"{self.plan.sizes['scratch']} >= {at}")
        state = (f"static rt_mbconv_state state_{name} = {{{{{slots}}}, {self.scratch(offsets['fifo'])}, "
                 f"{self.scratch(offsets['dw_out'])}, (int32_t *){self.scratch(offsets['unpacked'])}, 0, "
                 f"{int(node.mode == 'recompute')}}};\n")
        self.states.append(state)
        self.resets.append(f"    state_{name}.expanded = 0;")
        prefetch = ""
        if node.keeps_rows:
            prefetch = (f"    if (next_{name} < {out.height}) {{\n        RT_TIC();\n        rt_mbconv_prefetch(&block_{name}, &state_{name}, "
                        f"&ring_{c_ident(op.input)}, rows_{c_ident(op.input)}, next_{name});\n        RT_TOC({i});\n    }}\n")
        comment = f"MobileNetV2 block {op.output} <- {op.input}" + (f" ({node.mode} expanded rows)" if node.mode else "")
        return _template("node_mbconv.c.tmpl").substitute(
            self.window(node, i), comment=comment, out_h=out.height, output=c_ident(op.output), prefetch=prefetch,
            produce=self.produce(node.outputs))

    def node_rnnpool(self, node: Node, i: int) -> str:
        op: QRNNPool = node.op
        name = self.names[i]
        m, out = self.s.maps[op.input], self.s.maps[op.output]
        c1 = self.cell(op.rnn1, f"{name}_1", state_input=False)
        c2 = self.cell(op.rnn2, f"{name}_2", state_input=True)
        mult = self.array("int64_t", f"om_{name}", op.out_mult)
        bias = self.array("int64_t", f"ob_{name}", op.out_bias)
        cache = self.s.cache_rows[node.name]
        w_out = out.width - op.pad[1]
        self.constants.append(
            f"static const rt_rnnpool pool_{name} = {{{op.patch[0]}, {op.patch[1]}, {op.stride[0]}, {op.stride[1]}, "
            f"{op.padding[0]}, {op.padding[1]}, {m.channels}, {m.height}, {m.width}, {w_out}, {op.pad[1]}, "
            f"{int(op.pad_mode == 'replicate')}, {int(cache)}, &{c1}, &{c2}, {mult}, {bias}, {op.out_shift}, {op.output_zero_point}}};\n")
        _, parts = rnnpool_memory(op, w_out, cache)
        offsets, at = {}, 0
        for part, size in parts.items():
            offsets[part] = at
            at += _aligned(size)
        self.check(f"rnnpool_{name}", f"{self.plan.sizes['scratch']} >= {at}")
        cache_ptr = f"(int16_t *){self.arena(f'state_{node.name}')}" if cache else "NULL"
        self.states.append(
            f"static rt_rnnpool_state state_{name} = {{{cache_ptr}, (int32_t *){self.scratch(offsets['wx'])}, "
            f"(int16_t *){self.scratch(offsets['col_sums'])}, (int16_t *){self.scratch(offsets['row_sums'])}, "
            f"(int32_t *){self.scratch(offsets['wx2'])}, (int16_t *){self.scratch(offsets['state'])}, "
            f"(int32_t *){self.scratch(offsets['unpacked'])}, RT_NONE}};\n")
        self.resets.append(f"    state_{name}.cached_through = RT_NONE;")
        row = f"rt_ring_row(&ring_{c_ident(op.output)}, oy)"
        if op.pad_mode == "replicate":
            pad_row = (f"            int8_t *dst = {row};\n            const int8_t *src = rt_ring_row(&ring_{c_ident(op.output)}, oy - 1);\n"
                       f"            if (dst != src) memcpy(dst, src, {out.row_bytes});\n")
        else:
            pad_row = f"            rt_rnnpool_pad_row(&pool_{name}, {row});\n"
        comment = (f"RNNPool {op.output} <- {op.input}: patch {op.patch}, stride {op.stride}"
                   + (", row sweeps shared with the next patch row" if cache else ""))
        return _template("node_rnnpool.c.tmpl").substitute(
            self.window(node, i), comment=comment, out_h=out.height, valid=rnnpool_valid_rows(op, m.height),
            output=c_ident(op.output), pad_row=pad_row, produce=self.produce(node.outputs))

    def l2norm_struct(self, op: QL2Norm, name: str) -> str:
        channels = self.graph.tensors[op.input].shape[0]
        self.check(f"norm_{name}", f"{channels} <= RT_MAX_NORM_CHANNELS")
        self.constants.append(f"static const rt_l2norm norm_{name} = {{{channels}, {op.input_zero_point}}};\n")
        return f"norm_{name}"

    def node_l2norm(self, node: Node, i: int) -> str:
        op: QL2Norm = node.op
        self.l2norm_struct(op, self.names[i])
        m = self.s.maps[op.input]
        return _template("node_l2norm.c.tmpl").substitute(
            node=self.names[i], index=i, comment=f"L2Norm {op.output} <- {op.input}", out_h=m.height, input=c_ident(op.input),
            output=c_ident(op.output), width=m.width, produce=self.produce(node.outputs))

    def node_avgpool(self, node: Node, i: int) -> str:
        op: QAvgPool = node.op
        name = self.names[i]
        m = self.s.maps[op.input]
        self.constants.append(f"static const rt_avgpool pool_{name} = {{{m.channels}, {op.count}, {op.input_zero_point}, "
                              f"{op.output_zero_point}, {op.mult}, {op.shift}}};\n")
        self.states.append(f"#define sums_{name} ((int32_t *){self.arena(f'state_{node.name}')})\n")
        self.resets.append(f"    memset(sums_{name}, 0, {4 * m.channels});")
        return _template("node_avgpool.c.tmpl").substitute(
            node=name, index=i, comment=f"global average pool {op.output} <- {op.input}", in_h=m.height, input=c_ident(op.input),
            output=c_ident(op.output), width=m.width, produce=self.produce(node.outputs, "            "))

    def node_detect(self, node: Node, i: int) -> str:
        index = node.head
        head = self.graph.heads[index]
        conf, loc = self.s.maps[head.conf], self.s.maps[head.loc]
        mult, threshold = self.key_params[index]
        t = self.graph.tensors[head.loc]
        self.constants.append(
            f"static const rt_head head_{index} = {{{mult}, {threshold}, {t.zero_point}, {c_float(t.scale)}, "
            f"{c_float(head.stride)}, {c_float(head.anchor_size)}, {self.anchor_offsets[index]}, {conf.width}}};\n")
        return _template("node_detect.c.tmpl").substitute(
            node=self.names[i], index=i, comment=f"head {index}: candidates from {head.conf}, {head.loc}", out_h=conf.height,
            conf=c_ident(head.conf), loc=c_ident(head.loc), hash=2 * index, conf_bytes=conf.row_bytes, loc_bytes=loc.row_bytes,
            head=index)

    def ccm_arena(self) -> str:
        if not self.plan.ccm_bytes:
            return ""
        return ("static union {\n    int64_t align;\n    int8_t bytes[%d];\n} ccm_storage __attribute__((section(\".ccm\")));\n"
                "#define CCM(offset) (ccm_storage.bytes + (offset))" % self.plan.ccm_bytes)

    # ---- program ---------------------------------------------------------------------------------
    def source(self) -> Tuple[str, str]:
        graph, s = self.graph, self.s
        self.states: List[str] = []
        self.resets: List[str] = []
        self.key_params = head_key_params(graph, self.settings) if graph.heads else []
        self.anchor_offsets, total = [], 0
        for head in graph.heads:
            self.anchor_offsets.append(total)
            _, h, w = graph.tensors[head.conf].shape
            total += h * w
        nodes = [getattr(self, f"node_{n.kind}")(n, i) for i, n in enumerate(s.nodes)]
        rings = []
        for name, m in s.maps.items():
            if m.rows and f"ring_{name}" in self.plan.offsets:
                rings.append(f"static const rt_ring ring_{c_ident(name)} = {{{self.arena(f'ring_{name}')}, {m.row_bytes}, {m.rows}}};")
                rings.append(f"static int rows_{c_ident(name)};")
                self.resets.append(f"    rows_{c_ident(name)} = 0;")
        self.resets += [f"    next_{n} = 0;" for n in self.names]
        prototypes = [f"static void push_{c_ident(name)}(void);" for name, m in s.maps.items() if m.consumers]
        pushes = []
        for name, m in s.maps.items():
            if m.consumers:
                calls = "".join(f"    run_{self.names[s.nodes.index(n)]}();\n" for n in m.consumers)
                pushes.append(f"static void push_{c_ident(name)}(void) {{\n{calls}}}\n")
        complete = " && ".join(f"next_{self.names[i]} == {n.out_rows if n.kind != 'avgpool' else s.maps[n.inputs[0]].height}"
                               for i, n in enumerate(s.nodes)) or "1"
        logits_api = ("const int8_t *model_logits(void) { return rt_ring_row(&ring_%s, 0); }\n" % c_ident(graph.logits)
                      if graph.logits else "const int8_t *model_logits(void) { return NULL; }\n")
        if graph.logits:
            self.resets.append("    (void)model_hashes;")
        c, h, w = graph.input_shape
        source = _template("model.c.tmpl").substitute(
            model=self.model_name, arena_bytes=self.plan.arena_bytes, arena_alloc=max(ALIGN, self.plan.arena_bytes),
            ccm_arena=self.ccm_arena(), constants="".join(self.constants), scratch=self.scratch(0), checks="\n".join(self.checks),
            rings="\n".join(rings), states="".join(self.states), layer_names=", ".join(f'"{n.name}"' for n in s.nodes),
            prototypes="\n".join(prototypes), nodes="\n".join(nodes), pushes="\n".join(pushes), reset="\n".join(self.resets) + "\n",
            input=c_ident(graph.input), complete=complete, logits_api=logits_api, num_maps=len(self.traced),
            map_names=", ".join(f'"{n}"' for n in self.traced))
        settings = self.settings
        num_classes = graph.tensors[graph.logits].shape[0] if graph.logits else 0
        header = _template("model.h.tmpl").substitute(
            model=self.model_name, height=h, width=w, channels=c, row_bytes=w * c, num_heads=len(graph.heads),
            num_classes=num_classes, num_outputs=2 * len(graph.heads) if graph.heads else 1, num_layers=len(s.nodes),
            arena_bytes=self.plan.arena_bytes, max_candidates=settings.max_candidates, max_detections=settings.max_detections,
            nms_threshold=c_float(settings.nms_threshold), key_bits=graph.key_bits)
        self.plan.weight_bytes = self.weight_bytes
        return header, source


def generate_c(graph_or_schedule: Union[QuantizedGraph, Schedule], out_dir: Union[str, Path],
               settings: DetectionSettings = DetectionSettings(), model_name: str = "model",
               ram_capacity: Optional[int] = None, ccm_capacity: int = 0,
               wide_weights_bytes: int = WIDE_WEIGHTS_BYTES) -> MemoryPlan:
    """Write the C program for a quantized graph (or its schedule) into ``out_dir`` (created); returns its
    memory plan. ``ram_capacity`` / ``ccm_capacity``: bytes for buffers in the target's two RAM regions;
    ``wide_weights_bytes``: flash for int16 copies of the most used dense weights (0: none)."""
    schedule = graph_or_schedule if isinstance(graph_or_schedule, Schedule) else build_schedule(graph_or_schedule)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    emitter = _Emitter(schedule, settings, model_name, plan_memory(schedule, ram_capacity, ccm_capacity), wide_weights_bytes)
    header, source = emitter.source()
    (out / "model.h").write_text(header)
    (out / "model.c").write_text(source)
    for name in RUNTIME_FILES:
        shutil.copyfile(RUNTIME_DIR / name, out / name)
    report = emitter.plan.as_dict()
    report["layers"] = [{"index": i, "name": n.name, "kind": n.kind, "outputs": n.outputs} for i, n in enumerate(schedule.nodes)]
    (out / "memory_report.json").write_text(json.dumps(report, indent=2))
    return emitter.plan


__all__ = ["MemoryPlan", "RUNTIME_FILES", "WEIGHTS_FLASH_LIMIT", "WIDE_WEIGHTS_BYTES", "generate_c", "pack_rows", "plan_memory", "widened_convs"]
