"""The RAM a deployed program claims, predicted from its schedule alone (no compiler, no emulator).

On the Cortex-M4 the claim is measured as static data + the stack's painted high-water mark + one
exception frame (:func:`rnnpool.deploy.programs.measure_m4`). Its parts, predicted here:

- the arena: every ring, state and the shared scratch of the schedule, as codegen lays them out;
- the program's other statics: detection candidates, a few counters per layer and map, the kernels' state
  records, the C library's and the handlers' fixed data (sizes of the structs in ``c/rnnpool_rt.h``);
- the stack: the runtime's call chain is the same for every model (1.4-1.6 KiB measured), so a constant;
- one exception frame (an interrupt at the deepest point).

``rnnpool profile --convention stream`` prints this prediction; the M4 benchmark and tests check it against
the measurement (within 2%). The export's planner budget is the RAM left for the arena once the rest is
reserved.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict

from .int8_reference import DetectionSettings
from .programs import EXCEPTION_FRAME_BYTES, HANDLER_STACK_BYTES
from .quantize import QuantizedGraph
from .schedule import Schedule, build_schedule

STACK_BYTES = 1600  # the program's stack: 1,464-1,592 B painted for every zoo model (the kernels' frames)
STACK_MARGIN = 256  # the planner leaves this much more, for a model whose stack is deeper than the zoo's
CANDIDATE_BYTES = 24  # sizeof(rt_detection)
LIBRARY_STATIC_BYTES = 96 + 32  # newlib's reentrancy data and the platform's counters
NODE_STATIC_BYTES = 8  # a layer's next-row counter and instruction tally
MAP_STATIC_BYTES = 4  # a map's produced-rows counter
STATE_RECORD_BYTES = {"mbconv": 48, "rnnpool": 32}  # rt_mbconv_state, rt_rnnpool_state


@dataclass
class RamPrediction:
    """Bytes: ``total`` = ``arena`` + ``statics`` + ``stack`` + ``exception_frame``."""

    arena: int
    statics: int
    stack: int
    exception_frame: int

    @property
    def total(self) -> int:
        return self.arena + self.statics + self.stack + self.exception_frame

    def as_dict(self) -> Dict[str, int]:
        return {**asdict(self), "total": self.total}


def static_bytes(graph: QuantizedGraph, num_nodes: int, num_maps: int, state_records: int,
                 settings: DetectionSettings = DetectionSettings()) -> int:
    """The program's statics besides the arena."""
    candidates = settings.max_candidates * CANDIDATE_BYTES if graph.heads else 0
    return (candidates + NODE_STATIC_BYTES * num_nodes + MAP_STATIC_BYTES * num_maps + state_records
            + LIBRARY_STATIC_BYTES + HANDLER_STACK_BYTES)


def _schedule_statics(schedule: Schedule, settings: DetectionSettings) -> int:
    records = sum(STATE_RECORD_BYTES.get(n.kind, 0) for n in schedule.nodes)
    maps = sum(1 for m in schedule.maps.values() if m.rows)
    return static_bytes(schedule.graph, len(schedule.nodes), maps, records, settings)


def predict_ram(schedule: Schedule, settings: DetectionSettings = DetectionSettings()) -> RamPrediction:
    """What the program for ``schedule`` will claim on the M4 (static + stack + exception frame)."""
    return RamPrediction(schedule.total_bytes, _schedule_statics(schedule, settings), STACK_BYTES, EXCEPTION_FRAME_BYTES)


def arena_budget(graph: QuantizedGraph, ram_bytes: int, settings: DetectionSettings = DetectionSettings()) -> int:
    """Bytes the planner may give the arena within ``ram_bytes``: the rest is reserved for the statics (those
    of the schedule; the planner's modes do not change them), the stack with a margin and the exception frame."""
    statics = _schedule_statics(build_schedule(graph), settings)
    return ram_bytes - statics - STACK_BYTES - STACK_MARGIN - EXCEPTION_FRAME_BYTES


__all__ = ["RamPrediction", "STACK_BYTES", "arena_budget", "predict_ram", "static_bytes"]
