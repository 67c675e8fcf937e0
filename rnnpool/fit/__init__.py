"""rnnpool fit: make any CNN fit a RAM budget by placing RNNPool automatically (search + module surgery)."""
from .search import Candidate, FitReport, describe, fit_model, save_fitted
from .surgery import Cut, find_trunk, last_rnnpool, stem_length, with_last_rnnpool

__all__ = ["Candidate", "Cut", "FitReport", "describe", "find_trunk", "fit_model", "last_rnnpool", "save_fitted",
           "stem_length", "with_last_rnnpool"]
