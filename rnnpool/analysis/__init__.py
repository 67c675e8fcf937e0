"""Peak-RAM, MAdds and parameter analysis of any PyTorch model (the paper's Sec. 3 and Table 1)."""
from .memory import CONVENTIONS, register_block_rule
from .profile import DTYPE_BYTES, LayerStats, Profile, compare_table, format_bytes, profile_model
from .trace import trace_model

__all__ = ["CONVENTIONS", "DTYPE_BYTES", "LayerStats", "Profile", "compare_table", "format_bytes", "profile_model",
           "register_block_rule", "trace_model"]
