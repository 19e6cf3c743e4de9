"""`t2v encode`, `t2v search`, `t2v report`: embedding stores of trained runs, text search, HTML reports."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_manifest.display import json_text, printable
from data_manifest.errors import T2VError
from data_manifest.schema import MAX_LINE_BYTES
from data_manifest.validate import iter_lines
from pipeline.runs.record import BEST, RunFolder


def cmd_encode(args: argparse.Namespace) -> int:
    """Encode (or extend) a store; prints one summary line."""
    import pipeline  # noqa: F401
    from pipeline.stores.index import IndexSpec, bytes_per_vector
    from pipeline.stores.store import encode_store
    from pipeline.threads import apply_threads, threads_per_process

    RunFolder(args.run_dir).read()  # RunError naming the folder or its config.json
    if args.manifest is not None and not Path(args.manifest).is_file():
        raise T2VError(f"{args.manifest}: manifest not found")
    spec = None
    if args.index is not None:
        spec = IndexSpec(args.index, args.nlist, args.nprobe, args.m, args.rotate, args.candidates)
    apply_threads(threads_per_process(1))
    summary = encode_store(
        args.run_dir,
        args.out,
        manifest=args.manifest,
        split=args.split,
        features_root=args.features,
        checkpoint=args.checkpoint,
        index=spec,
        device=args.device,
        progress=not args.quiet,
    )
    info = summary.index
    used = IndexSpec.from_dict(info)
    recall = info.get("recall_at_10")
    print(
        f"{summary.store}: {summary.num_videos} videos ({summary.added} added, {summary.reencoded} re-encoded, "
        f"{summary.removed} removed) in {summary.seconds:.1f} s; index {info['kind']}"
        f"{' (chosen by size)' if info.get('auto') else ''} over {info['indexed']} vectors of {info['dim']} floats "
        f"({bytes_per_vector(used, int(info['dim']))} bytes/video"
        f"{f', recall@10 {recall:.3f}' if recall is not None else ''})"
    )
    if summary.skipped:
        print(
            f"skipped {len(summary.skipped)} video(s) without features yet (run t2v extract), e.g. "
            f"{', '.join(summary.skipped[:3])}"
        )
    return 0


def _print_result(result, as_json: bool) -> None:
    """One JSON line, or a header and one line per hit; captions and ids pass through ``printable``."""
    if as_json:
        print(json_text(result.to_dict()), flush=True)
        return
    ms = result.timings.get("total_s", 0.0) * 1000
    index = result.index
    answered = index.get("kind", "?") + (
        ""
        if index.get("exact") or index.get("recall_at_10") is None
        else f", recall@10 {index['recall_at_10']:.3f}"
    )
    line = f'query: "{printable(result.query)}" ({ms:.0f} ms; index {answered})'
    if result.expert_weights:
        line += "; expert weights: " + ", ".join(
            f"{printable(e)} {w:.2f}" for e, w in result.expert_weights.items()
        )
    print(line)
    for hit in result.hits:
        caption = hit.captions[0] if hit.captions else "(no caption)"
        extra = ""
        centers = (hit.explanation or {}).get("top_centers")
        if centers:
            extra = "  centers " + ", ".join(f"#{c['center']} {c['contribution']:+.3f}" for c in centers)
        print(
            f"{hit.rank:3d}. {hit.score:8.4f}  {printable(hit.video_id)}  [{printable(hit.split)}]  "
            f"{printable(caption)}{extra}"
        )
    print(flush=True)


def cmd_search(args: argparse.Namespace) -> int:
    """Answer one query, or many (``-`` reads one per line from stdin; ``--interactive`` prompts)."""
    import pipeline  # noqa: F401
    from pipeline.errors import StoreError
    from pipeline.stores.search import Searcher

    if args.k < 1:
        raise T2VError(f"-k must be >= 1, got {args.k}")
    if args.query is None and not args.interactive:
        raise T2VError('give a query, "-" to read queries from stdin, or --interactive')
    if args.query is not None and args.query != "-" and not args.query.strip():
        raise StoreError("empty query")
    searcher = Searcher.open(args.store, run_dir=args.run, device=args.device)
    if args.query is not None and args.query != "-":
        _print_result(searcher.search(args.query, args.k), args.json)
        return 0
    interactive = args.interactive and sys.stdin.isatty()
    lines = iter_lines(sys.stdin.buffer, MAX_LINE_BYTES)
    while True:
        if interactive:
            print("query> ", end="", flush=True)
        lineno, raw = next(lines, (0, b""))
        if not lineno:
            return 0
        query = _decode_query(lineno, raw)
        if query:
            _print_result(searcher.search(query, args.k), args.json)


def _decode_query(lineno: int, raw: bytes | None) -> str | None:
    """The stripped query of one stdin line, or None (blank, or reported on stderr: too long, not UTF-8)."""
    if raw is None:
        print(
            f"stdin:{lineno}: query longer than {MAX_LINE_BYTES} bytes; skipped", file=sys.stderr, flush=True
        )
        return None
    try:
        return raw.decode("utf-8").strip() or None
    except UnicodeDecodeError as err:
        print(
            f"stdin:{lineno}: query is not valid UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1}); "
            "skipped",
            file=sys.stderr,
            flush=True,
        )
        return None


def cmd_report(args: argparse.Namespace) -> int:
    """Write the HTML report; prints its path."""
    import pipeline  # noqa: F401
    from pipeline.report.html import build_report

    RunFolder(args.run_dir).read()  # RunError naming the folder or its config.json
    queries = [q for q in (args.query or []) if q.strip()] or None
    path = build_report(
        args.run_dir,
        args.out,
        store_path=args.store,
        queries=queries,
        num_queries=args.num_queries,
        ablation=args.ablation,
        device=args.device,
    )
    print(f"report written to {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's sub-commands."""
    p = sub.add_parser(
        "encode", help="encode a run's videos into a searchable embedding store (created or extended)"
    )
    p.add_argument("run_dir", help="training run folder (config.json + best.pt)")
    p.add_argument("--out", required=True, help="store folder (created or extended)")
    p.add_argument("--manifest", default=None, help="manifest (default: the run's training manifest)")
    p.add_argument("--split", default=None, help="only this split (default: every video)")
    p.add_argument("--features", default=None, help="features root (default: the run's feature folders)")
    p.add_argument("--checkpoint", default=BEST, help="checkpoint file in the run folder")
    p.add_argument(
        "--index",
        choices=("auto", "flat", "ivf", "ivfpq", "ivfpq-rerank"),
        default=None,
        help="index kind (default: the kind last asked for, else auto: chosen by the store's size)",
    )
    p.add_argument("--nlist", type=int, default=1024, help="IVF lists (reduced for small stores)")
    p.add_argument("--nprobe", type=int, default=16, help="IVF lists searched per query")
    p.add_argument("--m", type=int, default=16, help="PQ bytes per vector (ivfpq, ivfpq-rerank)")
    p.add_argument("--rotate", type=int, default=512, help="OPQ output dims (ivfpq-rerank)")
    p.add_argument(
        "--candidates", type=int, default=256, help="rows re-ranked exactly per query (ivfpq-rerank)"
    )
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default: cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("search", help="text search in an embedding store")
    p.add_argument("store", help="store folder written by t2v encode")
    p.add_argument(
        "query", nargs="?", default=None, help='the query; "-" reads one query per line from stdin'
    )
    p.add_argument("-k", type=int, default=10, help="results per query")
    p.add_argument("--json", action="store_true", help="one JSON object per query")
    p.add_argument("--interactive", action="store_true", help="prompt for queries until end of input")
    p.add_argument("--run", default=None, help="run folder (default: the one that built the store)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default: cpu)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("report", help="static HTML report of a run (metrics, curves, searches, assignments)")
    p.add_argument("run_dir", help="training run folder")
    p.add_argument(
        "--store", default=None, help="store folder (default: encode the test split into OUT/store)"
    )
    p.add_argument("--out", required=True, help="report folder (index.html + images)")
    p.add_argument("--query", action="append", help="a query to show (repeatable; default: test captions)")
    p.add_argument("--num-queries", type=int, default=8, help="test captions shown when no --query is given")
    p.add_argument(
        "--ablation",
        default=None,
        help="ablation.json of t2v ablation / t2v run (default: looked up next to the run)",
    )
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default: cpu)")
    p.set_defaults(func=cmd_report)
