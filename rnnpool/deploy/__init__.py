"""Deployment: streaming RNNPool, int8 quantization with a NumPy integer reference, and C code generation
for microcontrollers (host gcc or a Cortex-M4 in QEMU)."""
from .codegen import ExportPlan, format_plan, generate_c
from .export import ExportError, export_c
from .int8_reference import DetectionSettings, int8_detections, run_int8
from .quantize import QuantizedGraph, calibrate, quantize_graph, quantize_model
from .stream import RNNPoolStream, measure_streaming, stream_rnnpool, stream_working_memory

__all__ = ["DetectionSettings", "ExportError", "ExportPlan", "QuantizedGraph", "RNNPoolStream", "calibrate", "export_c",
           "format_plan", "generate_c", "int8_detections", "measure_streaming", "quantize_graph", "quantize_model",
           "run_int8", "stream_rnnpool", "stream_working_memory"]
