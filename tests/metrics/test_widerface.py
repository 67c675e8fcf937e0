import numpy as np
import pytest

from rnnpool.metrics.widerface import ImageTruth, evaluate_widerface, load_widerface_mat, plot_pr, truth_from_boxes

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
