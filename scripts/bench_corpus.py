"""Throughput of `voxport run` / `voxport evaluate` on many short clips, local engine vs Ray.

    python scripts/bench_corpus.py FOLDER --clips 500 [--ray] [--dtype fp32]

Writes synthetic speech clips (1-3 s, 16 kHz, labelled male/female by pitch) into a temporary folder, then
times each engine on the same files (wall time of the evaluation loop, process start-up excluded; Ray's
includes starting Ray and its actors). Run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import soundfile as sf


def make_corpus(folder: str, n: int, seed: int = 0) -> str:
    from voxport.archs.suite import speech_like

    rng = np.random.default_rng(seed)
    rows = ["path,label"]
    for i in range(n):
        male = i % 2 == 0
        f0 = rng.uniform(85, 150) if male else rng.uniform(175, 260)
        x = speech_like(int(rng.uniform(1.0, 3.0) * 16000), float(f0), seed=int(rng.integers(1 << 30)))
        name = f"c{i:05d}.wav"
        sf.write(os.path.join(folder, name), x, 16000, subtype="FLOAT")
        rows.append(f"{name},{'male' if male else 'female'}")
    path = os.path.join(folder, "labels.csv")
    with open(path, "w") as f:
        f.write("\n".join(rows) + "\n")
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--clips", type=int, default=500)
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--ray", action="store_true")
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    from voxport.evaluate import evaluate
    from voxport.infer import Options, run

    tmp = tempfile.mkdtemp(prefix="voxport-bench-")
    labels = make_corpus(tmp, args.clips)
    secs = sum(sf.info(os.path.join(tmp, f)).duration for f in os.listdir(tmp) if f.endswith(".wav"))
    opt = Options(batch_size=args.batch_size)
    out = {"clips": args.clips, "audio_s": round(secs, 1), "dtype": args.dtype}
    t = time.time()
    rep = run(args.folder, [tmp], dtype=args.dtype, options=opt)
    out["run (2 threads)"] = round(args.clips / (time.time() - t), 1)
    assert rep.failed == 0
    for label, kw in [("evaluate local, 2 threads", dict(threads=0)), ("evaluate local, 1 thread", dict(threads=1))]:
        r = evaluate(args.folder, labels, dtypes=args.dtype, options=opt, pytorch=False, **kw)
        out[label] = round(args.clips / r.seconds, 1)
        out[label + " accuracy"] = r.rows[0]["accuracy"]
    if args.ray:
        r = evaluate(args.folder, labels, dtypes=args.dtype, options=opt, pytorch=False, engine="ray", threads=1, workers=2)
        out["evaluate ray, 2 actors x 1 thread (incl. start-up)"] = round(args.clips / r.seconds, 1)
        out["ray accuracy"] = r.rows[0]["accuracy"]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
