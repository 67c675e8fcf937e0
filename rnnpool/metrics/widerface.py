"""WIDER FACE evaluation: the official protocol, in NumPy.

As the official script (``widerface_evaluate``) does: scores are normalised to [0, 1] over the whole set;
for each setting (easy / medium / hard) only the boxes in that setting's keep-list count as faces, and a
detection matching (IoU >= 0.5, +1-pixel box areas) a face outside the keep-list is ignored rather than
counted as a false positive; precision and recall are accumulated over 1000 score thresholds; AP is the
VOC area under the interpolated curve. The paper also reports AP on images with at most 3 faces.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

SETTINGS = ("easy", "medium", "hard")
THRESHOLDS = 1000


@dataclass
class ImageTruth:
    """Ground-truth boxes (G, 4) as x, y, w, h and, per setting, the 0-based indices of boxes that count."""

    boxes: np.ndarray
    keep: Dict[str, np.ndarray]


def load_widerface_mat(gt_dir: Union[str, Path]) -> Dict[str, ImageTruth]:
    """The official ``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat``, keyed by image name."""
    from scipy.io import loadmat

    gt_dir = Path(gt_dir)
    files = {name: gt_dir / f"wider_{name}_val.mat" for name in ("face",) + SETTINGS}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"WIDER FACE ground truth missing: {', '.join(missing)}")
    face = loadmat(files["face"])
    keeps = {s: loadmat(files[s])["gt_list"] for s in SETTINGS}
    truth: Dict[str, ImageTruth] = {}
    for e in range(len(face["event_list"])):
        for j in range(len(face["file_list"][e][0])):
            name = str(face["file_list"][e][0][j][0][0])
            boxes = face["face_bbx_list"][e][0][j][0].astype(np.float64).reshape(-1, 4)
            keep = {s: keeps[s][e][0][j][0].reshape(-1).astype(np.int64) - 1 for s in SETTINGS}
            truth[name] = ImageTruth(boxes, keep)
    return truth


def size_setting_names(size_bins: Sequence[float]) -> List[str]:
    """Setting names of face-size bins with edges ``size_bins`` (pixels, ascending): ``<16px``, ``16-32px``, ...,
    ``>=64px``."""
    edges = [float(e) for e in size_bins]
    if any(e <= 0 for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"face size bin edges must be positive and ascending, got {list(size_bins)}")
    if not edges:
        return []
    inner = [f"{a:g}-{b:g}px" for a, b in zip(edges, edges[1:])]
    return [f"<{edges[0]:g}px", *inner, f">={edges[-1]:g}px"]


def parse_size_bins(text: str) -> List[float]:
    """Face-size bin edges from text like ``16,32,64`` (pixels, positive and ascending); ValueError otherwise."""
    try:
        edges = [float(v) for v in text.split(",")]
        size_setting_names(edges)
    except ValueError:
        raise ValueError(f"size bins are ascending positive pixel edges like 16,32,64, got {text!r}") from None
    return edges


def truth_from_boxes(boxes: Dict[str, np.ndarray], invalid: Optional[Dict[str, np.ndarray]] = None,
                     size_bins: Sequence[float] = ()) -> Dict[str, ImageTruth]:
    """Ground truth for data without keep-lists: one setting "all" keeping every box not flagged invalid.

    ``size_bins`` (edges in pixels, e.g. ``(16, 32, 64)``) adds a setting per face size, sqrt(w * h), named by
    :func:`size_setting_names`: in each, the valid faces of that size count and every other face is ignored
    (a detection of it is neither a hit nor a false alarm, as WIDER FACE treats faces outside a setting).
    """
    names = size_setting_names(size_bins)
    edges = np.array([0.0, *size_bins, np.inf])
    truth = {}
    for name, b in boxes.items():
        b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
        bad = np.zeros(len(b), bool) if invalid is None or name not in invalid else np.asarray(invalid[name], bool)
        keep = {"all": np.flatnonzero(~bad)}
        size = np.sqrt(np.clip(b[:, 2], 0, None) * np.clip(b[:, 3], 0, None))
        for i, setting in enumerate(names):
            keep[setting] = np.flatnonzero(~bad & (size >= edges[i]) & (size < edges[i + 1]))
        truth[name] = ImageTruth(b, keep)
    return truth


def _overlaps(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of x1y1x2y2 boxes with the official +1-pixel areas, (P, G)."""
    area_p = (pred[:, 2] - pred[:, 0] + 1) * (pred[:, 3] - pred[:, 1] + 1)
    area_g = (gt[:, 2] - gt[:, 0] + 1) * (gt[:, 3] - gt[:, 1] + 1)
    iw = np.minimum(pred[:, None, 2], gt[None, :, 2]) - np.maximum(pred[:, None, 0], gt[None, :, 0]) + 1
    ih = np.minimum(pred[:, None, 3], gt[None, :, 3]) - np.maximum(pred[:, None, 1], gt[None, :, 1]) + 1
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    return inter / (area_p[:, None] + area_g[None, :] - inter)


def _image_eval(pred: np.ndarray, gt: np.ndarray, counted: np.ndarray, iou: float) -> Tuple[np.ndarray, np.ndarray]:
    """Per detection (score-sorted): faces recalled so far, and whether it counts as a proposal."""
    p = pred[:, :4].copy()
    g = gt.copy()
    p[:, 2:] += p[:, :2]
    g[:, 2:] += g[:, :2]
    overlaps = _overlaps(p, g)
    recalled = np.zeros(len(g))
    proposal = np.ones(len(p))
    recall_at = np.zeros(len(p))
    for h in range(len(p)):
        best = overlaps[h].argmax()
        if overlaps[h, best] >= iou:
            if not counted[best]:
                recalled[best], proposal[h] = -1, -1  # matched an ignored face: neither hit nor false alarm
            elif recalled[best] == 0:
                recalled[best] = 1
        recall_at[h] = (recalled == 1).sum()
    return recall_at, proposal


def _image_pr(scores: np.ndarray, proposal: np.ndarray, recall_at: np.ndarray) -> np.ndarray:
    """(proposals, faces recalled) at each threshold 1 - (t + 1) / 1000 for descending ``scores``."""
    thresholds = 1 - (np.arange(THRESHOLDS) + 1) / THRESHOLDS
    last = np.searchsorted(-scores, -thresholds, side="right") - 1  # last detection with score >= threshold
    proposals = np.cumsum(proposal == 1)
    pr = np.zeros((THRESHOLDS, 2))
    ok = last >= 0
    pr[ok, 0] = proposals[last[ok]]
    pr[ok, 1] = recall_at[last[ok]]
    return pr


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope (VOC)."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    for i in range(len(mpre) - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    idx = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def evaluate_widerface(predictions: Dict[str, np.ndarray], truth: Dict[str, ImageTruth], settings: Optional[Sequence[str]] = None,
                       iou: float = 0.5, max_faces: Optional[int] = None) -> Dict[str, Dict[str, object]]:
    """AP per setting. ``predictions[name]`` is (K, 5): x, y, w, h, score; missing images count as empty.

    ``max_faces`` keeps only images with at most that many ground-truth boxes (the paper's <= 3 split).
    Returns ``{setting: {"ap", "precision", "recall", "faces"}}``.
    """
    names = [n for n in truth if max_faces is None or len(truth[n].boxes) <= max_faces]
    settings = list(settings or next(iter(truth.values())).keep.keys())
    preds = {}
    for n in names:
        p = np.asarray(predictions.get(n, np.zeros((0, 5))), dtype=np.float64).reshape(-1, 5)
        preds[n] = p[np.argsort(-p[:, 4], kind="stable")]
    scores = np.concatenate([p[:, 4] for p in preds.values()]) if preds else np.zeros(0)
    lo, hi = (scores.min(), scores.max()) if len(scores) else (0.0, 1.0)
    scale = hi - lo if hi > lo else 1.0
    results = {}
    for setting in settings:
        curve, faces = np.zeros((THRESHOLDS, 2)), 0
        for n in names:
            gt = truth[n]
            keep = gt.keep[setting]
            faces += len(keep)
            p = preds[n]
            if len(gt.boxes) == 0 or len(p) == 0:
                continue
            counted = np.zeros(len(gt.boxes), bool)
            counted[keep] = True
            recall_at, proposal = _image_eval(p, gt.boxes, counted, iou)
            curve += _image_pr((p[:, 4] - lo) / scale, proposal, recall_at)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.nan_to_num(curve[:, 1] / curve[:, 0])
        recall = curve[:, 1] / max(faces, 1)
        results[setting] = {"ap": voc_ap(recall, precision), "precision": precision, "recall": recall, "faces": faces}
    return results


def ap_summary(predictions: Dict[str, np.ndarray], truth: Dict[str, ImageTruth]) -> Dict[str, object]:
    """The figures reported from one set of predictions against :func:`truth_from_boxes` ground truth: ``ap`` and
    ``faces`` of the "all" setting, ``ap_le3`` (images with at most 3 faces), ``ap_by_size`` and
    ``faces_by_size`` of its face-size settings (empty without ``size_bins``), and ``all``, the "all" setting's
    whole result (its precision-recall curve)."""
    settings = evaluate_widerface(predictions, truth)
    sizes = {s: r for s, r in settings.items() if s != "all"}
    return {"ap": settings["all"]["ap"], "ap_le3": evaluate_widerface(predictions, truth, ["all"], max_faces=3)["all"]["ap"],
            "faces": settings["all"]["faces"], "ap_by_size": {s: r["ap"] for s, r in sizes.items()},
            "faces_by_size": {s: r["faces"] for s, r in sizes.items()}, "all": settings["all"]}


def plot_pr(results: Dict[str, Dict[str, object]], path: Union[str, Path], title: str = "WIDER FACE") -> None:
    """Precision-recall curves of :func:`evaluate_widerface` results, one per setting, AP in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5))
    for setting, r in results.items():
        ax.plot(r["recall"], r["precision"], label=f"{setting}: AP {r['ap']:.3f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["SETTINGS", "ImageTruth", "ap_summary", "evaluate_widerface", "load_widerface_mat", "parse_size_bins", "plot_pr",
           "size_setting_names", "truth_from_boxes", "voc_ap"]
