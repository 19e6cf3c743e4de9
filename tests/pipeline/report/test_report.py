"""The HTML report rendered by headless Chromium (no console errors, every image decoded, screenshot taken), and
the Luigi tasks EncodeStore / Report."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import pipeline  # noqa: F401
from pipeline.errors import ConfigError
from pipeline.metrics import retrieval_metrics
from pipeline.report.html import ablation_html
from pipeline.runs.ablation import ablation_json, ablation_markdown
from pipeline.training.curves import write_curves
from tests.media import make_video
from tests.store_fixtures import make_tree, save_run
from workflows.cli import main

CHROMIUM = shutil.which("chromium")
CHECK_SCRIPT = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || (e.target && e.target.src))), true);
const consoleError = console.error;
console.error = (...args) => { window.__errors.push('console.error: ' + args.join(' ')); consoleError(...args); };
window.addEventListener('load', () => {
  const r = {errors: window.__errors, images: [...document.images].map(i => [i.getAttribute('src'), i.naturalWidth])};
  const p = document.createElement('pre'); p.id = 't2v-check'; p.textContent = JSON.stringify(r);
  document.body.appendChild(p);
});
</script>"""
COLOURS = {"red": "red", "blue": "blue", "green": "green", "yellow": "yellow"}


def _metrics(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    sims = rng.normal(size=(12, 6)) + 3 * np.eye(6)[np.arange(12) % 6]
    return retrieval_metrics(sims, np.arange(12) % 6)


def _prepare_run(tmp: Path) -> tuple[Path, Path, Path]:
    manifest, features, records = make_tree(tmp, {"train": 2, "val": 1, "test": 6})
    for rec in records:
        if rec.split == "test":
            box = f"drawbox=x=8:y=6:w=24:h=18:color={COLOURS[rec.meta['colour']]}:t=fill"
            make_video(
                tmp / rec.path, duration=1.0, size=(48, 32), fps=4, audio=False, extra_video_filters=box
            )
    return manifest, features, tmp


def _fill_run_dir(run: Path) -> None:
    (run / "metrics-test.json").write_text(
        json.dumps({"num_texts": 12, "num_videos": 6, "metrics": _metrics(0)})
    )
    results = {"full": _metrics(1), "no_local": _metrics(2)}
    (run.parent / "ablation.json").write_text(json.dumps(ablation_json(results, "T2VLAD")))
    history = [
        {"epoch": e, "train_loss": 1.0 / e, "lr": 1e-3, "elapsed_s": e, "val": _metrics(e)} for e in (1, 2)
    ]
    write_curves(history, run)


def test_ablation_html_shows_the_rows_of_the_markdown_table(tmp_path: Path) -> None:
    results = {"no_local": _metrics(2), "full": _metrics(1)}
    path = tmp_path / "ablation.json"
    path.write_text(json.dumps(ablation_json(results, "T2VLAD <x>"), sort_keys=True))
    page = ablation_html(path)
    assert "<h3>T2VLAD &lt;x&gt;</h3>" in page
    body = "".join(
        "<tr>" + "".join(f"<td>{c.strip()}</td>" for c in line.strip("|").split("|")) + "</tr>"
        for line in ablation_markdown(results).splitlines()[2:]
    )
    assert body in page and page.index("no_local") < page.index("full")
    path.write_text("{}")
    with pytest.raises(ConfigError, match="not an ablation results file"):
        ablation_html(path)


def _chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    base = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=5000",
    ]
    return subprocess.run(base + args, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_renders_in_chromium(tmp_path):
    manifest, features, tmp = _prepare_run(tmp_path)
    run = save_run(tmp / "runs" / "t2vlad" / "full-x", "t2vlad", manifest, features)
    _fill_run_dir(run)
    out = tmp / "report"
    assert main(["report", str(run), "--out", str(out), "--num-queries", "3"]) == 0
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "<script" not in page and "http" not in page
    assert page.count('class="hit') == 15 and page.count("ground truth") >= 3
    assert "R@10" in page and "no_local" in page and 'class="center"' in page
    check = out / "check.html"
    check.write_text(page.replace("</head>", CHECK_SCRIPT + "</head>"), encoding="utf-8")
    dom = _chromium(["--dump-dom", check.as_uri()], tmp)
    found = re.search(r'<pre id="t2v-check">(.*?)</pre>', dom.stdout, re.S)
    assert found, dom.stderr[-2000:]
    result = json.loads(html.unescape(found.group(1)))
    assert result["errors"] == []
    assert len(result["images"]) > 15 and all(width > 0 for _, width in result["images"]), result["images"]
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if "rror" in line or "Uncaught" in line], console
    shot = tmp / "report.png"
    _chromium([f"--screenshot={shot}", "--window-size=1280,2000", (out / "index.html").as_uri()], tmp)
    assert shot.is_file() and shot.stat().st_size > 20_000


def test_luigi_encode_store_is_incremental(tmp_path):
    from data_manifest.schema import write_manifest
    from workflows.luigi_runner import run_tasks
    from workflows.tasks_store import EncodeStore
    from workflows.tasks_train import TrainHead

    manifest, features, records = make_tree(tmp_path, {"train": 2, "val": 1, "test": 9})
    write_manifest(manifest, records[:-3])  # the last 3 test videos are added later
    params = {
        "head": "t2vlad",
        "manifest": manifest,
        "features_root": features,
        "out_root": tmp_path / "runs",
        "device": "cpu",
    }
    run_dir = TrainHead(**params).run_dir()
    save_run(run_dir, "t2vlad", manifest, features)
    (run_dir / "result.json").write_text("{}")
    task = EncodeStore(**params)
    run_tasks([task])
    info = json.loads(Path(task.output().path).read_text())
    assert info["num_videos"] == 6 and task.complete()
    write_manifest(manifest, records)
    assert not task.complete()
    run_tasks([task])
    info = json.loads(Path(task.output().path).read_text())
    assert (info["num_videos"], info["added"]) == (9, 3)
