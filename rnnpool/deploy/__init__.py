"""Deployment: int8 quantization with a NumPy integer reference, the row-streaming schedule, C code
generation for microcontrollers (host gcc or a Cortex-M4 in QEMU), and streaming RNNPool in PyTorch."""
from .codegen import MemoryPlan, generate_c
from .export import ExportError, export_c
from .int8_reference import DetectionSettings, int8_detections, run_int8
from .quantize import QuantizationError, QuantizedGraph, calibrate, quantize_graph, quantize_model
from .schedule import Schedule, ScheduleError, build_schedule
from .stream import RNNPoolStream, measure_streaming, stream_rnnpool, stream_working_memory

__all__ = ["DetectionSettings", "ExportError", "MemoryPlan", "QuantizationError", "QuantizedGraph", "RNNPoolStream",
           "Schedule", "ScheduleError", "build_schedule", "calibrate", "export_c", "generate_c", "int8_detections",
           "measure_streaming", "quantize_graph", "quantize_model", "run_int8", "stream_rnnpool", "stream_working_memory"]
