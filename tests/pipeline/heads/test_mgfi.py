"""MGFI/CMFI head: eq. 1–14 against a loop over (text, video) pairs, words and frames; padding; missing audio;
gradients; InfoNCE by hand."""

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.errors import ConfigError
from pipeline.heads import TextBatch
from pipeline.heads.mgfi import MGFITextEmbedding
from tests.pipeline.heads.conftest import embed, pad_batches, random_batches, seeded_head

DIMS = {"clip": 6, "pann": 5, "s3d": 3}
SMALL = {"dim": 8, "ff_dim": 12, "chunk_size": 3}
OPTIONS = [
    {},
    {"use_word_frame": False},
    {"use_sentence_frame": False},
    {"audio_expert": ""},
    {"learn_temperature": False},
]


def make_head(seed=0, **extra):
    return seeded_head("mgfi", {**SMALL, **extra}, DIMS, seed)


def make_batches():
    video, text = random_batches(DIMS, rows=4, experts=list(DIMS))
    video.masks["clip"][0, 2:] = False
    video.masks["pann"][1, 1:] = False
    text.mask[2, 3:] = False
    video.available[3, 1] = False  # video 3 has no audio
    return video, text


def pad(video, text):
    return pad_batches(video, text, 4e3, -9e2)


def softmax(values):
    top = max(values)
    e = [math.exp(v - top) for v in values]
    return [x / sum(e) for x in e]


def cos(a, b):
    return float(F.cosine_similarity(a, b, dim=0))


def reference_score(head, video, text, t, v):
    """Eq. 1–11 for one (text, video) pair, looping over frames and words."""
    with torch.no_grad():
        c = head.config.dim
        tokens = text.tokens[t][text.mask[t]]
        x_t = head.text_proj(tokens.mean(0))
        x_w = [head.text_proj(tok) for tok in tokens]
        frames = video.features["clip"][v][video.masks["clip"][v]]
        x_v = [head.ln_v(head.frame_proj(f)) for f in frames]
        k = [head.w_k(x) for x in x_v]
        val = [head.w_v(x) for x in x_v]
        q = head.w_q(head.ln_t(x_t))  # eq. 1
        att = softmax([float(q @ kk) / math.sqrt(c) for kk in k])
        z = head.w_o(sum(a * vv for a, vv in zip(att, val, strict=True)))  # eq. 2
        o1 = z + head.ff(head.ln_o(z))  # eq. 3
        z_words, best = [], []
        for w in x_w:
            qw = head.w_q_word(head.ln_w(w))  # eq. 4
            a = [float(qw @ kk) for kk in k]  # eq. 5
            att = softmax([x / math.sqrt(c) for x in a])
            z_words.append(head.w_o(sum(p * vv for p, vv in zip(att, val, strict=True))))  # eq. 6
            best.append(max(a))
        o_tilde = sum(wt * zw for wt, zw in zip(softmax(best), z_words, strict=True))  # eq. 7
        o2 = o_tilde + head.ff(head.ln_o(o_tilde))  # eq. 8
        score = cos((o1 + o2) / 2, x_t)  # eq. 9-10
        if head.expert_names[1:] and video.available[v, 1]:
            rows = video.features["pann"][v][video.masks["pann"][v]]
            score += cos(head.audio_proj(head.ln_a(rows.mean(0))), x_t)  # eq. 11
        return score


def test_forward_matches_loop_reference():
    head = make_head().eval()
    video, text = make_batches()
    got = head.similarity(*embed(head, video, text))
    for t in range(4):
        for v in range(4):
            assert got[t, v].item() == pytest.approx(reference_score(head, video, text, t, v), abs=1e-5)


def test_loss_is_symmetric_infonce_by_hand():
    head = make_head(temperature=0.1, learn_temperature=False).eval()
    t_emb, v_emb = embed(head, *make_batches())
    s = (head.similarity(t_emb, v_emb) / 0.1).tolist()

    def ce(row, i):
        return -row[i] + math.log(sum(math.exp(x) for x in row))

    cols = [list(col) for col in zip(*s, strict=True)]
    expected = sum(ce(s[i], i) for i in range(4)) / 4 + sum(ce(cols[i], i) for i in range(4)) / 4  # eq. 12-14
    assert head.loss(t_emb, v_emb).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("options", OPTIONS)
def test_padding_never_changes_a_score(options):
    head = make_head(**options).eval()
    video, text = make_batches()
    torch.testing.assert_close(
        head.similarity(*embed(head, *pad(video, text))),
        head.similarity(*embed(head, video, text)),
        atol=1e-5,
        rtol=0,
    )


@pytest.mark.parametrize("options", OPTIONS)
def test_gradients_reach_every_parameter(options):
    head = make_head(**options).train()
    head.loss(*embed(head, *make_batches())).backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{options}: no gradient for {name}"


def test_missing_audio_and_missing_frames():
    head = make_head().eval()
    video, text = make_batches()
    t_emb, v_emb = embed(head, video, text)
    torch.testing.assert_close(head.audio_similarity(t_emb, v_emb)[:, 3], torch.zeros(4))
    video.available[1, 0] = False  # no frames for video 1
    s = head.similarity(*embed(head, video, text))
    assert torch.isfinite(s).all()


def test_blocks_and_concatenation_agree():
    head = make_head(chunk_size=1).eval()
    video, text = make_batches()
    t_emb, v_emb = embed(head, video, text)
    whole = head.similarity(t_emb, v_emb)
    short = head.encode_text(TextBatch(text.tokens[:2, :3], text.mask[:2, :3]))
    joined = MGFITextEmbedding.cat([short, t_emb[2:]])
    torch.testing.assert_close(head.similarity(joined[2:], v_emb), whole[2:])


def test_expert_choice_and_errors():
    head = make_head()
    assert head.expert_names == ["clip", "pann"] and head.text_conditioned
    assert make_head(audio_expert="").expert_names == ["clip"]
    assert make_head(frame_expert="s3d", audio_expert="pann").expert_names == ["s3d", "pann"]
    with pytest.raises(ConfigError, match="cannot both be false"):
        make_head(use_sentence_frame=False, use_word_frame=False)
    with pytest.raises(ConfigError, match="no features"):
        make_head(audio_expert="vggish")


def test_expert_with_zero_rows_is_finite():
    head = make_head().train()
    video, text = make_batches()
    video.features["clip"] = torch.zeros(4, 0, DIMS["clip"])
    video.masks["clip"] = torch.zeros(4, 0, dtype=torch.bool)
    loss = head.loss(*embed(head, video, text))
    loss.backward()
    assert torch.isfinite(loss)
