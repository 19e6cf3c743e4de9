"""The contract every registered head keeps (``pipeline.heads.base.RetrievalHead``), run over ``head_names()``: a
new head gets these checks by existing. Its tiny ``DIMS`` and ``SMALL`` config come from its own ``test_<head>.py``."""

from __future__ import annotations

import importlib

import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.heads import RetrievalHead, TextBatch, VideoBatch, build_head, head_class, head_names
from tests.pipeline.heads.conftest import TEXT_DIM, embed, pad_batches, random_batches, seeded_head


def tiny(name: str) -> tuple[dict[str, int], dict]:
    """``DIMS`` and ``SMALL`` of the head's own test module."""
    module = importlib.import_module(f"tests.pipeline.heads.test_{name}")
    return module.DIMS, module.SMALL


def make(name: str, **extra) -> tuple[RetrievalHead, VideoBatch, TextBatch]:
    """A seeded tiny head and batches with some padding rows/tokens and every expert available."""
    dims, small = tiny(name)
    head = seeded_head(name, {**small, **extra}, dims)
    video, text = random_batches(dims, b=4, rows=4, tokens=6, experts=list(dims))
    first = next(iter(dims))
    video.masks[first][0, 2:] = False
    text.mask[1, 3:] = False
    return head, video, text


@pytest.fixture(params=head_names())
def name(request) -> str:
    return request.param


def test_registry_entry(name):
    cls = head_class(name)
    assert cls.name == name and issubclass(cls, RetrievalHead)
    assert cls.__module__ == f"pipeline.heads.{name}"
    cls.config_class()  # every option has a default (the paper's setting)
    for options in cls.ablation_variants.values():  # every variant is a valid config
        build_head(name, {**tiny(name)[1], **options}, tiny(name)[0], TEXT_DIM)
    assert "both" in cls.scoring_branches
    for variant, branches in cls.ablation_rows.values():  # every table row is a variant scored a known way
        assert variant in cls.ablation_variants and branches in cls.scoring_branches


def test_scoring_branches_outside_the_class_choices_are_refused(name):
    head, _, _ = make(name)
    head.set_scoring_branches("both")
    with pytest.raises(ConfigError, match="branches must be"):
        head.set_scoring_branches("neither")


def test_output_shapes(name):
    head, video, text = make(name)
    head.eval()
    t_emb = head.encode_text(TextBatch(text.tokens[:3], text.mask[:3]))
    v_emb = head.encode_video(video)
    assert isinstance(v_emb, head.video_embedding)
    assert len(v_emb) == 4 and len(t_emb) == 3
    sims = head.similarity(t_emb, v_emb)
    assert sims.shape == (3, 4) and torch.isfinite(sims).all()
    head.train()
    loss = head.loss(*embed(head, video, text))
    assert loss.dim() == 0 and torch.isfinite(loss)


def test_nan_padding_never_changes_a_score(name):
    head, video, text = make(name)
    head.eval()
    video.features[next(iter(video.features))][0, 2:] = float("nan")  # rows the mask marks as padding
    padded_video, padded_text = pad_batches(video, text, float("nan"), float("nan"))
    expected = head.similarity(*embed(head, video, text))
    assert torch.isfinite(expected).all()
    torch.testing.assert_close(
        head.similarity(*embed(head, padded_video, padded_text)), expected, atol=1e-5, rtol=0
    )


def test_index_vectors(name):
    head, video, text = make(name)
    head.eval()
    t_emb, v_emb = embed(head, video, text)
    q, v = head.index_query_vectors(t_emb), head.index_video_vectors(v_emb)
    assert q.shape[0] == 4 and v.shape[0] == 4 and q.shape[1] == v.shape[1]
    exact = head.index_exact(v_emb)
    assert exact.shape == (4,) and exact.dtype == torch.bool
    if head.text_conditioned:
        assert not exact.any()
    else:  # every expert is present: the inner product is the score
        assert exact.all()
        torch.testing.assert_close(q @ v.t(), head.similarity(t_emb, v_emb), atol=1e-5, rtol=0)


def test_state_dict_round_trip_gives_identical_scores(name):
    head, video, text = make(name)
    trained = seeded_head(name, {**tiny(name)[1]}, tiny(name)[0], seed=5)  # other weights than ``head``
    rebuilt = build_head(**trained.build_args())
    rebuilt.load_state_dict(trained.state_dict())
    trained.eval(), rebuilt.eval()
    expected = trained.similarity(*embed(trained, video, text))
    assert not torch.equal(head.eval().similarity(*embed(head, video, text)), expected)
    torch.testing.assert_close(rebuilt.similarity(*embed(rebuilt, video, text)), expected, atol=0, rtol=0)


def test_one_optimiser_step_changes_parameters(name):
    head, video, text = make(name)
    head.train()
    before = {k: p.detach().clone() for k, p in head.named_parameters()}
    optimiser = torch.optim.Adam(head.parameters(), lr=1e-2)
    loss = head.loss(*embed(head, video, text))
    assert torch.isfinite(loss)
    loss.backward()
    optimiser.step()
    unchanged = [k for k, p in head.named_parameters() if torch.equal(p.detach(), before[k])]
    assert unchanged == []


def test_optional_capabilities(name):
    head, video, text = make(name)
    head.eval()
    t_emb, v_emb = embed(head, video, text)
    explained = head.explain(head.expert_names, t_emb[0], v_emb)
    if explained is not None:
        _, per_video = explained
        assert len(per_video) == 4
    if head.has_center_view:
        a = head.center_assignments(TextBatch(text.tokens[:1], text.mask[:1]), _first(video))
        assert a.text.shape[0] == 6 and a.video.shape[0] == len(a.rows) == a.row_mask.shape[0]
        assert a.text.shape[1] == a.video.shape[1]


def _first(video: VideoBatch) -> VideoBatch:
    """The first video of a batch."""
    return VideoBatch(
        {e: x[:1] for e, x in video.features.items()},
        {e: m[:1] for e, m in video.masks.items()},
        video.available[:1],
        video.experts,
    )
