"""T2VLAD head: forward vs a loop-based reimplementation of the paper's equations, padding, missing experts,
gradients, and the inner-product decomposition of DESIGN §3.4."""

import math

import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.heads import TextBatch, VideoBatch, build_head
from pipeline.heads.t2vlad import VARIANTS, T2VLADTextEmbedding, T2VLADVideoEmbedding
from tests.pipeline.heads.conftest import TEXT_DIM, pad_batches, random_batches, scores, seeded_head

DIMS = {"rgb": 6, "audio": 4, "scene": 5}
SMALL = {"dim": 8, "num_clusters": 3, "num_heads": 2, "ff_dim": 16}


def make_head(variant="full", seed=0, **extra):
    return seeded_head("t2vlad", {**SMALL, "variant": variant, **extra}, DIMS, seed)


def make_batches():
    video, text = random_batches(DIMS, rows=3)
    video.masks["rgb"][0, 2] = False
    video.masks["audio"][1, 1:] = False
    text.mask[0, 3:] = False
    text.mask[2, 4:] = False
    return video, text


def with_garbage_padding(video, text):
    return pad_batches(video, text, 1e4, -3e3)


# ---------- direct reimplementation of §3.2-3.5, one pair at a time ----------
def linear(layer, x):
    return [
        sum(layer.weight[o, i] * x[i] for i in range(len(x))) + layer.bias[o]
        for o in range(layer.out_features)
    ]


def norm(v):
    n = math.sqrt(sum(float(a) ** 2 for a in v))
    return [float(a) / n for a in v] if n > 0 else [0.0] * len(v)


def dot(a, b):
    return sum(float(x) * float(y) for x, y in zip(a, b, strict=True))


def geu(unit, x):
    xp = linear(unit.fc, x)
    gate = linear(unit.gating.fc, xp)
    return norm([a * (1 / (1 + math.exp(-float(g)))) for a, g in zip(xp, gate, strict=True)])


def layer_norm(ln, x):
    if isinstance(ln, torch.nn.Identity):
        return x
    mean = sum(float(a) for a in x) / len(x)
    var = sum((float(a) - mean) ** 2 for a in x) / len(x)
    return [
        (float(a) - mean) / math.sqrt(var + ln.eps) * float(w) + float(b)
        for a, w, b in zip(x, ln.weight, ln.bias, strict=True)
    ]


def vlad_loop(rows, vlad_params):
    c, b, cr = vlad_params.centers, vlad_params.bias, vlad_params.residual_centers
    k_total = c.shape[0]
    out = []
    for j in range(cr.shape[0]):
        acc = [0.0] * c.shape[1]
        for z in rows:
            logits = [dot(z, c[k]) + float(b[k]) for k in range(k_total)]
            top = max(logits)
            a = math.exp(logits[j] - top) / sum(math.exp(v - top) for v in logits)
            acc = [acc[d] + a * (float(z[d]) - float(cr[j, d])) for d in range(len(acc))]
        out.append(norm(acc))
    return out


def reference_video(head, video, v):
    """Per-video pieces: present experts, g^v (K lists) and F^v per expert (loops over rows and centers)."""
    with torch.no_grad():
        present = [
            e for i, e in enumerate(head.expert_names) if video.available[v, i] and video.masks[e][v].any()
        ]
        rows = []
        for e in present:
            real = video.features[e][v][video.masks[e][v]]
            rows += [linear(head.local_proj[e], x) for x in real]
        z = head.encoder(torch.tensor(rows, dtype=torch.float32)[None])[0]
        g_video = vlad_loop([layer_norm(head.vlad_norm, list(r)) for r in z], head.text_vlad)
        f_video = {}
        for e in present:
            real = video.features[e][v][video.masks[e][v]]
            pooled = [max(float(real[r, d]) for r in range(real.shape[0])) for d in range(real.shape[1])]
            f_video[e] = geu(head.video_geu[e], pooled)
        return present, g_video, f_video


def reference_text(head, text, t):
    """Per-text pieces: g^t, F^t per expert and the expert logits."""
    with torch.no_grad():
        tokens = text.tokens[t][text.mask[t]]
        rows = [layer_norm(head.vlad_norm, linear(head.text_proj, x)) for x in tokens]
        g_text = vlad_loop(rows, head.text_vlad)
        big_g = [a for g in g_text for a in g]
        f_text = {e: geu(head.text_geu[e], big_g) for e in head.expert_names}
        return g_text, f_text, [float(x) for x in linear(head.expert_weights, big_g)]


def reference_score(head, video_parts, text_parts):
    present, g_video, f_video = video_parts
    g_text, f_text, logits = text_parts
    k = len(g_text)
    s_local = sum(dot(g_text[j], g_video[j]) for j in range(k)) / k
    s_global, total = 0.0, 0.0
    for i, e in enumerate(head.expert_names):
        if e in present:
            weight = math.exp(logits[i])
            s_global += weight * dot(f_text[e], f_video[e])
            total += weight
    return 0.5 * (s_global / total + s_local)


@pytest.mark.parametrize("vlad_input_norm", ["layernorm", "none"])
def test_forward_matches_loop_reference(vlad_input_norm):
    head = make_head(vlad_input_norm=vlad_input_norm).eval()
    if vlad_input_norm == "layernorm":  # a non-trivial affine, so the reference checks it is applied
        torch.nn.init.normal_(head.vlad_norm.weight, 1.0, 0.3)
        torch.nn.init.normal_(head.vlad_norm.bias, 0.0, 0.3)
    video, text = make_batches()
    video.available[3, 1] = False  # video 3 has no audio: masked from local, weight renormalised in global
    got = scores(head, video, text)
    videos = [reference_video(head, video, v) for v in range(4)]
    texts = [reference_text(head, text, t) for t in range(4)]
    for t in range(4):
        for v in range(4):
            assert got[t, v].item() == pytest.approx(reference_score(head, videos[v], texts[t]), abs=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_padding_never_changes_a_score(variant):
    head = make_head(variant).eval()
    video, text = make_batches()
    padded_video, padded_text = with_garbage_padding(video, text)
    torch.testing.assert_close(
        scores(head, padded_video, padded_text), scores(head, video, text), atol=1e-5, rtol=0
    )


def test_unavailable_expert_equals_masked_rows_and_is_ignored():
    head = make_head().eval()
    video, text = make_batches()
    base = scores(head, video, text)
    video.available[2, 0] = False
    flagged = scores(head, video, text)
    video.available[2, 0] = True
    video.masks["rgb"][2] = False
    torch.testing.assert_close(scores(head, video, text), flagged)
    video.features["rgb"][2] = 123.0  # rows of a missing expert carry no information
    torch.testing.assert_close(scores(head, video, text), flagged)
    torch.testing.assert_close(flagged[:, [0, 1, 3]], base[:, [0, 1, 3]])
    assert not torch.allclose(flagged[:, 2], base[:, 2])
    assert head.encode_video(video).available[2].tolist() == [False, True, True]


def test_video_without_any_expert_is_finite():
    head = make_head().eval()
    video, text = make_batches()
    video.available[1] = False
    s = scores(head, video, text)
    assert torch.isfinite(s).all()
    torch.testing.assert_close(s[:, 1], torch.zeros(4))


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_reach_every_parameter(variant):
    head = make_head(variant).train()
    video, text = make_batches()
    head.loss(head.encode_text(text), head.encode_video(video)).backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{variant}: no gradient for {name}"


@pytest.mark.parametrize("variant", ["full", "separate_vlads", "public_port"])
def test_both_modalities_reach_the_assignment_at_the_same_scale(variant, monkeypatch):
    import pipeline.heads.netvlad as netvlad
    import pipeline.heads.t2vlad as t2vlad

    seen = []
    original = netvlad.vlad_assign

    def recording(z, mask, *args):
        seen.append(z[mask.bool()].norm(dim=-1))
        return original(z, mask, *args)

    monkeypatch.setattr(netvlad, "vlad_assign", recording)
    monkeypatch.setattr(t2vlad, "vlad_assign", recording)
    video, text = make_batches()
    text.tokens = text.tokens * 100.0  # text rows far larger than the post-norm video rows
    for norm_mode in ("layernorm", "none"):
        seen.clear()
        head = make_head(variant, vlad_input_norm=norm_mode).eval()
        head.encode_video(video)
        head.encode_text(text)
        video_norms, text_norms = seen
        if norm_mode == "layernorm":  # zero-mean unit-variance rows: norm √C on both sides
            expected = torch.full_like(video_norms, math.sqrt(SMALL["dim"]))
            torch.testing.assert_close(video_norms, expected, rtol=1e-3, atol=0)
            torch.testing.assert_close(
                text_norms, torch.full_like(text_norms, expected[0]), rtol=1e-3, atol=0
            )
        else:
            assert text_norms.mean() > 5 * video_norms.mean()


@pytest.mark.parametrize("vlad_input_norm", ["layernorm", "none"])
@pytest.mark.parametrize("variant", ["full", "separate_vlads", "public_port"])
def test_center_view_shows_the_assignments_the_scores_use(variant, vlad_input_norm, monkeypatch):
    import pipeline.heads.netvlad as netvlad
    import pipeline.heads.t2vlad as t2vlad

    used = []
    original = netvlad.vlad_assign

    def recording(*args):
        used.append(original(*args))
        return used[-1]

    monkeypatch.setattr(netvlad, "vlad_assign", recording)
    monkeypatch.setattr(t2vlad, "vlad_assign", recording)
    head = make_head(variant, vlad_input_norm=vlad_input_norm).eval()
    video, text = make_batches()
    first_video = VideoBatch(
        {e: x[:1] for e, x in video.features.items()},
        {e: m[:1] for e, m in video.masks.items()},
        video.available[:1],
        video.experts,
    )
    first_text = TextBatch(text.tokens[:1], text.mask[:1])
    head.encode_video(first_video)
    head.encode_text(first_text)
    video_used, text_used = used[0][0], used[1][0]
    used.clear()
    view = head.center_assignments(first_text, first_video)
    k = SMALL["num_clusters"]
    torch.testing.assert_close(view.text, text_used[:, :k])
    torch.testing.assert_close(view.video, video_used[:, :k])


def test_public_port_detaches_video_assignment():
    head = make_head("public_port").train()
    video, _ = make_batches()
    emb = head.encode_video(video)
    emb.centers.sum().backward()
    assert head.text_vlad.centers.grad is None
    assert head.video_bias.grad is not None and head.video_residual_centers.grad is not None


@pytest.mark.parametrize("variant", VARIANTS)
def test_query_vectors_reproduce_similarity(variant):
    head = make_head(variant).eval()
    video, text = make_batches()
    t_emb, v_emb = head.encode_text(text), head.encode_video(video)
    q, vv = head.query_vectors(t_emb), head.video_vectors(v_emb)
    torch.testing.assert_close(q @ vv.t(), head.similarity(t_emb, v_emb), atol=1e-5, rtol=0)


def test_query_vectors_with_an_availability_pattern():
    head = make_head().eval()
    video, text = make_batches()
    video.available[:, 2] = False  # no video has scene
    t_emb, v_emb = head.encode_text(text), head.encode_video(video)
    q = head.query_vectors(t_emb, available=torch.tensor([True, True, False]))
    torch.testing.assert_close(
        q @ head.video_vectors(v_emb).t(), head.similarity(t_emb, v_emb), atol=1e-5, rtol=0
    )


def test_scoring_branches_select_scores_in_eval_only():
    head = make_head()
    video, text = make_batches()
    head.set_scoring_branches("local")
    t_emb, v_emb = head.encode_text(text), head.encode_video(video)
    full = 0.5 * (head.global_similarity(t_emb, v_emb) + head.local_similarity(t_emb, v_emb))
    torch.testing.assert_close(head.similarity(t_emb, v_emb), full)  # training mode: always both
    head.eval()
    torch.testing.assert_close(head.similarity(t_emb, v_emb), head.local_similarity(t_emb, v_emb))
    head.set_scoring_branches("global")
    torch.testing.assert_close(head.similarity(t_emb, v_emb), head.global_similarity(t_emb, v_emb))
    head.set_scoring_branches("both")
    torch.testing.assert_close(head.similarity(t_emb, v_emb), full)
    assert make_head().eval_branches == "both"


def test_scoring_branches_refuse_a_missing_branch_or_an_unknown_name():
    with pytest.raises(ConfigError, match="not available"):
        make_head("no_global").set_scoring_branches("global")
    with pytest.raises(ConfigError, match="branches must be"):
        make_head().set_scoring_branches("neither")


def test_embeddings_slice_and_concatenate():
    head = make_head().eval()
    video, text = make_batches()
    t_emb, v_emb = head.encode_text(text), head.encode_video(video)
    short = TextBatch(text.tokens[:2, :3], text.mask[:2, :3])
    parts = [head.encode_text(short), t_emb[2:]]
    joined = T2VLADTextEmbedding.cat(parts)
    assert len(joined) == 4
    v_joined = T2VLADVideoEmbedding.cat([v_emb[:1], v_emb[1:]]).to("cpu")
    full = head.similarity(t_emb, v_emb)
    torch.testing.assert_close(head.similarity(joined[2:], v_joined), full[2:])
    torch.testing.assert_close(
        head.similarity(t_emb[torch.tensor([3, 0])], v_joined[1]), full[[3, 0]][:, [1]]
    )


def test_config_errors_name_the_problem():
    with pytest.raises(
        ConfigError, match=r"head 't2vlad': clusters: unknown key \(known: assignment_norm, dim, dropout, "
    ):
        build_head("t2vlad", {"clusters": 3}, DIMS, TEXT_DIM)
    with pytest.raises(ConfigError, match="num_clusters: Input should be a valid integer, got '3'"):
        build_head("t2vlad", {"num_clusters": "3"}, DIMS, TEXT_DIM)
    with pytest.raises(ConfigError, match="variant"):
        build_head("t2vlad", {"variant": "nope"}, DIMS, TEXT_DIM)
    with pytest.raises(ConfigError, match="unknown head"):
        build_head("mmt", {}, DIMS, TEXT_DIM)
    head = make_head(experts=["scene", "rgb"])
    assert head.expert_names == ["scene", "rgb"]
    rebuilt = build_head(**head.build_args())
    assert rebuilt.expert_names == ["scene", "rgb"] and rebuilt.config == head.config


def test_expert_with_zero_rows_and_nan_padding():
    head = make_head().train()
    video, text = make_batches()
    video.features["audio"] = torch.zeros(4, 0, DIMS["audio"])  # no video of the batch has audio rows
    video.masks["audio"] = torch.zeros(4, 0, dtype=torch.bool)
    video.features["rgb"][0, 2] = float("nan")  # a padded row (mask False) may hold anything
    loss = head.loss(head.encode_text(text), head.encode_video(video))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)
    assert not head.encode_video(video).available[:, 1].any()


# ---------- the public port's options (configs/msrvtt/t2vlad-port.toml) ----------
PORT_OPTIONS = {
    "loss": "hardest_negative",
    "assignment_norm": "batchnorm",
    "gating_norm": "batchnorm",
    "projection_l2": True,
    "norm_first": True,
    "final_norm": True,
}


def test_port_options_default_to_the_paper():
    head = make_head()
    assert (
        head.text_vlad.bias is not None and head.text_assign_norm is None and head.video_assign_norm is None
    )
    assert head.video_geu["rgb"].gating.norm is None and head.text_geu["rgb"].gating.norm is None
    assert not head.encoder.norm_first and isinstance(head.encoder_norm, torch.nn.Identity)
    assert head.config.loss == "max_margin" and not head.config.projection_l2


def test_hardest_negative_option_is_the_loss():
    from pipeline.heads.losses import hardest_negative_loss, max_margin_ranking_loss

    video, text = make_batches()
    for loss, fn in (("hardest_negative", hardest_negative_loss), ("max_margin", max_margin_ranking_loss)):
        head = make_head(loss=loss, margin=0.2).eval()
        t_emb, v_emb = head.encode_text(text), head.encode_video(video)
        torch.testing.assert_close(head.loss(t_emb, v_emb), fn(head.similarity(t_emb, v_emb), 0.2))


@pytest.mark.parametrize("variant", ["full", "separate_vlads", "public_port"])
def test_assignment_batchnorm_replaces_the_bias(variant):
    head = make_head(variant, assignment_norm="batchnorm").train()
    assert isinstance(head.text_assign_norm, torch.nn.BatchNorm1d)
    assert isinstance(head.video_assign_norm, torch.nn.BatchNorm1d)
    assert head.text_vlad.bias is None
    if variant == "public_port":
        assert head.video_bias is None
    video, text = make_batches()
    seen = {}
    for side, norm in (("text", head.text_assign_norm), ("video", head.video_assign_norm)):
        norm.register_forward_hook(lambda m, i, o, side=side: seen.setdefault(side, o.detach()))
    head.encode_text(text)
    head.encode_video(video)
    real_rows = {"text": int(text.mask.sum()), "video": int(sum(m.sum() for m in video.masks.values()))}
    for side, out in seen.items():  # batch statistics over the real rows only: zero mean, unit variance
        assert out.shape == (real_rows[side], SMALL["num_clusters"] + 1)
        torch.testing.assert_close(out.mean(0), torch.zeros(out.shape[1]), atol=1e-5, rtol=0)
        torch.testing.assert_close(out.var(0, unbiased=False), torch.ones(out.shape[1]), atol=1e-3, rtol=0)


def test_vlad_assign_with_batchnorm_is_softmax_of_the_normalised_logits():
    from pipeline.heads.netvlad import vlad_assign

    g = torch.Generator().manual_seed(3)
    z, centers = torch.randn(2, 4, 5, generator=g), torch.randn(3, 5, generator=g)
    mask = torch.tensor([[True, True, False, True], [True, False, False, True]])
    norm = torch.nn.BatchNorm1d(3).train()
    logits = torch.einsum("bmc,kc->bmk", z, centers)[mask]
    expected = ((logits - logits.mean(0)) / torch.sqrt(logits.var(0, unbiased=False) + norm.eps)).softmax(-1)
    got = vlad_assign(z, mask, centers, None, norm)
    torch.testing.assert_close(got[mask], expected)
    assert (got[~mask] == 0).all()


def test_gating_batchnorm_uses_the_present_rows_only():
    from pipeline.heads.gating import GatedEmbeddingUnit

    torch.manual_seed(0)
    unit = GatedEmbeddingUnit(4, 3, batch_norm=True).train()
    x = torch.randn(5, 4)
    present = torch.tensor([True, False, True, True, False])
    x_padded = x.clone()
    x_padded[~present] = 0.0
    torch.testing.assert_close(unit(x_padded, present)[present], unit(x[present]))
    assert isinstance(unit.gating.norm, torch.nn.BatchNorm1d)
    head = make_head(gating_norm="batchnorm")
    assert isinstance(head.video_geu["audio"].gating.norm, torch.nn.BatchNorm1d)
    assert isinstance(head.text_geu["audio"].gating.norm, torch.nn.BatchNorm1d)


def test_projection_l2_gives_unit_rows_into_the_transformer():
    video, _ = make_batches()
    for projection_l2 in (True, False):
        head = make_head(projection_l2=projection_l2).eval()
        inputs = []
        head.encoder.register_forward_pre_hook(lambda m, args, seen=inputs: seen.append(args[0]))
        head.encode_video(video)
        norms = inputs[0].norm(dim=-1)
        unit = torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
        assert unit == projection_l2


def test_pre_norm_and_final_layer_norm_structure():
    head = make_head(norm_first=True, final_norm=True, ff_dim=8, dropout=0.0).eval()
    assert (
        head.encoder.norm_first and head.encoder.linear1.out_features == 8 and head.encoder.dropout.p == 0.0
    )
    assert isinstance(head.encoder_norm, torch.nn.LayerNorm)
    video, _ = make_batches()
    feats, masks = head.prepare_video(video)
    rows, mask = head._video_rows(feats, masks)
    z = torch.cat([head.local_proj[e](feats[e]) for e in head.expert_names], dim=1)
    padding = ~mask & mask.any(dim=1, keepdim=True)
    # pre-norm: x + SA(LN1(x)), then + FF(LN2(.)); then the final LayerNorm
    h = z + head.encoder._sa_block(head.encoder.norm1(z), None, padding, False)
    h = h + head.encoder._ff_block(head.encoder.norm2(h))
    torch.testing.assert_close(rows, head.encoder_norm(h), atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", ["full", "public_port"])
def test_port_options_together_train_and_score(variant):
    head = make_head(variant, **PORT_OPTIONS).train()
    video, text = make_batches()
    loss = head.loss(head.encode_text(text), head.encode_video(video))
    loss.backward()
    assert torch.isfinite(loss)
    assert head.text_assign_norm.weight.grad is not None and head.video_assign_norm.weight.grad is not None
    head.eval()
    t_emb, v_emb = head.encode_text(text), head.encode_video(video)
    torch.testing.assert_close(
        head.query_vectors(t_emb) @ head.video_vectors(v_emb).t(),
        head.similarity(t_emb, v_emb),
        atol=1e-5,
        rtol=0,
    )
    one_video = VideoBatch(
        {e: x[:1] for e, x in video.features.items()},
        {e: m[:1] for e, m in video.masks.items()},
        video.available[:1],
    )
    assignments = head.center_assignments(TextBatch(text.tokens[:1], text.mask[:1]), one_video)
    assert assignments.text.shape[1] == assignments.video.shape[1] == SMALL["num_clusters"]


def test_masked_batch_norm_leaves_padding_alone_and_copes_with_one_row():
    from pipeline.heads.base import masked_batch_norm

    torch.manual_seed(0)
    norm = torch.nn.BatchNorm1d(3).train()
    x = torch.randn(2, 4, 3)
    mask = torch.tensor([[True, False, True, True], [False, False, True, False]])
    out = masked_batch_norm(norm, x, mask)
    torch.testing.assert_close(out[~mask], x[~mask])
    fresh = torch.nn.BatchNorm1d(3).train()
    torch.testing.assert_close(out[mask], fresh(x[mask]))
    one = torch.zeros(2, 4, dtype=torch.bool)
    one[1, 2] = True  # a single row: normalised with the running statistics
    expected = (x[one] - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps)
    torch.testing.assert_close(masked_batch_norm(norm, x, one)[one], expected)
