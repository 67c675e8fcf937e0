"""Image classification data: ImageFolder layout and the Visual Wake Words person / no-person layout.

Bad samples (unreadable or corrupt images) stop with the file named, or with ``skip_bad`` are dropped by
:func:`collate_skipping_bad` and counted by the training loop.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import transforms as T
from ..errors import InvalidInputError, RnnpoolError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")
VWW_CLASSES = ("no_person", "person")  # label 0, 1
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # the normalisation every model here expects


class BadSampleError(RnnpoolError, RuntimeError):
    """An image that cannot be read; the message names the file."""


class ImageClassFolder(Dataset):
    """``root/<class>/<image>``; classes sorted by name, or given as ``classes`` (in label order)."""

    def __init__(self, root: Union[str, Path], transform: Optional[Callable] = None,
                 classes: Optional[Sequence[str]] = None, skip_bad: bool = False) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset folder {self.root} does not exist")
        found = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        self.classes = list(classes) if classes is not None else found
        missing = [c for c in self.classes if c not in found]
        if missing or not self.classes:
            raise InvalidInputError(f"{self.root}: expected class folders {self.classes or '(any)'}, found {found}")
        self.samples: List[Tuple[Path, int]] = []
        for label, name in enumerate(self.classes):
            files = sorted(p for p in (self.root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            self.samples += [(p, label) for p in files]
        if not self.samples:
            raise InvalidInputError(f"{self.root}: no images ({', '.join(IMAGE_SUFFIXES)}) in the class folders")
        self.transform = transform
        self.skip_bad = skip_bad

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError) as err:
            if self.skip_bad:
                return None
            raise BadSampleError(f"cannot read image {path}: {err} (use --skip-bad to skip such files)") from None
        return (self.transform(img) if self.transform else img), label


def collate_skipping_bad(batch):
    """Default collation of the readable samples; returns (images, labels, number skipped)."""
    good = [b for b in batch if b is not None]
    if not good:
        return None, None, len(batch)
    images, labels = torch.utils.data.default_collate(good)
    return images, labels, len(batch) - len(good)


def classification_transforms(input_size: int, train: bool, min_scale: float = 0.08, normalize: bool = True) -> Callable:
    """Random-resized crop (scale min_scale..1) + flip for training; resize 256/224 + centre crop for eval;
    then ImageNet normalisation (``normalize`` False: the [0, 1] image, what an int8 program reads)."""
    tail = [T.ToTensor()] + ([T.Normalize(IMAGENET_MEAN, IMAGENET_STD)] if normalize else [])
    if train:
        return T.Compose([T.RandomResizedCrop(input_size, scale=(min_scale, 1.0)), T.RandomHorizontalFlip(), *tail])
    return T.Compose([T.Resize(int(round(input_size * 256 / 224))), T.CenterCrop(input_size), *tail])


def _split_dir(root: Path, names: Sequence[str]) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise FileNotFoundError(f"{root}: no {' or '.join(names)} folder")


def build_classification_data(root: Union[str, Path], input_size: int, layout: str = "imagefolder",
                              skip_bad: bool = False, min_scale: float = 0.08) -> Tuple[ImageClassFolder, ImageClassFolder]:
    """(train, val) datasets from ``root/train`` and ``root/val`` (or ``root/test``).

    ``layout``: "imagefolder" (one folder per class) or "vww" (``person`` / ``no_person`` folders,
    labels 1 / 0).
    """
    if layout not in ("imagefolder", "vww"):
        raise InvalidInputError(f"unknown data layout {layout!r}; expected 'imagefolder' or 'vww'")
    root = Path(root)
    classes = VWW_CLASSES if layout == "vww" else None
    train = ImageClassFolder(_split_dir(root, ["train"]), classification_transforms(input_size, True, min_scale), classes, skip_bad)
    val = ImageClassFolder(_split_dir(root, ["val", "test"]), classification_transforms(input_size, False), train.classes, skip_bad)
    return train, val
