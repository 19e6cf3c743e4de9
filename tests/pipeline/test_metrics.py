"""Retrieval metrics: hand-computed cases for the Collaborative Experts ``metric.py`` semantics (DESIGN §6)."""

import numpy as np
import pytest
import torch

from pipeline.metrics import MetricsInputError, retrieval_metrics


def test_perfect_diagonal():
    out = retrieval_metrics(np.eye(4), np.arange(4))
    for direction in ("t2v", "v2t"):
        assert out[direction]["R1"] == 100.0
        assert out[direction]["MdR"] == 1.0
        assert out[direction]["MnR"] == 1.0
        assert out[direction]["geometric_mean"] == pytest.approx(100.0)


def test_single_tie_at_top_is_rank_two_and_not_a_hit():
    sims = np.array(
        [
            [
                0.9,
                0.9,
                0.9,
                0.1,
            ],  # correct item (col 0) tied with 2 others at the top: positions 1,2,3 -> 2.0
            [0.0, 1.0, 0.5, 0.2],  # rank 1
            [0.3, 0.1, 0.2, 0.0],  # col 2 = 0.2 below 0.3 -> rank 2
            [0.0, 0.0, 0.0, 1.0],  # rank 1
        ]
    )
    t2v = retrieval_metrics(sims, np.arange(4))["t2v"]
    assert t2v["R1"] == 50.0
    assert t2v["R5"] == 100.0
    assert t2v["MdR"] == pytest.approx(1.5)  # ranks 2, 1, 2, 1
    assert t2v["MnR"] == pytest.approx(1.5)
    assert t2v["geometric_mean"] == pytest.approx((50.0 * 100.0 * 100.0) ** (1 / 3))


def test_constant_matrix_gives_mean_rank():
    n = 7
    out = retrieval_metrics(torch.zeros(n, n), torch.arange(n))
    assert out["t2v"]["MdR"] == out["t2v"]["MnR"] == (n + 1) / 2
    assert out["t2v"]["R1"] == 0.0 and out["t2v"]["R5"] == 100.0  # rank 4.0 <= 5
    assert out["t2v"]["geometric_mean"] == 0.0
    assert out["v2t"]["MnR"] == (n + 1) / 2


def test_tie_averaged_rank_k_minus_half_is_a_hit_at_k():
    sims = np.zeros((1, 10))
    # 4 videos strictly better; correct video 4 tied with video 5 -> 0-based positions 4, 5 -> 4.5
    sims[0, :4] = 1.0
    sims[0, 4] = sims[0, 5] = 0.5
    t2v = retrieval_metrics(sims, np.array([4]))["t2v"]
    assert t2v["MdR"] == t2v["MnR"] == 5.5
    assert t2v["R1"] == 0.0 and t2v["R5"] == 100.0  # 4.5 < 5, as CE's ``cols < 5``


def test_two_way_tie_at_the_top_is_not_a_hit_at_one():
    sims = np.array([[0.7, 0.7, 0.1], [0.0, 0.2, 0.9]])  # text 0 ties its video 0 with video 1 -> rank 0.5
    t2v = retrieval_metrics(sims, np.array([0, 2]))["t2v"]
    assert t2v["R1"] == 50.0  # CE's R1 is ``cols == 0``: 0.5 is a miss
    assert t2v["R5"] == 100.0
    assert t2v["MnR"] == pytest.approx(1 + (0.5 + 0.0) / 2)


@pytest.mark.parametrize("k", [10, 50])
def test_rank_k_minus_half_is_a_hit_at_k_and_k_plus_half_is_not(k):
    hit = np.zeros((1, k + 2))
    hit[0, : k - 1] = 2.0  # k - 1 better, correct tied with one more -> positions k - 1, k -> k - 0.5
    hit[0, k - 1 : k + 1] = 1.0
    assert retrieval_metrics(hit, np.array([k - 1]))["t2v"][f"R{k}"] == 100.0
    miss = np.zeros((1, k + 2))
    miss[0, :k] = 2.0  # k better, correct tied with one more -> positions k, k + 1 -> k + 0.5
    miss[0, k : k + 2] = 1.0
    assert retrieval_metrics(miss, np.array([k]))["t2v"][f"R{k}"] == 0.0


def test_continuous_scores_hand_computed():
    sims = np.array(
        [
            [0.3, 0.9, 0.1, 0.2],  # video 0 second -> 1
            [0.1, 0.8, 0.4, 0.0],  # video 1 first -> 0
            [0.5, 0.6, 0.55, 0.9],  # video 2 third -> 2
            [0.2, 0.1, 0.3, 0.25],  # video 3 second -> 1
            [0.05, 0.1, 0.2, 0.7],  # video 3 first -> 0
        ]
    )
    out = retrieval_metrics(sims, np.array([0, 1, 2, 3, 3]))
    t2v = out["t2v"]  # 0-based ranks 1, 0, 2, 1, 0
    assert t2v["R1"] == 40.0 and t2v["R5"] == 100.0
    assert t2v["MdR"] == 2.0 and t2v["MnR"] == pytest.approx(1 + 4 / 5)
    v2t = out["v2t"]
    # column 0: .5 .3 .2 .1 .05 -> text 0 at 1 -> 1
    # column 1: .9 .8 .6 .1 .1 -> text 1 at 1 -> 1
    # column 2: .55 .4 .3 .2 .1 -> text 2 at 0 -> 0
    # column 3: .9 .7 .25 .2 0 -> texts 3 and 4 at 2 and 1 -> 1
    assert v2t["R1"] == 25.0 and v2t["MnR"] == pytest.approx(1 + 3 / 4) and v2t["MdR"] == 2.0


def test_quantised_scores_average_every_tie():
    sims = np.array(
        [
            [0.5, 0.5, 0.5, 0.0],  # video 0 tied at positions 0..2 -> 1.0
            [0.5, 0.5, 0.0, 0.0],  # video 1 tied at positions 0, 1 -> 0.5
            [1.0, 0.5, 0.5, 0.5],  # video 2 tied at positions 1..3 -> 2.0
            [0.0, 0.0, 0.0, 0.5],  # video 3 alone at the top -> 0
        ]
    )
    out = retrieval_metrics(sims, np.arange(4))
    t2v = out["t2v"]
    assert t2v["R1"] == 25.0 and t2v["R5"] == 100.0
    assert t2v["MnR"] == pytest.approx(1 + 3.5 / 4) and t2v["MdR"] == pytest.approx(1 + 0.75)
    v2t = out["v2t"]
    # column 0: .5 .5 1 0 -> text 0 among {1, .5, .5, 0} at positions 1, 2 -> 1.5
    # column 1: .5 .5 .5 0 -> text 1 at positions 0..2 -> 1.0
    # column 2: .5 0 .5 0 -> text 2 at positions 0, 1 -> 0.5
    # column 3: 0 0 .5 .5 -> text 3 at positions 0, 1 -> 0.5
    assert v2t["R1"] == 0.0 and v2t["MnR"] == pytest.approx(1 + 3.5 / 4)


def test_twenty_captions_per_video_with_one_masked_slot():
    rng = np.random.default_rng(0)
    num_videos, per_video = 5, 20
    text_to_video = np.repeat(np.arange(num_videos), per_video)
    sims = rng.normal(size=(num_videos * per_video, num_videos))
    sims[np.arange(sims.shape[0]), text_to_video] += 10.0  # every real caption ranks its video first
    masked = 3 * per_video + 7
    sims[masked] = 0.0
    sims[masked, 0] = 100.0  # the padded slot of video 3 would be a t2v miss and top every v2t column 0
    mask = np.ones(sims.shape[0], dtype=bool)
    mask[masked] = False
    out = retrieval_metrics(sims, text_to_video, text_mask=mask)
    assert out["t2v"]["R1"] == 100.0 and out["t2v"]["MnR"] == 1.0
    assert out["v2t"]["R1"] == 100.0
    unmasked = retrieval_metrics(sims, text_to_video)
    assert unmasked["t2v"]["R1"] == pytest.approx(100.0 * 99 / 100)
    assert unmasked["v2t"]["R1"] == pytest.approx(80.0)  # video 0's best caption is now second


def test_v2t_takes_best_rank_among_own_captions():
    # 3 videos, 2 captions each (texts 2v, 2v+1); columns are videos.
    sims = np.array(
        [
            [0.9, 0.0, 0.0],  # video 0 caption a
            [0.1, 0.0, 0.0],  # video 0 caption b
            [0.8, 0.5, 0.0],  # video 1 caption a
            [0.0, 0.6, 0.0],  # video 1 caption b
            [0.95, 0.7, 0.1],  # video 2 caption a
            [0.0, 0.0, 0.2],  # video 2 caption b
        ]
    )
    text_to_video = np.repeat(np.arange(3), 2)
    v2t = retrieval_metrics(sims, text_to_video)["v2t"]
    # column 0 sorted: .95 .9 .8 .1 0 0 -> video 0 captions at ranks 2 and 4 -> best 2
    # column 1 sorted: .7 .6 .5 0 0 0 -> video 1 captions at ranks 3 and 2 -> best 2
    # column 2 sorted: .2 .1 0 0 0 0 -> video 2 captions at ranks 2 and 1 -> best 1
    assert v2t["MnR"] == pytest.approx(5 / 3)
    assert v2t["R1"] == pytest.approx(100 / 3)
    assert v2t["MdR"] == 2.0


def test_v2t_tie_between_own_captions_and_masked_candidates():
    sims = np.array([[0.5, 0.0], [0.5, 0.0], [0.9, 0.3]])
    text_to_video = np.array([0, 0, 1])
    mask = np.array([True, True, False])
    with pytest.raises(MetricsInputError, match="text_to_video"):
        retrieval_metrics(sims, text_to_video[:2], text_mask=mask)
    v2t = retrieval_metrics(sims, text_to_video, text_mask=mask)["v2t"]
    # video 0: its two captions tie at the top of column 0 (the masked 0.9 is no candidate) -> 0.5;
    # video 1: its only caption is masked -> infinite rank
    assert v2t["R1"] == 0.0 and v2t["R5"] == 50.0
    assert v2t["MnR"] == v2t["MdR"] == np.inf


def test_video_without_captions_is_a_v2t_miss_and_a_t2v_candidate():
    sims = np.array([[0.9, 0.1, 0.95], [0.2, 0.8, 0.0]])  # video 2 has no caption
    out = retrieval_metrics(sims, np.array([0, 1]))
    assert out["t2v"]["R1"] == 50.0  # video 2 outranks video 0 for text 0
    v2t = out["v2t"]  # ranks 0, 0, inf over the three columns
    assert v2t["R1"] == pytest.approx(200 / 3) and v2t["R50"] == pytest.approx(200 / 3)
    assert v2t["MdR"] == 1.0 and v2t["MnR"] == np.inf


def _brute_force_ranks(sims, cols, mask):
    """0-based tie-averaged ranks by listing every query's sorted scores (an independent oracle)."""
    t2v = []
    for i in np.flatnonzero(mask):
        ordered = sorted(sims[i], reverse=True)
        t2v.append(np.mean([p for p, v in enumerate(ordered) if v == sims[i, cols[i]]]))
    v2t = []
    for video in range(sims.shape[1]):
        candidates = [sims[t, video] for t in np.flatnonzero(mask)]
        ordered = sorted(candidates, reverse=True)
        own = [sims[t, video] for t in np.flatnonzero(mask) if cols[t] == video]
        ranks = [np.mean([p for p, v in enumerate(ordered) if v == g]) for g in own]
        v2t.append(min(ranks, default=np.inf))
    return np.array(t2v), np.array(v2t)


@pytest.mark.parametrize("levels", [None, 3, 1])
def test_matches_brute_force_on_continuous_quantised_and_constant_scores(levels):
    rng = np.random.default_rng(7)
    sims = rng.normal(size=(40, 12))
    if levels is not None:
        sims = np.round(sims * (levels - 1) / 4) if levels > 1 else np.zeros_like(sims)
    cols = rng.integers(0, 11, size=40)  # video 11 never has a caption
    mask = rng.random(40) > 0.2
    t2v_ranks, v2t_ranks = _brute_force_ranks(sims, cols, mask)
    out = retrieval_metrics(sims, cols, text_mask=mask)
    for direction, ranks in (("t2v", t2v_ranks), ("v2t", v2t_ranks)):
        got = out[direction]
        assert got["R1"] == pytest.approx(100 * np.mean(ranks == 0))
        for k in (5, 10, 50):
            assert got[f"R{k}"] == pytest.approx(100 * np.mean(ranks < k))
        assert got["MdR"] == pytest.approx(np.median(ranks) + 1)
        assert got["MnR"] == pytest.approx(np.mean(ranks) + 1)


def test_bad_inputs_raise():
    with pytest.raises(MetricsInputError, match="2-D"):
        retrieval_metrics(np.zeros(3), np.arange(3))
    with pytest.raises(MetricsInputError, match="lie in"):
        retrieval_metrics(np.zeros((2, 2)), np.array([0, 2]))
    with pytest.raises(MetricsInputError, match="NaN"):
        retrieval_metrics(np.full((2, 2), np.nan), np.arange(2))
    with pytest.raises(MetricsInputError, match="every text is masked"):
        retrieval_metrics(np.zeros((2, 2)), np.arange(2), text_mask=np.zeros(2, dtype=bool))
