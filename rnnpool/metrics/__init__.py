"""Evaluation metrics that need no training machinery: the WIDER FACE protocol (AP, easy/medium/hard)."""
from .widerface import (ImageTruth, ap_summary, evaluate_widerface, load_widerface_mat, parse_size_bins, plot_pr, size_setting_names,
                        truth_from_boxes)

__all__ = ["ImageTruth", "ap_summary", "evaluate_widerface", "load_widerface_mat", "parse_size_bins", "plot_pr", "size_setting_names",
           "truth_from_boxes"]
