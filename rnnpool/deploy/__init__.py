"""Deployment: streaming (band-by-band) RNNPool."""
from .stream import RNNPoolStream, measure_streaming, stream_rnnpool, stream_working_memory

__all__ = ["RNNPoolStream", "measure_streaming", "stream_rnnpool", "stream_working_memory"]
