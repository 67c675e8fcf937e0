import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from rnnpool.cli import main
from rnnpool.engine import DetectConfig, build_detector, evaluate_detector, train_detector
from rnnpool.engine.s3fd import EncodeTargets, match, multibox_loss
from rnnpool.models.detection_utils import decode, encode, make_anchors

from ..conftest import SHARED_DATA


def test_anchors_sit_on_the_stride_grid():
    a = make_anchors([(2, 3), (1, 1)], [4, 8], [16, 32], torch.device("cpu"))
    assert a.shape == (7, 4)
    assert a[:3].tolist() == [[2, 2, 16, 16], [6, 2, 16, 16], [10, 2, 16, 16]]
    assert a[-1].tolist() == [4, 4, 32, 32]


def test_encode_decode_round_trip():
    anchors = torch.tensor([[16.0, 20.0, 32.0, 32.0], [50.0, 50.0, 64.0, 64.0]])
    boxes = torch.tensor([[1.0, 2.0, 30.0, 40.0], [30.0, 35.0, 80.0, 70.0]])
    torch.testing.assert_close(decode(encode(boxes, anchors), anchors), boxes)


def test_matching_threshold_best_anchor_and_compensation():
    anchors = make_anchors([(8, 8)], [8], [16], torch.device("cpu"))  # centres 4, 12, 20, ...
    face = torch.tensor([[8.0, 8.0, 24.0, 24.0]])  # IoU 144/368 = 0.39 with the four anchors around (16, 16)
    assert torch.nonzero(match(anchors, face) == 0).flatten().tolist() == [9, 10, 17, 18]
    tiny = torch.tensor([[30.0, 30.0, 34.0, 34.0]])  # IoU < 0.35 everywhere: it still gets its best anchor
    assert (match(anchors, tiny) == 0).sum() == 1
    # scale compensation: a face with fewer matches than the mean takes its next best anchors (IoU >= 0.1)
    m = match(anchors, torch.cat((face, torch.tensor([[41.0, 41.0, 52.0, 52.0]]))))
    counts = torch.bincount(m[m >= 0], minlength=2).tolist()
    assert counts[0] == 4 and counts[1] >= 2
    assert (match(anchors, torch.zeros(0, 4)) == -1).all()


def test_loss_prefers_correct_predictions():
    anchors = make_anchors([(4, 4)], [8], [16], torch.device("cpu"))
    target = [{"boxes": torch.tensor([[8.0, 8.0, 24.0, 24.0]])}]
    m = match(anchors, target[0]["boxes"])
    good_conf = torch.tensor([5.0, -5.0]).repeat(1, 16, 1)
    good_conf[0, m >= 0, 0], good_conf[0, m >= 0, 1] = -5.0, 5.0
    good_loc = encode(target[0]["boxes"][m.clamp(min=0)], anchors)[None]
    good = multibox_loss(good_conf, good_loc, anchors, target)
    bad = multibox_loss(-good_conf, good_loc + 1, anchors, target)
    assert good["loss_conf"] < 0.01 and good["loss_loc"] < 1e-6
    assert bad["loss_conf"] > 1 and bad["loss_loc"] > 0.1


def test_targets_encoded_in_the_collate_give_the_same_loss():
    """The DataLoader workers' encoding (EncodeTargets) and the loss's own matching are one computation."""
    torch.manual_seed(0)
    model = build_detector("rnnpool_face_m4").train()
    anchors = model.anchors_for(96, 128)
    images = torch.rand(2, 1, 96, 128)
    boxes = [torch.tensor([[8.0, 8.0, 40.0, 44.0], [60.0, 20.0, 75.0, 38.0]]), torch.zeros(0, 4)]
    batch = [(img, {"boxes": b, "labels": torch.ones(len(b), dtype=torch.long)}) for img, b in zip(images, boxes)]
    collated, encoded = EncodeTargets(anchors, lambda b: (torch.stack([x[0] for x in b]), [x[1] for x in b]))(batch)
    assert encoded["labels"].shape == (2, len(anchors)) and encoded["labels"][0].sum() >= 2 and encoded["labels"][1].sum() == 0
    conf, loc, raw_anchors = model.raw(collated)
    torch.testing.assert_close(raw_anchors, anchors)
    from_list = multibox_loss(conf, loc, raw_anchors, [{"boxes": b} for b in boxes])
    from_batch = multibox_loss(conf, loc, raw_anchors, encoded)
    for key in from_list:
        torch.testing.assert_close(from_batch[key], from_list[key], rtol=0, atol=0)
    with pytest.raises(ValueError, match="another input size"):
        multibox_loss(conf[:, :-1], loc[:, :-1], raw_anchors[:-1], encoded)


def make_square_faces(root, count=12, size=96):
    """Synthetic 'faces': bright squares on noise, with their boxes in WIDER FACE format."""
    rng = np.random.default_rng(0)
    lines = []
    (root / "images").mkdir(parents=True)
    for i in range(count):
        img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
        boxes = []
        for _ in range(2):
            s = int(rng.integers(16, 32))
            x, y = (int(v) for v in rng.integers(0, size - s, 2))
            img[y : y + s, x : x + s] = 220
            boxes.append(f"{x} {y} {s} {s} 0 0 0 0 0 0")
        Image.fromarray(img).save(root / "images" / f"{i}.jpg")
        lines += [f"{i}.jpg", "2", *boxes]
    (root / "gt.txt").write_text("\n".join(lines) + "\n")
    return root / "gt.txt"


def test_train_detect_loss_falls_and_evaluates(tmp_path, capsys):
    gt = make_square_faces(tmp_path / "faces")
    cfg = DetectConfig(model="rnnpool_face_a", train=str(gt), val=str(gt), epochs=4, batch_size=4, input_size=96, workers=0,
                       device="cpu", project=str(tmp_path / "runs"), name="sq", warmup_epochs=1, eval_period=4, lr=0.005, optimizer="adamw")
    result = train_detector(cfg)
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("epoch=")]
    assert len(lines) == 4 and "nan" not in " ".join(lines)  # epochs without validation print no val_ap
    assert "val_ap=" not in lines[0] and "val_ap=" in lines[-1]
    run = tmp_path / "runs" / "sq"
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,lr,loss_conf,loss_loc,val_ap")
    first, last = rows[1].split(","), rows[-1].split(",")
    assert float(last[2]) + float(last[3]) < float(first[2]) + float(first[3])
    for name in ("weights/last.pt", "weights/best.pt", "curves.png", "pr.png", "config.yaml"):
        assert (run / name).exists(), name
    model = build_detector(None, str(run / "weights" / "last.pt"))  # the checkpoint names its model
    again = evaluate_detector(model, str(gt))
    assert again["ap"] == pytest.approx(result["last_epoch"]["val_ap"], abs=1e-9) and again["faces"] == 24
    sized = evaluate_detector(model, str(gt), size_bins=(16, 32))
    assert sized["ap"] == again["ap"] and sum(sized["faces_by_size"].values()) == 24
    assert list(sized["ap_by_size"]) == ["<16px", "16-32px", ">=32px"] and all(0 <= v <= 1 for v in sized["ap_by_size"].values())
    main(["eval", "detect", "--val", str(gt), "--weights", str(run / "weights" / "last.pt"), "--size-bins", "16,32"])
    printed = capsys.readouterr().out
    assert f"ap_16-32px={sized['ap_by_size']['16-32px']:.4f}" in printed and f"faces_>=32px={sized['faces_by_size']['>=32px']}" in printed
    with pytest.raises(SystemExit, match="is rnnpool_face_a, not rnnpool_face_m4"):  # one line, not the state_dict's keys
        main(["eval", "detect", "--model", "rnnpool_face_m4", "--val", str(gt), "--weights", str(run / "weights" / "last.pt")])


def test_detection_resume_is_bit_exact(tmp_path):
    gt = make_square_faces(tmp_path / "faces", count=6)
    common = dict(model="rnnpool_face_a", train=str(gt), epochs=2, batch_size=3, input_size=64, workers=0, device="cpu",
                  project=str(tmp_path), warmup_epochs=1)
    train_detector(DetectConfig(name="straight", **common))
    train_detector(DetectConfig(name="resumed", stop_epoch=1, **common))
    train_detector(DetectConfig(name="resumed", resume=str(tmp_path / "resumed" / "weights" / "last.pt"), **common))
    a, b = (torch.load(tmp_path / name / "weights" / "last.pt", weights_only=False)["model"] for name in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_grad_clip_bounds_the_step(tmp_path):
    """One SGD step (no momentum history, no weight decay) moves the parameters by lr times the gradient, so
    clipped to norm c the step's norm is lr * c; unclipped it is far larger."""
    gt = make_square_faces(tmp_path / "faces", count=4)
    common = dict(model="rnnpool_face_a", train=str(gt), epochs=1, batch_size=4, input_size=64, workers=0, device="cpu",
                  project=str(tmp_path), warmup_epochs=0, lr=0.01, weight_decay=0.0, max_steps=1, seed=3)
    torch.manual_seed(3)
    names = [n for n, _ in build_detector("rnnpool_face_a").detector.named_parameters()]
    torch.manual_seed(3)
    start = build_detector("rnnpool_face_a").detector.state_dict()

    def step_norm(name: str, clip) -> float:
        train_detector(DetectConfig(name=name, grad_clip=clip, **common))
        end = torch.load(tmp_path / name / "weights" / "last.pt", weights_only=False)["model"]
        return torch.cat([(end[f"detector.{n}"] - start[n]).flatten() for n in names]).norm().item()

    assert step_norm("clipped", 0.5) == pytest.approx(0.01 * 0.5, rel=1e-3)
    assert step_norm("free", None) > 0.01 * 5
    with pytest.raises(Exception, match="grad_clip must be a positive gradient norm"):
        DetectConfig(grad_clip=0.0, **common)


def test_cli_detect_draws(tmp_path, capsys):
    gt = make_square_faces(tmp_path / "faces", count=1)
    main(["detect", str(gt.parent / "images" / "0.jpg"), "--model", "rnnpool_face_m4", "-o", str(tmp_path / "out.png"),
          "--threshold", "0", "--scales", "1,1.5", "--device", "cpu"])
    out = json.loads(capsys.readouterr().out)
    assert out["faces"] and all(0 <= v <= 96 for f in out["faces"] for v in f["box"])
    with Image.open(tmp_path / "out.png") as img:
        assert img.size == (96, 96)
    with pytest.raises(ValueError, match="not a face detector"):
        build_detector("mobilenetv2")
    with pytest.raises(ValueError, match="give a face model name"):
        build_detector(None)
    with pytest.raises(SystemExit, match="error: image .*missing.jpg does not exist"):
        main(["detect", str(tmp_path / "missing.jpg"), "--model", "rnnpool_face_a", "--device", "cpu"])


def test_torchrun_ddp_detection(tmp_path):
    gt = make_square_faces(tmp_path / "faces", count=8)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29534", "-m", "rnnpool.cli",
           "train", "detect", "--model", "rnnpool_face_a", "--train", str(gt), "--val", str(gt), "--epochs", "1", "--batch-size", "2",
           "--input-size", "64", "--workers", "0", "--device", "cpu", "--project", str(tmp_path), "--name", "ddp", "--warmup-epochs", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world_size: 2" in (tmp_path / "ddp" / "config.yaml").read_text()
    assert len((tmp_path / "ddp" / "metrics.csv").read_text().splitlines()) == 2


@pytest.mark.skipif(not (SHARED_DATA / "faces").is_dir(), reason="../shared/data/faces not present (real-data check)")
def test_real_faces_few_steps(tmp_path):
    faces = SHARED_DATA / "faces"
    cfg = DetectConfig(model="rnnpool_face_quant", train=str(faces / "train_bbx_gt.txt"), epochs=2, batch_size=8, input_size=128,
                       workers=0, device="cpu", project=str(tmp_path), name="real", max_steps=6, warmup_epochs=1)
    result = train_detector(cfg)
    rows = (tmp_path / "real" / "metrics.csv").read_text().splitlines()[1:]
    assert float(rows[-1].split(",")[2]) < float(rows[0].split(",")[2])
    assert result["run"]


def test_time_limit_validates_the_epoch_it_stops_after(tmp_path, capsys):
    gt = make_square_faces(tmp_path / "faces", count=6)
    cfg = DetectConfig(model="rnnpool_face_a", train=str(gt), val=str(gt), epochs=6, batch_size=3, input_size=64, workers=0,
                       device="cpu", project=str(tmp_path), name="short", eval_period=5, time_limit=1e-5)
    result = train_detector(cfg)
    assert "time limit of 1e-05 min: stopping after epoch 1 of 6" in capsys.readouterr().out
    assert result["last_epoch"]["epoch"] == 1 and not math.isnan(result["last_epoch"]["val_ap"])
