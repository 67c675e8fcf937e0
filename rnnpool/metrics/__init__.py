"""Evaluation metrics that need no training machinery: the WIDER FACE protocol (AP, easy/medium/hard)."""
from .widerface import ImageTruth, evaluate_widerface, load_widerface_mat, plot_pr, size_setting_names, truth_from_boxes

__all__ = ["ImageTruth", "evaluate_widerface", "load_widerface_mat", "plot_pr", "size_setting_names", "truth_from_boxes"]
