"""The static HTML report of a run: ``OUT/index.html`` with inline CSS and its images as files under ``OUT/img``.

Sections: run summary; metrics of every evaluated split (``metrics-*.json`` in the run folder); the ablation table
(``ablation.json`` in the run folder or up to three folders above it, or in an ``ablation/`` folder there, where
``t2v run`` has ``AblationTable`` write it, or a given file); training curves (the run's ``curves.png``); for each query (default: the first caption of the first
``num_queries`` test videos of the store) the top-5 videos as thumbnail strips with scores, the ground-truth video
marked (Fig. 4 of the T2VLAD paper); for T2VLAD, center-assignment views (Fig. 3): per center the caption words and
the video rows (frame thumbnails, or the OCR/speech word) assigned most to it. No script, no external asset.
"""

from __future__ import annotations

import json
import shutil
from html import escape
from pathlib import Path

from data_manifest.atomic import atomic_path, write_text
from pipeline.errors import StoreError
from pipeline.features.reader import FeatureReader
from pipeline.report.assignments import CenterView, center_views, video_rows
from pipeline.report.thumbnails import FrameLookup, write_strip
from pipeline.runs.ablation import ABLATION_JSON, ablation_table, load_ablation
from pipeline.runs.record import RunFolder
from pipeline.stores.search import QueryEncoder, Searcher, SearchResult
from pipeline.stores.store import EmbeddingStore, TrainedRun, encode_store, load_trained_run
from pipeline.text_encoder import cut_for_tokens
from pipeline.training.dataset import row_caps

METRIC_COLUMNS = (
    ("R1", "R@1"),
    ("R5", "R@5"),
    ("R10", "R@10"),
    ("R50", "R@50"),
    ("MdR", "MdR"),
    ("MnR", "MnR"),
    ("geometric_mean", "GM"),
)
CSS = """
body{font-family:DejaVu Sans,Arial,sans-serif;margin:24px;color:#222;background:#fafafa;max-width:1240px}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
h3{font-size:15px;margin:18px 0 6px}table{border-collapse:collapse;margin:8px 0;background:#fff}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px}th{background:#eee}
td:first-child,th:first-child{text-align:left}.muted{color:#777;font-size:12px}
.hits{display:flex;gap:8px;flex-wrap:wrap}.hit{background:#fff;border:2px solid #ddd;border-radius:4px;padding:4px;
width:228px;font-size:12px}.hit.gt{border-color:#2a9d3a;background:#effaf0}.hit img{width:100%;display:block}
.badge{background:#2a9d3a;color:#fff;border-radius:3px;padding:0 4px;font-size:11px}
.centers{display:flex;gap:8px;flex-wrap:wrap}.center{background:#fff;border:1px solid #ccc;border-radius:4px;
padding:6px;width:280px;font-size:12px}.word{display:inline-block;background:#e6eefc;border-radius:3px;padding:1px 4px;
margin:2px}.row{display:flex;align-items:center;gap:6px;margin:3px 0}.row img{height:42px}
"""


def _metrics_html(folder: RunFolder) -> str:
    files = folder.metrics_files()
    if not files:
        return '<p class="muted">No evaluated split (run t2v evaluate).</p>'
    head = "".join(f"<th>{label}</th>" for _, label in METRIC_COLUMNS)
    rows = []
    for path in files:
        data = json.loads(path.read_text(encoding="utf-8"))
        name = path.stem.removeprefix("metrics-")
        info = f"{data.get('num_texts', '?')} queries, {data.get('num_videos', '?')} videos"
        for direction in ("t2v", "v2t"):
            m = data["metrics"][direction]
            cells = "".join(f"<td>{float(m[k]):.2f}</td>" for k, _ in METRIC_COLUMNS)
            rows.append(
                f"<tr><td>{escape(name)} {direction} <span class='muted'>({info})</span></td>{cells}</tr>"
            )
    return f"<table><tr><th>split / direction</th>{head}</tr>{''.join(rows)}</table>"


def find_ablation(run_dir: Path) -> Path | None:
    """``ablation.json`` in the run folder or up to three folders above it, or in an ``ablation/`` folder there
    (``t2v run`` writes ``<out>/ablation/ablation.json`` next to ``<out>/runs/<head>/<run>``)."""
    for folder in [run_dir, *list(run_dir.parents)[:3]]:
        for candidate in (folder / ABLATION_JSON, folder / "ablation" / ABLATION_JSON):
            if candidate.is_file():
                return candidate
    return None


def ablation_html(path: Path) -> str:
    """The ablation results of ``path`` (an ``ablation.json``) as a titled HTML table."""
    title, results = load_ablation(path)
    head, rows = ablation_table(results)
    cells = "".join(f"<th>{escape(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<h3>{escape(title)}</h3><table><tr>{cells}</tr>{body}</table>"


class _Images:
    """Writes each thumbnail once under ``out/img`` and returns its relative path."""

    def __init__(self, out: Path):
        self.dir = out / "img"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.strips: dict[str, str] = {}
        self.lookups: dict[str, FrameLookup] = {}

    def strip(self, video_id: str, path: str) -> str:
        if video_id not in self.strips:
            name = f"strip-{len(self.strips)}.jpg"
            write_strip(path, self.dir / name)
            self.strips[video_id] = f"img/{name}"
        return self.strips[video_id]

    def frame(self, video_id: str, path: str, seconds: float, name: str) -> str:
        if video_id not in self.lookups:
            self.lookups[video_id] = FrameLookup(path)
        self.lookups[video_id].write_at(seconds, self.dir / name)
        return f"img/{name}"


def _search_html(result: SearchResult, gt: str | None, gt_rank: int | None, images: _Images) -> str:
    title = f"“{escape(result.query)}”"
    if gt:
        where = f"rank {gt_rank}" if gt_rank else "not ranked"
        title += f' <span class="muted">ground truth {escape(gt)}: {where}</span>'
    weights = ""
    if result.expert_weights:
        weights = (
            '<p class="muted">expert weights: '
            + ", ".join(f"{escape(e)} {w:.2f}" for e, w in result.expert_weights.items())
            + "</p>"
        )
    cards = []
    for hit in result.hits:
        is_gt = hit.video_id == gt
        badge = ' <span class="badge">ground truth</span>' if is_gt else ""
        caption = escape(hit.captions[0]) if hit.captions else "<i>no caption</i>"
        cards.append(
            f'<div class="hit{" gt" if is_gt else ""}"><b>#{hit.rank}</b> {hit.score:.4f} '
            f"<code>{escape(hit.video_id)}</code>{badge}"
            f'<img src="{images.strip(hit.video_id, hit.path)}" alt="{escape(hit.video_id)}">{caption}</div>'
        )
    return f"<h3>{title}</h3>{weights}<div class='hits'>{''.join(cards)}</div>"


def _assignment_html(
    views: list[CenterView], video_id: str, path: str, caption: str, images: _Images, tag: str
) -> str:
    cards = []
    for view in views:
        words = "".join(f'<span class="word">{escape(w)} {a:.2f}</span>' for w, a in view.words)
        rows = []
        for i, row in enumerate(view.rows):
            span = f"{escape(row.expert)} {row.start:.1f}–{row.end:.1f} s · a={row.weight:.2f}"
            if row.token is not None:
                rows.append(f'<div class="row"><span class="word">{escape(row.token)}</span>{span}</div>')
            else:
                src = images.frame(
                    video_id, path, (row.start + row.end) / 2, f"row-{tag}-{view.center}-{i}.jpg"
                )
                rows.append(f'<div class="row"><img src="{src}" alt="frame">{span}</div>')
        cards.append(
            f'<div class="center"><b>center {view.center}</b> <span class="muted">caption mass '
            f"{view.text_mass:.2f}</span><div>{words}</div>{''.join(rows)}</div>"
        )
    return f"<h3>{escape(video_id)}: “{escape(caption)}”</h3><div class='centers'>{''.join(cards)}</div>"


def _assignment_view(
    run: TrainedRun,
    encoder: QueryEncoder,
    readers: dict[str, FeatureReader],
    store: EmbeddingStore,
    query: str,
    video_id: str,
    images: _Images,
    number: int,
) -> str:
    """Fig. 3-style view of ``query`` against ``video_id`` (its ground truth, or its top hit)."""
    batch = encoder.encode([query])
    max_length = run.config.text.max_length
    encoded = encoder.tokenizer(cut_for_tokens(query, max_length), truncation=True, max_length=max_length)
    ids = encoded["input_ids"]
    words = encoder.tokenizer.convert_ids_to_tokens(ids)
    rows = video_rows({e: r.get(video_id) for e, r in readers.items()}, row_caps(run.config, readers))
    views = center_views(run.head, batch, words, rows)
    return _assignment_html(views, video_id, store.paths[store.row_of[video_id]], query, images, str(number))


def _default_queries(store: EmbeddingStore, n: int) -> list[tuple[str, str]]:
    rows = [i for i, s in enumerate(store.splits) if s == "test"] or list(range(len(store)))
    return [(store.captions[i][0], store.video_ids[i]) for i in rows if store.captions[i]][:n]


def build_report(
    run_dir: str | Path,
    out: str | Path,
    *,
    store_path: str | Path | None = None,
    queries: list[str] | None = None,
    num_queries: int = 8,
    ablation: str | Path | None = None,
    num_assignments: int = 2,
    device: str = "cpu",
) -> Path:
    """Write ``out/index.html`` (and ``out/img``, ``out/curves.png``; ``out/store`` when no store is given)."""
    run_dir, out = Path(run_dir).resolve(), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = load_trained_run(run_dir, device=device)
    folder = RunFolder(run.run_dir)
    if store_path is None:
        store_path = out / "store"
        split = "test" if any(r == "test" for r in _splits(run.saved.manifest)) else None
        encode_store(run_dir, store_path, split=split, device=device, progress=False)
    store = EmbeddingStore(store_path)
    encoder = QueryEncoder(run, device)
    searcher = Searcher(store, run, encoder, device=device)
    images = _Images(out)
    pairs = [(q, None) for q in queries] if queries else _default_queries(store, num_queries)
    if not pairs:
        raise StoreError(f"{store.path}: no captioned video to take example queries from (give --query)")

    searches: list[str] = []
    assignments: list[str] = []
    readers = {e: FeatureReader(d) for e, d in json.loads(store.attrs["feature_dirs"]).items()}
    for q, gt in pairs:
        text_emb = searcher.encode_queries([q])
        result = searcher.search(q, k=5, text_emb=text_emb)
        gt_rank = None
        if gt is not None and len(store) <= 5000:
            rows, _ = searcher.rank(text_emb, k=len(store))[0]
            gt_rank = int(list(rows).index(store.row_of[gt])) + 1
        searches.append(_search_html(result, gt, gt_rank, images))
        video = gt if gt is not None else (result.hits[0].video_id if result.hits else None)
        if video is not None and len(assignments) < num_assignments and run.head.has_center_view:
            if all(video in r for r in readers.values()):
                assignments.append(
                    _assignment_view(run, encoder, readers, store, q, video, images, len(assignments))
                )

    curves = ""
    if folder.curves_png.is_file():
        with atomic_path(out / "curves.png") as tmp:
            shutil.copyfile(folder.curves_png, tmp)
        curves = '<img src="curves.png" alt="training curves" style="max-width:100%">'
    ablation_path = Path(ablation) if ablation else find_ablation(run_dir)
    ablation_section = (
        ablation_html(ablation_path)
        if ablation_path
        else '<p class="muted">No ablation results (ablation.json) found.</p>'
    )
    if not run.head.has_center_view:
        assignments = [
            f'<p class="muted">Center assignments are shown for heads (and variants) with shared centres, such '
            f"as T2VLAD with a local branch; this run's head is {escape(run.head.name)}.</p>"
        ]
    summary = (
        f"head <b>{escape(run.head.name)}</b>, epoch {run.epoch}, checkpoint sha256 "
        f"<code>{run.checkpoint_sha256[:12]}</code>; store <code>{escape(str(store.path))}</code> with "
        f"{len(store)} videos ({int(store.complete.sum())} with every expert)"
    )
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>t2v report: {escape(run_dir.name)}</title>"
        f"<style>{CSS}</style></head><body><h1>t2v report: {escape(run_dir.name)}</h1><p>{summary}</p>"
        f"<h2>Metrics</h2>{_metrics_html(folder)}<h2>Ablations</h2>{ablation_section}"
        f"<h2>Training curves</h2>{curves or '<p class=muted>No curves.png.</p>'}"
        f"<h2>Text-to-video search (top 5)</h2>{''.join(searches)}"
        f"<h2>Center assignments</h2>{''.join(assignments)}</body></html>"
    )
    target = out / "index.html"
    write_text(target, page)
    return target


def _splits(manifest: Path) -> list[str]:
    from data_manifest.validate import load_manifest

    return [r.split for r in load_manifest(manifest, check_paths=False)]
