"""Small classification datasets held on the training device: decoded once, augmented there a batch at a time.

On a GPU a small model trains faster than worker processes can decode and augment JPEGs (CIFAR-10 at 64x64:
the GPU waits for the loader). :func:`load_on_device` decodes every image once into one uint8 tensor on the
device; :class:`DeviceBatches` then draws each batch there: torchvision's random-resized-crop rule (the same
scale and aspect-ratio draws, vectorised), the crop resized bilinearly (:func:`resized_crops`: exactly as
cropping then resizing, for crops that grow), a horizontal flip, ImageNet normalisation.
Evaluation images are stored after the evaluation transform (resize and centre crop, as the DataLoader path
computes them), so validation sees the same pixels either way. Each epoch's draws come from a generator
seeded by the epoch, so a resumed run repeats them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader
from torchvision import transforms as T

from ..errors import InvalidInputError
from .classification import IMAGENET_MEAN, IMAGENET_STD, ImageClassFolder, classification_transforms


@dataclass
class DeviceImages:
    """Decoded images (N, C, H, W) uint8 and their labels (N,), on one device."""

    images: torch.Tensor
    labels: torch.Tensor
    skipped: int = 0  # unreadable images left out (``skip_bad``)

    def __len__(self) -> int:
        return self.images.shape[0]


class _Indexed(torch.utils.data.Dataset):
    """(image, label, index) of a folder's readable images; None for an unreadable one (skip_bad)."""

    def __init__(self, folder: ImageClassFolder) -> None:
        self.folder = folder

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int):
        item = self.folder[index]
        return None if item is None else (item[0], item[1], index)


class _SameSizeStack:
    """Collate (image, label, index) items of one size into (images, labels, unreadable count); images of
    another size stop with both files named."""

    def __init__(self, folder: ImageClassFolder) -> None:
        self.folder = folder

    def __call__(self, batch):
        good = [b for b in batch if b is not None]
        for image, _, index in good[1:]:
            if image.shape != good[0][0].shape:
                raise InvalidInputError(
                    f"data on the device needs images of one size: {self.folder.samples[index][0]} is "
                    f"{tuple(image.shape[1:])}, {self.folder.samples[good[0][2]][0]} is {tuple(good[0][0].shape[1:])} "
                    "(resize the dataset once, or train without --data-on-device)")
        if not good:
            return None, None, len(batch)
        return torch.stack([b[0] for b in good]), torch.tensor([b[1] for b in good]), len(batch) - len(good)


class _ToUint8:
    """A [0, 1] float image back to the uint8 it was made from (ToTensor divides by 255)."""

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return (image * 255).round().to(torch.uint8)


def load_on_device(folder: ImageClassFolder, device: torch.device, eval_size: Optional[int] = None,
                   workers: int = 0) -> DeviceImages:
    """Decode every image of ``folder`` into one uint8 tensor on ``device``.

    ``eval_size``: store each image after the evaluation transform at that input size (resize and centre
    crop); None: store the images as they are (they must share one size), for :class:`DeviceBatches` to
    augment. Unreadable images stop with the file named unless the folder skips bad samples.
    """
    to_uint8 = T.Compose([classification_transforms(eval_size, False, normalize=False), _ToUint8()]) if eval_size else T.PILToTensor()
    plain = ImageClassFolder(folder.root, to_uint8, folder.classes, folder.skip_bad)
    loader = DataLoader(_Indexed(plain), batch_size=256, num_workers=workers, collate_fn=_SameSizeStack(plain))
    images: List[torch.Tensor] = []
    labels: List[torch.Tensor] = []
    skipped = 0
    shape = None
    for batch, label, bad in loader:
        skipped += bad
        if batch is None:
            continue
        if shape is not None and batch.shape[1:] != shape:
            raise InvalidInputError(f"data on the device needs images of one size: {folder.root} holds {tuple(shape)} "
                                    f"and {tuple(batch.shape[1:])} (resize the dataset once, or train without --data-on-device)")
        shape = batch.shape[1:]
        images.append(batch.to(device))
        labels.append(label.to(device))
    if not images:
        raise InvalidInputError(f"{folder.root}: no readable images")
    return DeviceImages(torch.cat(images), torch.cat(labels), skipped)


def random_resized_crop_boxes(count: int, height: int, width: int, scale: Tuple[float, float],
                              ratio: Tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    """(count, 4) crop boxes x1, y1, x2, y2 drawn by torchvision's ``RandomResizedCrop.get_params`` rule for
    ``count`` images of ``height`` x ``width``: up to 10 tries of an area share in ``scale`` and a log-uniform
    aspect ratio in ``ratio``, the first that fits placed uniformly; if none fits, the centre crop with the
    ratio clamped into range."""
    tries = 10
    area = height * width * torch.empty(count, tries, dtype=torch.float64).uniform_(scale[0], scale[1], generator=generator)
    log_ratio = torch.empty(count, tries, dtype=torch.float64).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = torch.exp(log_ratio)
    w = torch.round(torch.sqrt(area * aspect))
    h = torch.round(torch.sqrt(area / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.int8).argmax(1)  # the first try that fits (0 where none does)
    pick = first[:, None]
    w, h = w.gather(1, pick)[:, 0], h.gather(1, pick)[:, 0]
    u = torch.rand(count, 2, dtype=torch.float64, generator=generator)
    top = torch.floor(u[:, 0] * (height - h + 1))
    left = torch.floor(u[:, 1] * (width - w + 1))
    in_ratio = width / height
    if in_ratio < min(ratio):
        cw, ch = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        cw, ch = int(round(height * max(ratio))), height
    else:
        cw, ch = width, height
    none_fit = ~fits.any(1)
    w, h = torch.where(none_fit, float(cw), w), torch.where(none_fit, float(ch), h)
    top = torch.where(none_fit, float((height - ch) // 2), top)
    left = torch.where(none_fit, float((width - cw) // 2), left)
    return torch.stack([left, top, left + w, top + h], 1)


def resized_crops(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Each image's crop ``boxes[k]`` (x1, y1, x2, y2 in whole pixels) resized to ``size`` x ``size``: bilinear
    with half-pixel centres and the crop's own edge pixels repeated, as cropping and then resizing computes it
    (exactly, for crops no larger than ``size``); a crop that shrinks is sampled f x f times per output pixel
    and averaged (f = the largest shrink factor in the batch, rounded up), in place of an antialiasing filter."""
    count, _, height, width = images.shape
    boxes = boxes.to(torch.float64)
    extent = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1)  # (w, h)
    factor = max(1, math.ceil(extent.max().item() / size))
    steps = (torch.arange(size * factor, dtype=torch.float64, device=images.device) + 0.5) / (size * factor)

    def coordinates(start: torch.Tensor, length: torch.Tensor, total: int) -> torch.Tensor:
        source = start[:, None] + steps * length[:, None] - 0.5
        source = torch.minimum(torch.maximum(source, start[:, None]), (start + length - 1)[:, None])
        return (2 * source + 1) / total - 1  # grid_sample's coordinates (align_corners=False)

    gx = coordinates(boxes[:, 0], extent[:, 0], width)
    gy = coordinates(boxes[:, 1], extent[:, 1], height)
    n = size * factor
    grid = torch.stack([gx[:, None, :].expand(count, n, n), gy[:, :, None].expand(count, n, n)], -1).to(images.dtype)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return F.avg_pool2d(out, factor) if factor > 1 else out


class DeviceBatches:
    """(images, labels, 0) batches from :class:`DeviceImages`, drawn on their device, like the training
    DataLoader yields them: normalised float32, randomly cropped / resized / flipped for training.

    Training batches are dealt out as ``DistributedSampler`` deals its indices (a permutation of their own,
    seeded by ``seed`` and the epoch, padded to a multiple of the processes, every ``world``-th index from
    ``rank``) and drop the ragged last batch unless it is the only one; evaluation batches take every
    ``world``-th image in order.
    """

    def __init__(self, data: DeviceImages, batch_size: int, train: bool, input_size: int = 0, min_scale: float = 0.08,
                 seed: int = 0, rank: int = 0, world: int = 1) -> None:
        if batch_size <= 0:
            raise InvalidInputError(f"batch_size must be positive, got {batch_size}")
        if train and input_size <= 0:
            raise InvalidInputError(f"training batches need a positive input_size, got {input_size}")
        self.data, self.batch_size, self.train = data, batch_size, train
        self.input_size, self.scale, self.ratio = input_size, (min_scale, 1.0), (3 / 4, 4 / 3)
        self.seed, self.rank, self.world, self.epoch = seed, rank, world, 0
        device = data.images.device
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, -1, 1, 1) * 255
        self.per_process = math.ceil(len(data) / world) if train else len(range(rank, len(data), world))
        self.drop_last = train and self.per_process > batch_size

    def set_epoch(self, epoch: int) -> None:
        """Seed the next pass's order and augmentation from (seed, epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_process // self.batch_size if self.drop_last else math.ceil(self.per_process / self.batch_size)

    def _order(self, generator: torch.Generator) -> torch.Tensor:
        if not self.train:
            return torch.arange(self.rank, len(self.data), self.world)
        order = torch.randperm(len(self.data), generator=generator)
        padding = self.per_process * self.world - len(order)
        if padding:
            order = torch.cat([order, order[:padding]])
        return order[self.rank :: self.world]

    def _augment(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        count, _, height, width = images.shape
        boxes = random_resized_crop_boxes(count, height, width, self.scale, self.ratio, generator)
        flip = torch.rand(count, generator=generator) < 0.5
        out = resized_crops(images.float(), boxes.to(images.device), self.input_size)
        return torch.where(flip.to(images.device)[:, None, None, None], out.flip(-1), out)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor, int]]:
        from ..engine.loop import epoch_seed  # (the engine imports this package)

        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = self._order(generator)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size].to(self.data.images.device)
            images = self.data.images[index]
            images = self._augment(images, generator) if self.train else images.float()
            yield (images - self.mean) / self.std, self.data.labels[index], 0


def device_batches(train: ImageClassFolder, val: ImageClassFolder, device: torch.device, batch_size: int, input_size: int,
                   min_scale: float, seed: int, rank: int = 0, world: int = 1, workers: int = 0) -> Tuple[DeviceBatches, DeviceBatches]:
    """(training, evaluation) :class:`DeviceBatches` of two image folders, decoded onto ``device``."""
    train_images = load_on_device(train, device, workers=workers)
    val_images = load_on_device(val, device, eval_size=input_size, workers=workers)
    return (DeviceBatches(train_images, batch_size, True, input_size, min_scale, seed, rank, world),
            DeviceBatches(val_images, batch_size, False, rank=rank, world=world))


__all__: Sequence[str] = ["DeviceBatches", "DeviceImages", "device_batches", "load_on_device", "random_resized_crop_boxes", "resized_crops"]
