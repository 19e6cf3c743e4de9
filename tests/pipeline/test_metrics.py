"""Retrieval metrics: hand-computed cases for the CE/MMT semantics (DESIGN §6)."""

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


def test_fractional_rank_between_k_and_k_plus_one_is_not_a_hit():
    sims = np.zeros((1, 10))
    sims[0, :4] = 1.0  # 4 videos strictly better; correct video 4 tied with video 5 -> positions 5, 6 -> 5.5
    sims[0, 4] = sims[0, 5] = 0.5
    t2v = retrieval_metrics(sims, np.array([4]))["t2v"]
    assert t2v["MdR"] == 5.5
    assert t2v["R5"] == 0.0 and t2v["R10"] == 100.0


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
    # only video 0 has an unmasked caption; its two captions tie at the top of column 0 -> rank 1.5
    assert v2t["MnR"] == 1.5 and v2t["R1"] == 0.0


def test_bad_inputs_raise():
    with pytest.raises(MetricsInputError, match="2-D"):
        retrieval_metrics(np.zeros(3), np.arange(3))
    with pytest.raises(MetricsInputError, match="lie in"):
        retrieval_metrics(np.zeros((2, 2)), np.array([0, 2]))
    with pytest.raises(MetricsInputError, match="NaN"):
        retrieval_metrics(np.full((2, 2), np.nan), np.arange(2))
    with pytest.raises(MetricsInputError, match="every text is masked"):
        retrieval_metrics(np.zeros((2, 2)), np.arange(2), text_mask=np.zeros(2, dtype=bool))
