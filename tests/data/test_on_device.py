"""Data held on the device: torchvision's crop rule, the crop pixels, the sampler's order and sharding, the
evaluation pixels, and training with it end to end."""
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F
from torch.utils.data import DistributedSampler
from torchvision.transforms import RandomResizedCrop

from rnnpool.data.classification import ImageClassFolder, build_classification_data, classification_transforms
from rnnpool.data.on_device import DeviceBatches, DeviceImages, device_batches, load_on_device, random_resized_crop_boxes
from rnnpool.engine import ClassifyConfig, train_classifier
from rnnpool.errors import InvalidInputError

from ..engine.conftest import make_color_dataset


@pytest.mark.parametrize("size, scale", [((32, 32), (0.25, 1.0)), ((30, 50), (0.08, 1.0)), ((6, 40), (0.5, 1.0))])
def test_crop_boxes_follow_torchvision_rule(size, scale):
    """The same distribution as RandomResizedCrop.get_params (its own draws, 20,000 each): sizes, positions and
    the share of centre-crop fallbacks (a 6x40 image rarely fits a crop of ratio 3/4..4/3)."""
    height, width = size
    ours = random_resized_crop_boxes(20000, height, width, scale, (3 / 4, 4 / 3), torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    ref = torch.tensor([RandomResizedCrop.get_params(torch.zeros(1, height, width), list(scale), [3 / 4, 4 / 3])
                        for _ in range(20000)], dtype=torch.float64)  # (top, left, h, w)
    ref = torch.stack([ref[:, 1], ref[:, 0], ref[:, 1] + ref[:, 3], ref[:, 0] + ref[:, 2]], 1)
    assert (ours[:, :2] >= 0).all() and (ours[:, 2] <= width).all() and (ours[:, 3] <= height).all()
    assert (ours[:, 2] > ours[:, 0]).all() and (ours[:, 3] > ours[:, 1]).all()
    assert torch.equal(ours, ours.round())  # whole pixels, as torchvision's
    for column in range(4):
        a, b = ours[:, column], ref[:, column]
        assert abs(a.mean() - b.mean()) < 4 * math.hypot(a.std(), b.std()) / math.sqrt(20000) + 1e-9, column
        assert abs(a.std() - b.std()) < 0.05 * b.std() + 1e-9, column
    widths, ref_widths = ours[:, 2] - ours[:, 0], ref[:, 2] - ref[:, 0]
    assert abs((widths == width).double().mean() - (ref_widths == width).double().mean()) < 0.02


def test_crop_pixels_are_the_bilinear_resized_crop():
    """Each training image is its crop box resized bilinearly (half-pixel centres, as torchvision's tensor
    resize without antialias, which is what an enlarging crop gets), then flipped or not."""
    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    data = DeviceImages(images, torch.arange(5))
    batches = DeviceBatches(data, 5, train=True, input_size=24, min_scale=0.3)
    batches.set_epoch(3)
    generator = torch.Generator().manual_seed(batches.seed * 100_003 + 3)
    order = torch.randperm(5, generator=generator)
    boxes = random_resized_crop_boxes(5, 16, 16, (0.3, 1.0), (3 / 4, 4 / 3), generator).long()
    flips = torch.rand(5, generator=generator) < 0.5
    out, labels, skipped = next(iter(batches))
    assert skipped == 0 and torch.equal(labels, order)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    for k in range(5):
        x1, y1, x2, y2 = boxes[k].tolist()
        crop = images[order[k], :, y1:y2, x1:x2].float()[None]
        expected = F.interpolate(crop, size=(24, 24), mode="bilinear", align_corners=False)[0]
        if flips[k]:
            expected = expected.flip(-1)
        torch.testing.assert_close(out[k], (expected / 255 - mean) / std, atol=1e-4, rtol=0)


def test_order_and_sharding_follow_distributed_sampler():
    """Per epoch a permutation padded to a multiple of the processes and dealt out as DistributedSampler deals
    it (every index once, the padding repeating the first ones), a new one each epoch and the same one again
    for the same epoch (what resuming relies on); the ragged last batch dropped unless it is the only one."""
    data = DeviceImages(torch.zeros(10, 1, 4, 4, dtype=torch.uint8), torch.arange(10))
    shards = []
    for rank in range(3):
        batches = DeviceBatches(data, 2, train=True, input_size=4, seed=7, rank=rank, world=3)
        assert len(batches) == len(DistributedSampler(range(10), num_replicas=3, rank=rank)) // 2 == 2
        labels = []
        for epoch in (0, 1, 0):
            batches.set_epoch(epoch)
            labels.append(torch.cat([b[1] for b in batches]))
        assert not torch.equal(labels[0], labels[1]) and torch.equal(labels[0], labels[2])
        shards.append(labels[0])
    dealt = torch.stack(shards, 1).reshape(-1)  # back in permutation order: rank r took every 3rd from r
    assert sorted(dealt[:10].tolist()) == list(range(10)) and torch.equal(dealt[10:], dealt[:2])
    single = DeviceBatches(data, 4, train=True, input_size=4)
    assert len(single) == 2 and sum(len(b[1]) for b in single) == 8
    assert len(DeviceBatches(data, 16, train=True, input_size=4)) == 1


def test_evaluation_images_are_the_loader_pixels(tmp_path):
    """Validation batches equal the DataLoader path's tensors (resize + centre crop + normalisation), in order."""
    root = make_color_dataset(tmp_path / "data", per_class=(2, 3))
    folder = ImageClassFolder(root / "val", classification_transforms(20, False))
    stored = load_on_device(folder, torch.device("cpu"), eval_size=20)
    assert stored.images.dtype == torch.uint8 and stored.images.shape == (9, 3, 20, 20)
    batches = DeviceBatches(stored, 4, train=False)
    images = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    expected = torch.stack([folder[i][0] for i in range(9)])
    torch.testing.assert_close(images, expected, atol=1e-5, rtol=0)
    assert labels.tolist() == [folder[i][1] for i in range(9)]
    shard = DeviceBatches(stored, 4, train=False, rank=1, world=2)
    assert torch.cat([b[1] for b in shard]).tolist() == labels[1::2].tolist()


def test_images_of_other_sizes_and_unreadable_files_are_named(tmp_path):
    root = make_color_dataset(tmp_path / "data", per_class=(2, 1))
    Image.fromarray(np.zeros((30, 20, 3), np.uint8)).save(root / "train" / "green" / "odd.png")
    train, _ = build_classification_data(root, 16)
    with pytest.raises(InvalidInputError, match=r"one size: .*odd\.png is \(30, 20\)"):
        load_on_device(train, torch.device("cpu"))
    (root / "train" / "green" / "odd.png").unlink()
    (root / "train" / "blue" / "broken.png").write_bytes(b"not an image")
    train, _ = build_classification_data(root, 16)
    with pytest.raises(Exception, match=r"broken\.png"):
        load_on_device(train, torch.device("cpu"))
    train, _ = build_classification_data(root, 16, skip_bad=True)
    assert load_on_device(train, torch.device("cpu")).skipped == 1
    with pytest.raises(InvalidInputError, match="input_size"):
        DeviceBatches(DeviceImages(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2)), 2, train=True)


def test_training_with_data_on_device_learns_and_resumes_exactly(tmp_path, capsys):
    root = make_color_dataset(tmp_path / "data")
    common = dict(model="mobilenetv2_035_rnnpool", data=str(root), input_size=32, batch_size=6, workers=0, lr=0.005,
                  optimizer="adamw", device="cpu", epochs=4, project=str(tmp_path / "runs"), data_on_device=True)
    result = train_classifier(ClassifyConfig(name="on_device", **common))
    assert "data on cpu: 36 training and 18 validation images" in capsys.readouterr().out
    rows = (tmp_path / "runs" / "on_device" / "metrics.csv").read_text().splitlines()[1:]
    losses = [float(r.split(",")[2]) for r in rows]
    assert losses[-1] < 0.6 * losses[0] and result["final"]["samples"] == 18
    two = {**common, "epochs": 2}
    train_classifier(ClassifyConfig(name="straight", **two))
    train_classifier(ClassifyConfig(name="cut", stop_epoch=1, **two))
    train_classifier(ClassifyConfig(name="cut", resume=str(tmp_path / "runs" / "cut" / "weights" / "last.pt"), **two))
    a = torch.load(tmp_path / "runs" / "straight" / "weights" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "runs" / "cut" / "weights" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_runs_share_data_decoded_once_and_refuse_data_for_other_settings(tmp_path):
    root = make_color_dataset(tmp_path / "data")
    train, val = build_classification_data(root, 32)
    data = device_batches(train, val, torch.device("cpu"), 6, 32, 0.08, seed=0)
    common = dict(model="mobilenetv2_035_rnnpool", data=str(root), input_size=32, batch_size=6, workers=0, device="cpu",
                  epochs=1, project=str(tmp_path / "runs"), data_on_device=True)
    shared = train_classifier(ClassifyConfig(name="shared", **common), data=data)
    own = train_classifier(ClassifyConfig(name="own", **common))
    assert shared["final"] == own["final"]  # the same run either way
    with pytest.raises(InvalidInputError, match=r"batch_size 6 \(run: 4\)"):
        train_classifier(ClassifyConfig(name="other", **{**common, "batch_size": 4}), data=data)
