"""Long-form CTC in headless Chromium (WASM) with voxport-web: real-time factor and peak memory, chunked and in one
pass, against transformers' chunked pipeline on the PyTorch checkpoint.

    python scripts/browser_longform.py --folder artifacts/xlsr-ctc --checkpoint /tmp/xlsr-ckpt --minutes 10 --dtype q8

The audio is the shipped speech clips end to end, repeated to the length asked. Memory is the peak resident set of
all Chromium processes together, sampled every 0.2 s. Prints one JSON document (and a table on stderr).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from voxport.verify.jsrun import run_pipelines  # noqa: E402
from voxport.verify.speech import long_speech, speech_clips  # noqa: E402


def chromium_rss_mb() -> float:
    out = subprocess.run(["ps", "-eo", "rss,args"], capture_output=True, text=True).stdout.splitlines()[1:]
    return sum(int(line.split(None, 1)[0]) for line in out if "chromium" in line and "--type=" in line or "chromium --" in line) / 1024


def timed(fn):
    """fn() while sampling Chromium's memory: (result, seconds, peak MB)."""
    peak, stop = [0.0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], chromium_rss_mb())
            time.sleep(0.2)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    t0 = time.time()
    try:
        res = fn()
    finally:
        stop.set()
        t.join()
    return res, time.time() - t0, peak[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", required=True, help="a CTC folder made by voxport build")
    ap.add_argument("--checkpoint", help="the PyTorch checkpoint: compare with transformers' chunked pipeline")
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--dtype", default="q8")
    ap.add_argument("--chunk", type=float, default=10.0)
    ap.add_argument("--stride", type=float, default=2.0)
    ap.add_argument("--one-pass", action="store_true", help="also run the whole recording in one forward pass")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    sr = 16000
    base = long_speech(speech_clips(sr), 1)
    n = int(args.minutes * 60 * sr)
    audio = np.resize(base, n).astype(np.float32)
    report = {"minutes": args.minutes, "dtype": args.dtype, "chunk_length_s": args.chunk, "stride_length_s": args.stride,
              "threads": args.threads, "cpu": open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].split(":", 1)[1].strip()}
    runs = {"chunked": {"chunk_length_s": args.chunk, "stride_length_s": args.stride, "return_timestamps": "word"}}
    if args.one_pass:
        runs["one pass"] = {"return_timestamps": "word"}
    results = {}
    for name, opts in runs.items():
        res, secs, peak = timed(lambda o=opts: run_pipelines(args.folder, [args.dtype], [{"kind": "longform", "audio": audio, "options": o}],
                                                            where="browser", threads=args.threads, timeout=7200))
        entry = res.get(args.dtype) or {}
        got = (entry.get("results") or [None])[0]
        results[name] = got
        report[name] = {"error": entry.get("error"), "wall_s": round(secs, 1), "pipeline_ms": round(got["ms"]) if got else None,
                        "rtf": round(got["ms"] / 1000 / (n / sr), 3) if got else None, "peak_chromium_rss_mb": round(peak),
                        "chars": len(got["text"]) if got else None, "words": len(got.get("chunks", [])) if got else None}
        print(f"{name}: {report[name]}", file=sys.stderr)
    if args.checkpoint and results.get("chunked"):
        from transformers import pipeline

        pipe = pipeline("automatic-speech-recognition", model=args.checkpoint, device="cpu")
        t0 = time.time()
        want = pipe(audio.copy(), chunk_length_s=args.chunk, stride_length_s=args.stride, return_timestamps="word")
        got = results["chunked"]
        report["pytorch_pipeline_s"] = round(time.time() - t0, 1)
        report["same_text_as_pipeline"] = got["text"] == want["text"]
        report["same_words_as_pipeline"] = [c["text"] for c in got["chunks"]] == [c["text"] for c in want["chunks"]]
        report["max_timestamp_diff_s"] = float(np.abs(np.array([c["timestamp"] for c in got["chunks"]], dtype=np.float64)
                                                      - np.array([c["timestamp"] for c in want["chunks"]], dtype=np.float64)).max()) \
            if report["same_words_as_pipeline"] else None
        from voxport.ctc import cer

        report["cer_vs_pipeline"] = round(cer([want["text"]], [got["text"]]), 5)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
