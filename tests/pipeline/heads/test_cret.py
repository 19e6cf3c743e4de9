"""CRET head: CCM + Gaussian global statistics vs a per-video loop reimplementation, GEES logits and loss by hand,
padding, gradients, and the inner-product decomposition."""

import math

import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.heads import build_head
from pipeline.heads.cret import CRETVideoEmbedding
from tests.pipeline.heads.conftest import TEXT_DIM, embed, pad_batches, random_batches, seeded_head

DIMS = {"cait": 6, "patches": 5}
SMALL = {
    "dim": 8,
    "num_heads": 2,
    "ff_dim": 16,
    "num_centers": 3,
    "ccm_layers": 1,
    "temporal_layers": 2,
    "max_rows": 8,
}
OPTIONS = [
    {},
    {"covariance": "full", "global_score": "gees"},
    {"global_score": "gees"},
    {"global_loss": "nce"},
    {"local_expert": "patches"},
    {"share_decoder": False},
]


def make_head(seed=0, **extra):
    return seeded_head("cret", {**SMALL, **extra}, DIMS, seed)


def make_batches():
    video, text = random_batches(DIMS, rows=4, experts=list(DIMS))
    video.masks["cait"][0, 3] = False
    video.masks["cait"][2, 2:] = False
    video.masks["patches"][1, 0] = False
    text.mask[1, 2:] = False
    return video, text


def pad(video, text):
    return pad_batches(video, text, 5e3, -7e2)


def unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def reference_video(head, video, v):
    """Per-video loop: temporal encoder and CCM on the real rows only, Gaussian statistics by explicit sums."""
    with torch.no_grad():
        m = video.masks["cait"][v]
        idx = [r for r in range(m.shape[0]) if m[r]]
        x = video.features["cait"][v][idx]
        h = head.temporal((head.frame_proj(x) + head.positions[idx])[None])[0]
        frames = [unit(head.frame_global(row).tolist()) for row in h]
        n, d = len(frames), len(frames[0])
        mean = [sum(f[i] for f in frames) / n for i in range(d)]
        cov = [
            [sum((f[i] - mean[i]) * (f[j] - mean[j]) for f in frames) / n for j in range(d)] for i in range(d)
        ]
        centers = head.video_ccm(head.center_queries[None], h[None])[0]
        return [unit(c.tolist()) for c in centers], mean, cov


def reference_text(head, text, t):
    with torch.no_grad():
        tokens = text.tokens[t][text.mask[t]]
        centers = head.text_ccm(head.center_queries[None], head.text_local(tokens)[None])[0]
        return [unit(c.tolist()) for c in centers], unit(head.text_global(text.tokens[t, 0]).tolist())


def dot(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_forward_and_gees_match_loop_reference(covariance):
    head = make_head(covariance=covariance, shrinkage=0.25, global_score="gees").eval()
    video, text = make_batches()
    t_emb, v_emb = embed(head, video, text)
    tau, lam = head.config.temperature, 0.25
    sims, logits = head.similarity(t_emb, v_emb), head.gees_logits(t_emb, v_emb)
    for v in range(4):
        zv, mean, cov = reference_video(head, video, v)
        d = len(mean)
        if covariance == "diag":
            cov = [[cov[i][j] if i == j else 0.0 for j in range(d)] for i in range(d)]
        else:
            avg_var = sum(cov[i][i] for i in range(d)) / d
            cov = [
                [(1 - lam) * cov[i][j] + (lam * avg_var if i == j else 0.0) for j in range(d)]
                for i in range(d)
            ]
        for t in range(4):
            zt, tg = reference_text(head, text, t)
            local = sum(dot(zt[c], zv[c]) for c in range(len(zt))) / len(zt)
            quad = sum(tg[i] * cov[i][j] * tg[j] for i in range(d) for j in range(d))
            assert logits[t, v].item() == pytest.approx(dot(tg, mean) / tau + 0.5 * quad / tau**2, abs=1e-3)
            assert sims[t, v].item() == pytest.approx(
                0.5 * (local + dot(tg, mean) + 0.5 * quad / tau), abs=1e-4
            )


def test_loss_by_hand():
    head = make_head().eval()
    video, text = make_batches()
    t_emb, v_emb = embed(head, video, text)
    tau = head.config.temperature

    def sym_ce(matrix):
        rows, cols = matrix.tolist(), matrix.t().tolist()

        def ce(row, i):
            return -row[i] + math.log(sum(math.exp(x) for x in row))

        return (sum(ce(rows[i], i) for i in range(4)) + sum(ce(cols[i], i) for i in range(4))) / 8

    local = head.local_similarity(t_emb, v_emb) / tau
    expected = sym_ce(local) + sym_ce(head.gees_logits(t_emb, v_emb))
    assert head.loss(t_emb, v_emb).item() == pytest.approx(expected, rel=1e-4)


def test_gees_equals_nce_for_single_frame_videos():
    gees, nce = make_head().eval(), make_head(global_loss="nce").eval()
    video, text = make_batches()
    for key in video.masks:
        video.masks[key][:] = False
        video.masks[key][:, 0] = True
    t1, v1 = embed(gees, video, text)
    t2, v2 = embed(nce, video, text)
    torch.testing.assert_close(v1.cov, torch.zeros_like(v1.cov))
    torch.testing.assert_close(gees.gees_logits(t1, v1), nce.gees_logits(t2, v2))


@pytest.mark.parametrize("options", OPTIONS)
def test_padding_never_changes_a_score(options):
    head = make_head(**options).eval()
    video, text = make_batches()
    padded = pad(video, text)
    torch.testing.assert_close(
        head.similarity(*embed(head, *padded)), head.similarity(*embed(head, video, text)), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("options", OPTIONS)
def test_query_vectors_reproduce_similarity(options):
    head = make_head(**options).eval()
    t_emb, v_emb = embed(head, *make_batches())
    q, vv = head.query_vectors(t_emb), head.video_vectors(v_emb)
    torch.testing.assert_close(q @ vv.t(), head.similarity(t_emb, v_emb), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("options", OPTIONS)
def test_gradients_reach_every_parameter(options):
    head = make_head(**options).train()
    video, text = make_batches()
    head.loss(*embed(head, video, text)).backward()
    rows = video.features["cait"].shape[1]
    for name, p in head.named_parameters():
        grad = p.grad[:rows] if name == "positions" else p.grad  # only the first R position rows are used
        assert grad is not None and grad.abs().sum() > 0, f"{options}: no gradient for {name}"


def test_missing_frames_give_finite_scores_and_cat_works():
    head = make_head().eval()
    video, text = make_batches()
    video.available[3, 0] = False
    t_emb, v_emb = embed(head, video, text)
    assert torch.isfinite(head.similarity(t_emb, v_emb)).all()
    joined = CRETVideoEmbedding.cat([v_emb[:2], v_emb[2:]])
    torch.testing.assert_close(head.similarity(t_emb, joined), head.similarity(t_emb, v_emb))


def test_expert_choice_and_errors():
    head = make_head()
    assert head.expert_names == ["cait"]
    assert build_head("cret", SMALL, {"rgb": 4, "audio": 3}, TEXT_DIM).expert_names == ["rgb"]
    with pytest.raises(ConfigError, match="no features"):
        build_head("cret", {"expert": "s3d"}, DIMS, TEXT_DIM)
    with pytest.raises(ConfigError, match="global_loss"):
        build_head("cret", {"global_loss": "mse"}, DIMS, TEXT_DIM)
    video, text = make_batches()
    video.features["cait"] = torch.zeros(4, 9, DIMS["cait"])
    video.masks["cait"] = torch.ones(4, 9, dtype=torch.bool)
    with pytest.raises(ConfigError, match="max_rows"):
        head.encode_video(video)


def test_expert_with_zero_rows_is_finite():
    head = make_head(local_expert="patches").train()
    video, text = make_batches()
    video.features["patches"] = torch.zeros(4, 0, DIMS["patches"])
    video.masks["patches"] = torch.zeros(4, 0, dtype=torch.bool)
    loss = head.loss(*embed(head, video, text))
    loss.backward()
    assert torch.isfinite(loss)
