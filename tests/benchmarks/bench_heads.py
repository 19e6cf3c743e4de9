"""Benchmark: video-side encoding of 1,000 videos and the full 1,000 x 1,000 text-video similarity, per head.

MSR-VTT-like inputs (the T2VLAD / MMT setup): 8 experts x up to 30 rows with the reference feature sizes
s3d 1024, vggish 128, pann 2048, scene 2208, clip 512, ocr 384, rgb 1280, speech 384; 37 text tokens of a
BERT-base-sized encoder (768). Every head runs with its paper defaults (T2VLAD C=768, K=9) in eval mode under
``torch.no_grad``. The reference is an MMT-like video transformer measured in the same run: per-expert
``Linear(D_e, 768)`` + expert embedding, the 8 x 30 rows plus 8 aggregation tokens through a 4-layer, 4-head
``nn.TransformerEncoder`` (d = 768, ff 3072). The T2VLAD paper reports 0.4 s (T2VLAD) vs 1.1 s (MMT) for the
video encoding on a V100; the ratio column compares each head with the MMT-like encoder on this machine.

Usage: ``python tests/benchmarks/bench_heads.py [--videos 1000] [--rows 30] [--batch 100] [--device cpu]
[--threads N] [--json OUT]``. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

import pipeline  # noqa: F401
from pipeline.heads import TextBatch, VideoBatch, build_head

EXPERT_DIMS = {
    "s3d": 1024,
    "vggish": 128,
    "pann": 2048,
    "scene": 2208,
    "clip": 512,
    "ocr": 384,
    "rgb": 1280,
    "speech": 384,
}
TEXT_DIM = 768
TEXT_TOKENS = 37
HEAD_OPTIONS = {
    "t2vlad": {},
    "cret": {"expert": "clip"},
    "mgfi": {"frame_expert": "clip", "audio_expert": "pann"},
}


def make_videos(n: int, rows: int, seed: int = 0) -> VideoBatch:
    """Random features; rows per expert drawn in [rows/2, rows] (padding masked), ocr/speech absent for 30 %."""
    g = torch.Generator().manual_seed(seed)
    feats, masks = {}, {}
    available = torch.ones(n, len(EXPERT_DIMS), dtype=torch.bool)
    for j, (e, d) in enumerate(EXPERT_DIMS.items()):
        feats[e] = torch.randn(n, rows, d, generator=g)
        lengths = torch.randint(max(1, rows // 2), rows + 1, (n,), generator=g)
        masks[e] = torch.arange(rows).unsqueeze(0) < lengths.unsqueeze(1)
        if e in ("ocr", "speech"):
            available[:, j] = torch.rand(n, generator=g) > 0.3
            masks[e] &= available[:, j : j + 1]
    return VideoBatch(features=feats, masks=masks, available=available)


def make_texts(n: int, seed: int = 1) -> TextBatch:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(8, TEXT_TOKENS + 1, (n,), generator=g)
    mask = torch.arange(TEXT_TOKENS).unsqueeze(0) < lengths.unsqueeze(1)
    return TextBatch(tokens=torch.randn(n, TEXT_TOKENS, TEXT_DIM, generator=g), mask=mask)


def video_slice(batch: VideoBatch, i: int, j: int, device: torch.device) -> VideoBatch:
    return VideoBatch(
        features={e: t[i:j] for e, t in batch.features.items()},
        masks={e: t[i:j] for e, t in batch.masks.items()},
        available=batch.available[i:j],
        experts=list(EXPERT_DIMS),
    ).to(device)


def text_slice(batch: TextBatch, i: int, j: int, device: torch.device) -> TextBatch:
    return TextBatch(tokens=batch.tokens[i:j], mask=batch.mask[i:j]).to(device)


class MMTLikeEncoder(nn.Module):
    """MMT's video side in its essentials: projected expert rows + 1 aggregation token per expert, 4 x 4-head
    transformer layers (d = 768), the aggregation tokens' outputs as the video embedding."""

    def __init__(self, dims: dict[str, int], d: int = 768, layers: int = 4, heads: int = 4):
        super().__init__()
        self.proj = nn.ModuleDict({e: nn.Linear(k, d) for e, k in dims.items()})
        self.expert_emb = nn.Parameter(torch.randn(len(dims), d) * 0.02)
        self.agg = nn.Parameter(torch.randn(len(dims), d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, heads, 4 * d, 0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, batch: VideoBatch) -> torch.Tensor:
        b = batch.available.shape[0]
        tokens = [self.agg.unsqueeze(0).expand(b, -1, -1)]
        masks = [batch.available]
        for j, e in enumerate(self.proj):
            tokens.append(self.proj[e](batch.features[e]) + self.expert_emb[j])
            masks.append(batch.masks[e])
        x = torch.cat(tokens, 1)
        pad = ~torch.cat(masks, 1)
        pad[:, 0] = False  # keep at least one token per video
        return self.encoder(x, src_key_padding_mask=pad)[:, : len(self.proj)]


def timed(fn, device: torch.device) -> tuple[float, object]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


@torch.no_grad()
def bench_head(name: str, videos: VideoBatch, texts: TextBatch, batch: int, device: torch.device) -> dict:
    head = build_head(name, HEAD_OPTIONS[name], EXPERT_DIMS, TEXT_DIM).to(device).eval()
    n_v, n_t = videos.available.shape[0], texts.tokens.shape[0]
    enc_v, video_blocks = timed(
        lambda: [head.encode_video(video_slice(videos, i, i + batch, device)) for i in range(0, n_v, batch)],
        device,
    )
    enc_t, text_blocks = timed(
        lambda: [head.encode_text(text_slice(texts, i, i + batch, device)) for i in range(0, n_t, batch)],
        device,
    )
    sim_t, sims = timed(
        lambda: torch.cat(
            [torch.cat([head.similarity(t, v) for v in video_blocks], 1) for t in text_blocks], 0
        ),
        device,
    )
    if tuple(sims.shape) != (n_t, n_v):
        raise RuntimeError(f"{name}: similarity shape {tuple(sims.shape)}")
    params = sum(p.numel() for p in head.parameters())
    return {
        "head": name,
        "encode_video_s": enc_v,
        "encode_text_s": enc_t,
        "similarity_s": sim_t,
        "params": params,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--heads", default="t2vlad,cret,mgfi")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    videos, texts = make_videos(args.videos, args.rows), make_texts(args.videos)

    with torch.no_grad():
        mmt = MMTLikeEncoder(EXPERT_DIMS).to(device).eval()
        mmt_s, _ = timed(
            lambda: [
                mmt(video_slice(videos, i, i + args.batch, device)) for i in range(0, args.videos, args.batch)
            ],
            device,
        )
    rows = [bench_head(h, videos, texts, args.batch, device) for h in args.heads.split(",")]
    print(
        f"{args.videos} videos x {len(EXPERT_DIMS)} experts x <= {args.rows} rows, {args.videos} texts x "
        f"{TEXT_TOKENS} tokens; device {device}, {torch.get_num_threads()} threads, batch {args.batch}"
    )
    print(f"MMT-like 4-layer 4-head transformer (d=768), video side: {mmt_s:.2f} s")
    print(
        f"{'head':<8}{'video enc s':>12}{'vs MMT':>8}{'text enc s':>12}{'sim 1000x1000 s':>17}{'params M':>10}"
    )
    for r in rows:
        r["ratio_vs_mmt"] = r["encode_video_s"] / mmt_s
        print(
            f"{r['head']:<8}{r['encode_video_s']:>12.2f}{r['ratio_vs_mmt']:>8.2f}{r['encode_text_s']:>12.2f}"
            f"{r['similarity_s']:>17.2f}{r['params'] / 1e6:>10.1f}"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(
                {"mmt_like_video_s": mmt_s, "device": str(device), "heads": rows, "args": vars(args)},
                fh,
                indent=2,
            )


if __name__ == "__main__":
    main()
