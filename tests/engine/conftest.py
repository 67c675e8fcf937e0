import numpy as np
import pytest
from PIL import Image


def make_color_dataset(root, classes=("red", "green", "blue"), per_class=(12, 6)):
    """A learnable toy set: each class is a noisy image of one dominant colour."""
    rng = np.random.default_rng(0)
    for split, count in zip(("train", "val"), per_class):
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                img = rng.integers(0, 80, (40, 40, 3), dtype=np.uint8)
                img[..., label % 3] += 150
                Image.fromarray(img).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture
def color_data(tmp_path):
    return make_color_dataset(tmp_path / "data")
