"""Losses against hand-computed values."""

import math

import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.heads.losses import hardest_negative_loss, max_margin_ranking_loss, symmetric_infonce

S = torch.tensor([[0.5, 0.4, 0.1], [0.2, 0.3, 0.6], [0.0, 0.1, 0.9]])


def test_max_margin_ranking_by_hand():
    # text side (rows):  relu(.1 - .5 + .4)=0, relu(.1-.5+.1)=0 | relu(.1-.3+.2)=0, relu(.1-.3+.6)=.4 | 0, 0
    # video side (cols): relu(.1-.5+.2)=0, relu(.1-.5+0)=0 | relu(.1-.3+.4)=.2, relu(.1-.3+.1)=0 | relu(.1-.9+.1)=0,
    #                    relu(.1-.9+.6)=0
    assert max_margin_ranking_loss(S, margin=0.1).item() == pytest.approx((0.4 + 0.2) / 12)
    # fix_norm=False keeps the 6 diagonal terms relu(margin) = .1 in a mean over 18
    assert max_margin_ranking_loss(S, 0.1, fix_norm=False).item() == pytest.approx((0.6 + 6 * 0.1) / 18)


def test_max_margin_single_pair_is_zero():
    assert max_margin_ranking_loss(torch.ones(1, 1, requires_grad=True), 0.2).item() == 0.0


def hardest_negative_by_loop(scores, margin):
    n = len(scores)
    text_side = video_side = 0.0
    for i in range(n):
        text_side += max(max(0.0, margin - scores[i][i] + scores[i][j]) for j in range(n) if j != i)
        video_side += max(max(0.0, margin - scores[i][i] + scores[j][i]) for j in range(n) if j != i)
    return text_side / n + video_side / n


def test_hardest_negative_by_hand():
    # per text (rows): max(0, 0) | max(0, .4) | max(0, 0); per video (cols): 0 | max(.2, 0) | 0
    assert hardest_negative_loss(S, margin=0.1).item() == pytest.approx(0.4 / 3 + 0.2 / 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hardest_negative_matches_a_loop(seed):
    scores = torch.randn(5, 5, generator=torch.Generator().manual_seed(seed)) * 0.3
    expected = hardest_negative_by_loop(scores.tolist(), 0.2)
    assert hardest_negative_loss(scores, 0.2).item() == pytest.approx(expected, rel=1e-6)


def test_hardest_negative_single_pair_is_zero_and_rejects_non_square():
    assert hardest_negative_loss(torch.ones(1, 1, requires_grad=True), 0.2).item() == 0.0
    with pytest.raises(ConfigError, match="hardest_negative_loss"):
        hardest_negative_loss(torch.zeros(2, 3), 0.2)


def test_symmetric_infonce_by_hand():
    tau = 0.5

    def ce(row, i):
        return -row[i] / tau + math.log(sum(math.exp(x / tau) for x in row))

    rows = S.tolist()
    cols = S.t().tolist()
    t2v = sum(ce(rows[i], i) for i in range(3)) / 3
    v2t = sum(ce(cols[i], i) for i in range(3)) / 3
    assert symmetric_infonce(S, tau).item() == pytest.approx(t2v + v2t, rel=1e-5)
    assert symmetric_infonce(S, torch.tensor(tau), reduction="mean").item() == pytest.approx(
        (t2v + v2t) / 2, rel=1e-5
    )


def test_non_square_is_an_error():
    with pytest.raises(ConfigError, match="square"):
        max_margin_ranking_loss(torch.zeros(2, 3), 0.1)
    with pytest.raises(ConfigError, match="reduction"):
        symmetric_infonce(S, 1.0, reduction="max")
