"""Face detection data: WIDER FACE ground-truth text, or simple JSON / CSV box lists.

WIDER FACE text: an image path, a face count, then one line per face ``x y w h blur expression
illumination invalid occlusion pose`` (an image with no face has count 0 and one line of zeros).
JSON: ``{"images": [{"file": "a.jpg", "boxes": [[x, y, w, h], ...]}, ...]}``. CSV: columns
``image,x,y,w,h`` (more columns are ignored), one row per face.
A malformed line, a zero-area box or a box outside its image stops with the file and line named; with
``skip_bad`` the box (or unreadable image) is dropped and counted in ``problems``.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.ops import box_convert
from torchvision.transforms import v2

from .classification import BadSampleError
from ..errors import InvalidInputError, RnnpoolError


class AnnotationError(RnnpoolError, ValueError):
    """A malformed annotation; the message names the file and line."""


@dataclass
class FaceRecord:
    """One image: its path, boxes (K, 4) as x, y, w, h, and the WIDER 'invalid' flags (K,)."""

    path: Path
    boxes: np.ndarray
    invalid: np.ndarray
    name: str = ""


@dataclass
class FaceAnnotations:
    """The usable images, and what ``skip_bad`` dropped (one message per box or image, file and line named)."""

    records: List[FaceRecord]
    problems: List[str] = field(default_factory=list)


def _resolve(root: Path, name: str) -> Path:
    for candidate in (root / name, root / "images" / name):
        if candidate.exists():
            return candidate
    return root / name


def _check_boxes(record: FaceRecord, where: List[str], skip_bad: bool, problems: List[str]) -> Optional[FaceRecord]:
    """Drop (skip_bad) or reject an unreadable image, zero-area boxes and boxes outside the image."""
    try:
        with Image.open(record.path) as img:
            width, height = img.size
            img.verify()
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        message = f"cannot read image {record.path}: {err}"
        if not skip_bad:
            raise BadSampleError(message + " (use --skip-bad to skip such images)") from None
        problems.append(message)
        return None
    keep = np.ones(len(record.boxes), bool)
    for i, (x, y, w, h) in enumerate(record.boxes):
        reason = None
        if w <= 0 or h <= 0:
            reason = f"zero-area box {[x, y, w, h]}"
        elif x < 0 or y < 0 or x + w > width + 1 or y + h > height + 1:
            reason = f"box {[x, y, w, h]} outside the {width}x{height} image"
        if reason:
            message = f"{where[i]}: {reason} ({record.path.name})"
            if not skip_bad:
                raise AnnotationError(message + " (use --skip-bad to drop such boxes)")
            problems.append(message)
            keep[i] = False
    return FaceRecord(record.path, record.boxes[keep], record.invalid[keep], record.name)


def read_widerface_txt(path: Path, root: Path, skip_bad: bool) -> FaceAnnotations:
    lines = path.read_text().splitlines()
    records, problems, i = [], [], 0
    while i < len(lines):
        name = lines[i].strip()
        if not name:
            i += 1
            continue
        if i + 1 >= len(lines) or not lines[i + 1].strip().isdigit():
            got = lines[i + 1].strip() if i + 1 < len(lines) else "end of file"
            raise AnnotationError(f"{path}:{i + 2}: expected the face count of {name}, got {got!r}")
        count = int(lines[i + 1])
        rows, where = [], []
        for k in range(max(count, 1)):
            line_no = i + 3 + k
            values = lines[line_no - 1].split() if line_no - 1 < len(lines) else []
            try:
                numbers = [float(v) for v in values]
            except ValueError:
                numbers = []
            if len(numbers) < 4:
                raise AnnotationError(f"{path}:{line_no}: expected 'x y w h ...' for a face of {name}, got {' '.join(values)!r}")
            if count:
                rows.append(numbers[:4] + [numbers[7] if len(numbers) > 7 else 0.0])
                where.append(f"{path}:{line_no}")
        arr = np.array(rows, dtype=np.float64).reshape(-1, 5)
        record = FaceRecord(_resolve(root, name), arr[:, :4], arr[:, 4] > 0, name)
        checked = _check_boxes(record, where, skip_bad, problems)
        if checked is not None:
            records.append(checked)
        i += 2 + max(count, 1)
    return FaceAnnotations(records, problems)


def _from_rows(rows: Dict[str, List[Tuple[List[float], str]]], root: Path, skip_bad: bool) -> FaceAnnotations:
    records, problems = [], []
    for name, faces in rows.items():
        boxes = np.array([f[0] for f in faces], dtype=np.float64).reshape(-1, 4)
        record = FaceRecord(_resolve(root, name), boxes, np.zeros(len(boxes), bool), name)
        checked = _check_boxes(record, [f[1] for f in faces], skip_bad, problems)
        if checked is not None:
            records.append(checked)
    return FaceAnnotations(records, problems)


def read_box_json(path: Path, root: Path, skip_bad: bool) -> FaceAnnotations:
    try:
        data = json.loads(path.read_text())
        images = data["images"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise AnnotationError(f"{path}: expected {{'images': [{{'file': ..., 'boxes': [[x, y, w, h], ...]}}]}}: {err}") from None
    rows: Dict[str, List[Tuple[List[float], str]]] = {}
    for n, entry in enumerate(images):
        if not isinstance(entry, dict) or "file" not in entry:
            raise AnnotationError(f"{path}: images[{n}] has no 'file'")
        rows[entry["file"]] = []
        for k, box in enumerate(entry.get("boxes", [])):
            if not (isinstance(box, (list, tuple)) and len(box) == 4):
                raise AnnotationError(f"{path}: images[{n}].boxes[{k}] is not [x, y, w, h]: {box!r}")
            rows[entry["file"]].append(([float(v) for v in box], f"{path}: images[{n}].boxes[{k}]"))
    return _from_rows(rows, root, skip_bad)


def read_box_csv(path: Path, root: Path, skip_bad: bool) -> FaceAnnotations:
    rows: Dict[str, List[Tuple[List[float], str]]] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"image", "x", "y", "w", "h"} - set(reader.fieldnames or [])
        if missing:
            raise AnnotationError(f"{path}:1: missing columns {sorted(missing)} (need image,x,y,w,h)")
        for line_no, row in enumerate(reader, start=2):
            try:
                box = [float(row[k]) for k in ("x", "y", "w", "h")]
            except (TypeError, ValueError):
                raise AnnotationError(f"{path}:{line_no}: box values must be numbers, got {row}") from None
            rows.setdefault(row["image"], []).append((box, f"{path}:{line_no}"))
    return _from_rows(rows, root, skip_bad)


def load_face_annotations(path: Union[str, Path], image_root: Optional[Union[str, Path]] = None, skip_bad: bool = False) -> FaceAnnotations:
    """Read ``.txt`` (WIDER FACE), ``.json`` or ``.csv`` annotations; images resolve against ``image_root``
    (default: the annotation file's folder, or its ``images/`` subfolder)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist")
    root = Path(image_root) if image_root else path.parent
    readers = {".txt": read_widerface_txt, ".json": read_box_json, ".csv": read_box_csv}
    if path.suffix.lower() not in readers:
        raise InvalidInputError(f"{path}: unknown annotation format {path.suffix!r}; expected .txt (WIDER FACE), .json or .csv")
    return readers[path.suffix.lower()](path, root, skip_bad)


def detection_transforms(size: int, train: bool, in_channels: int = 3) -> Callable:
    """S3FD-style augmentation for training (photometric distortion, zoom-out, IoU crop, flip), then a square
    resize to ``size``; evaluation only resizes. Boxes follow every step (torchvision.transforms.v2)."""
    steps: List[Callable] = [v2.ToImage()]
    if in_channels == 1:
        steps.append(v2.Grayscale())
    if train:
        steps += [v2.RandomPhotometricDistort(p=0.5), v2.RandomZoomOut(fill=0, side_range=(1.0, 2.0), p=0.3),
                  v2.RandomIoUCrop(), v2.RandomHorizontalFlip()]
    steps += [v2.Resize((size, size), antialias=True), v2.SanitizeBoundingBoxes(min_size=1.0), v2.ToDtype(torch.float32, scale=True)]
    return v2.Compose(steps)


class FaceDataset(Dataset):
    """(image (C, S, S) float in [0, 1], {"boxes": (K, 4) xyxy, "labels": (K,)}) from annotations.

    Invalid-flagged faces are left out of training targets (they stay in evaluation as ignored faces).
    """

    def __init__(self, annotations: FaceAnnotations, transform: Callable) -> None:
        self.records = annotations.records
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        record = self.records[index]
        try:
            with Image.open(record.path) as img:
                img = img.convert("RGB")
        except (OSError, UnidentifiedImageError) as err:
            raise BadSampleError(f"cannot read image {record.path}: {err}") from None
        boxes = record.boxes[~record.invalid]
        xyxy = box_convert(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4), "xywh", "xyxy")  # annotations' edge format
        target = {"boxes": tv_tensors.BoundingBoxes(xyxy, format="XYXY", canvas_size=(img.height, img.width)),
                  "labels": torch.ones(len(xyxy), dtype=torch.long)}
        image, target = self.transform(img, target)
        return image, {"boxes": target["boxes"].as_subclass(torch.Tensor), "labels": target["labels"]}


def collate_detection(batch):
    """Stack images (same size after the transform); keep targets as a list."""
    return torch.stack([b[0] for b in batch]), [b[1] for b in batch]
