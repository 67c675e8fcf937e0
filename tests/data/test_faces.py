import json

import numpy as np
import pytest
import torch
from PIL import Image

from rnnpool.data import AnnotationError, FaceDataset, detection_transforms, load_face_annotations
from rnnpool.data.classification import BadSampleError

from ..conftest import SHARED_DATA


@pytest.fixture
def images(tmp_path):
    for name in ("a.jpg", "b.jpg"):
        Image.fromarray(np.zeros((60, 80, 3), np.uint8)).save(tmp_path / name)
    return tmp_path


def write(path, text):
    path.write_text(text)
    return path


def test_widerface_txt_with_an_empty_image(images):
    ann = load_face_annotations(write(images / "gt.txt", "a.jpg\n2\n1 2 10 12 0 0 0 0 0 0\n30 20 5 5 0 0 0 1 0 0\nb.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n"))
    a, b = ann.records
    assert a.boxes.tolist() == [[1, 2, 10, 12], [30, 20, 5, 5]] and a.invalid.tolist() == [False, True]
    assert len(b.boxes) == 0 and b.path == images / "b.jpg"


@pytest.mark.parametrize("text,message", [
    ("a.jpg\ntwo\n", r"gt.txt:2: expected the face count of a.jpg, got 'two'"),
    ("a.jpg\n1\n1 2 x\n", r"gt.txt:3: expected 'x y w h \.\.\.'"),
    ("a.jpg\n1\n1 2 0 12 0 0 0 0 0 0\n", r"gt.txt:3: zero-area box"),
    ("a.jpg\n1\n70 2 20 12 0 0 0 0 0 0\n", r"gt.txt:3: box .* outside the 80x60 image"),
])
def test_bad_lines_are_named(images, text, message):
    with pytest.raises(AnnotationError, match=message):
        load_face_annotations(write(images / "gt.txt", text))


def test_skip_bad_drops_and_counts(images):
    ann = load_face_annotations(write(images / "gt.txt", "a.jpg\n2\n1 2 0 12 0 0 0 0 0 0\n1 2 10 12 0 0 0 0 0 0\n"), skip_bad=True)
    assert len(ann.records[0].boxes) == 1 and len(ann.problems) == 1 and "gt.txt:3" in ann.problems[0]


def test_unreadable_image_is_named_or_skipped(images):
    (images / "a.jpg").write_bytes(b"broken")
    gt = write(images / "gt.txt", "a.jpg\n1\n1 2 10 12\nb.jpg\n1\n1 2 10 12\n")
    with pytest.raises(BadSampleError, match="a.jpg"):
        load_face_annotations(gt)
    ann = load_face_annotations(gt, skip_bad=True)
    assert [r.name for r in ann.records] == ["b.jpg"] and len(ann.problems) == 1 and "a.jpg" in ann.problems[0]


def test_json_and_csv(images):
    j = load_face_annotations(write(images / "gt.json", json.dumps({"images": [{"file": "a.jpg", "boxes": [[1, 2, 10, 12]]}]})))
    c = load_face_annotations(write(images / "gt.csv", "image,x,y,w,h,mask\na.jpg,1,2,10,12,with_mask\na.jpg,3,4,5,6,x\n"))
    assert j.records[0].boxes.tolist() == [[1, 2, 10, 12]]
    assert c.records[0].boxes.tolist() == [[1, 2, 10, 12], [3, 4, 5, 6]]
    with pytest.raises(AnnotationError, match=r"gt.json: images\[0\].boxes\[0\] is not \[x, y, w, h\]"):
        load_face_annotations(write(images / "gt.json", json.dumps({"images": [{"file": "a.jpg", "boxes": [[1, 2]]}]})))
    with pytest.raises(AnnotationError, match=r"gt.csv:1: missing columns \['h'\]"):
        load_face_annotations(write(images / "gt.csv", "image,x,y,w\n"))
    with pytest.raises(AnnotationError, match=r"gt.csv:2: box values must be numbers"):
        load_face_annotations(write(images / "gt.csv", "image,x,y,w,h\na.jpg,1,2,three,4\n"))
    with pytest.raises(ValueError, match="unknown annotation format '.xml'"):
        load_face_annotations(write(images / "gt.xml", ""))


def test_eval_transform_scales_boxes(images):
    ann = load_face_annotations(write(images / "gt.txt", "a.jpg\n1\n8 6 16 12 0 0 0 0 0 0\n"))
    image, target = FaceDataset(ann, detection_transforms(40, train=False))[0]
    assert image.shape == (3, 40, 40) and image.dtype == torch.float32
    torch.testing.assert_close(target["boxes"], torch.tensor([[4.0, 4.0, 12.0, 12.0]]))  # x * 40/80, y * 40/60


def test_train_transform_keeps_boxes_inside(images):
    ann = load_face_annotations(write(images / "gt.txt", "a.jpg\n1\n20 10 30 30 0 0 0 0 0 0\n"))
    torch.manual_seed(0)
    for _ in range(10):
        image, target = FaceDataset(ann, detection_transforms(64, train=True))[0]
        b = target["boxes"]
        assert image.shape == (3, 64, 64)
        assert ((b >= 0) & (b <= 64)).all() and (b[:, 2:] > b[:, :2]).all()


@pytest.mark.skipif(not (SHARED_DATA / "faces").is_dir(), reason="../shared/data/faces not present")
def test_real_face_annotations():
    train = load_face_annotations(SHARED_DATA / "faces" / "train_bbx_gt.txt")
    val = load_face_annotations(SHARED_DATA / "faces" / "val_bbx_gt.txt")
    assert len(train.records) + len(val.records) == 853
    assert sum(len(r.boxes) for r in train.records + val.records) == 4072
