import numpy as np
import pytest

from rnnpool.metrics.widerface import (ImageTruth, ap_summary, evaluate_widerface, load_widerface_mat, parse_size_bins, plot_pr,
                                       size_setting_names, truth_from_boxes)

from ..conftest import SHARED_DATA

GT = {"img": np.array([[10, 10, 20, 20], [100, 100, 30, 30]], float)}
WRONG = [300, 300, 20, 20]


def ap(preds, truth=None, **kw):
    return evaluate_widerface(preds, truth or truth_from_boxes(GT), **kw)["all"]["ap"]


def test_perfect():
    assert ap({"img": np.array([[10, 10, 20, 20, 0.9], [100, 100, 30, 30, 0.8]])}) == pytest.approx(1.0)


def test_half_right():
    # one face found with the top score, one false alarm: precision 1 up to recall 0.5 -> AP 0.5
    assert ap({"img": np.array([[10, 10, 20, 20, 0.9], WRONG + [0.8]])}) == pytest.approx(0.5)


def test_shuffled_scores():
    # the false alarm ranks first: recall 0.5 is reached only at precision 0.5 -> AP 0.25
    assert ap({"img": np.array([[10, 10, 20, 20, 0.2], WRONG + [0.8]])}) == pytest.approx(0.25)


def test_ignored_face_is_neither_hit_nor_false_alarm():
    truth = {"img": ImageTruth(GT["img"], {"all": np.array([0])})}  # only the first face counts
    preds = {"img": np.array([[100, 100, 30, 30, 0.9], [10, 10, 20, 20, 0.5]])}
    assert ap(preds, truth) == pytest.approx(1.0)
    assert evaluate_widerface(preds, truth)["all"]["faces"] == 1


def test_max_faces_split_and_missing_images():
    truth = truth_from_boxes({**GT, "crowd": np.tile([[0, 0, 5, 5]], (5, 1)).astype(float)})
    result = evaluate_widerface({"img": np.array([[10, 10, 20, 20, 0.9], [100, 100, 30, 30, 0.8]])}, truth, max_faces=3)
    assert result["all"]["faces"] == 2 and result["all"]["ap"] == pytest.approx(1.0)
    assert evaluate_widerface({}, truth)["all"]["ap"] == 0.0


@pytest.mark.skipif(not (SHARED_DATA / "widerface_val_gt").is_dir(), reason="../shared/data/widerface_val_gt not present")
def test_official_ground_truth(tmp_path):
    truth = load_widerface_mat(SHARED_DATA / "widerface_val_gt")
    assert len(truth) == 3226 and sum(len(t.boxes) for t in truth.values()) == 39708
    rng = np.random.default_rng(0)
    perfect = {n: np.c_[t.boxes, rng.random(len(t.boxes))] for n, t in truth.items()}
    res = evaluate_widerface(perfect, truth)
    assert [round(res[s]["ap"], 3) for s in ("easy", "medium", "hard")] == [1.0, 1.0, 1.0]
    assert res["easy"]["faces"] < res["medium"]["faces"] < res["hard"]["faces"]
    # keeping every other face: precision stays 1, so AP = the share of counted faces kept
    half = {n: p[::2] for n, p in perfect.items()}
    for s, r in evaluate_widerface(half, truth).items():
        kept = sum((t.keep[s] % 2 == 0).sum() for t in truth.values()) / r["faces"]
        assert r["ap"] == pytest.approx(kept, abs=2e-3), s
    # shifting boxes by their own size: nothing matches
    shifted = {n: p + np.r_[p[:, 2], p[:, 3], 0 * p[:, 2], 0 * p[:, 3], 0 * p[:, 4]].reshape(5, -1).T for n, p in perfect.items()}
    assert all(r["ap"] < 0.01 for r in evaluate_widerface(shifted, truth).values())
    plot_pr(res, tmp_path / "pr.png")
    assert (tmp_path / "pr.png").stat().st_size > 1000


def test_size_bins_count_each_size_alone():
    """Faces of 10, 20, 40 and 80 px, the 20 and 80 px ones found: AP 1 in their bins (the other found face is
    ignored there, not a false alarm), 0 in the others, 0.5 over all faces."""
    boxes = {"img": np.array([[0, 0, 10, 10], [50, 0, 20, 20], [100, 0, 40, 40], [200, 0, 80, 80]], float)}
    truth = truth_from_boxes(boxes, size_bins=(16, 32, 64))
    preds = {"img": np.array([[50, 0, 20, 20, 0.9], [200, 0, 80, 80, 0.8]])}
    result = evaluate_widerface(preds, truth)
    assert list(result) == ["all", "<16px", "16-32px", "32-64px", ">=64px"]
    assert {s: r["faces"] for s, r in result.items()} == {"all": 4, "<16px": 1, "16-32px": 1, "32-64px": 1, ">=64px": 1}
    assert {s: r["ap"] for s, r in result.items()} == pytest.approx({"all": 0.5, "<16px": 0.0, "16-32px": 1.0, "32-64px": 0.0, ">=64px": 1.0})
    summary = ap_summary(preds, truth)
    assert summary["ap"] == pytest.approx(0.5) and summary["faces"] == 4
    assert summary["ap_le3"] == 0.0  # the one image has 4 faces: the <= 3 split holds none
    assert summary["ap_by_size"] == pytest.approx({"<16px": 0.0, "16-32px": 1.0, "32-64px": 0.0, ">=64px": 1.0})


def test_size_bins_keep_invalid_faces_out_and_check_their_edges():
    truth = truth_from_boxes({"img": np.array([[0, 0, 20, 20], [50, 0, 24, 24]], float)}, {"img": np.array([True, False])}, size_bins=(16,))
    assert truth["img"].keep[">=16px"].tolist() == [1] and truth["img"].keep["<16px"].tolist() == []
    assert size_setting_names([8.5, 30]) == ["<8.5px", "8.5-30px", ">=30px"]
    assert parse_size_bins("8.5,30") == [8.5, 30.0]
    with pytest.raises(ValueError, match="size bins are ascending positive pixel edges like 16,32,64, got '16,x'"):
        parse_size_bins("16,x")
    for bad in ([32, 16], [0, 16], [16, 16]):
        with pytest.raises(ValueError, match="positive and ascending"):
            truth_from_boxes({}, size_bins=bad)
