"""Parity per byte of the 8-bit methods on one exported model: size, max/mean |dp|, argmax, latency.

    python scripts/compare_q8.py artifacts/voice-gender-onnx [--target 0.005]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--target", type=float, default=0.005, help="max |dp| for the mixed-precision row")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpoint", default=None, help="for a folder built from a local checkpoint: that folder")
    args = ap.parse_args()

    import onnxruntime as ort

    from voxport.archs.source import load_source
    from voxport.quantize import quantize
    from voxport.quantize.sensitivity import explain
    from voxport.verify.check import read_source, verify
    from voxport.archs.suite import speech_like

    src = os.path.join(args.folder, "onnx", "model.onnx")
    loaded = load_source(read_source(args.folder)["source"], checkpoint=args.checkpoint, what=args.folder)
    tmp = tempfile.mkdtemp(prefix="voxport-compare-")
    variants = {
        "dynamic, per-channel": dict(mode="q8", method="dynamic"),
        "dynamic, per-tensor": dict(mode="q8", method="dynamic", per_channel=False),
        "dynamic int8 weights": dict(mode="int8"),
        "weight-only, per-channel": dict(mode="q8", method="weight-only"),
        "weight-only, per-tensor": dict(mode="q8", method="weight-only", per_channel=False),
    }
    files = {"fp32": src}
    for name, kw in variants.items():
        out = os.path.join(tmp, name.replace(" ", "_").replace(",", "") + ".onnx")
        quantize(src, out, write_config_file=False, **kw)
        files[name] = out
    for method in ("dynamic", "weight-only"):
        rep = explain(src, mode="q8", method=method, target=args.target)
        name = f"{method} + {len(rep.kept_float)} most sensitive float (target {args.target})"
        out = os.path.join(tmp, f"mixed_{method}.onnx")
        quantize(src, out, method=method, extra_float=rep.kept_float, write_config_file=False)
        files[name] = out
    report = verify({k: v for k, v in files.items()}, loaded)
    x = speech_like(12000, 150, 0)[None]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.log_severity_level = 3
    print(f"| variant | size MB | max \\|Δp\\| | mean \\|Δp\\| | argmax | ORT ms (0.75 s, {args.threads} threads) |")
    print("|---|---|---|---|---|---|")
    for r in report.files:
        sess = ort.InferenceSession(files[r.file], opts, providers=["CPUExecutionProvider"])
        for _ in range(3):
            sess.run(None, {"input_values": x})
        t = []
        for _ in range(15):
            t0 = time.perf_counter()
            sess.run(None, {"input_values": x})
            t.append((time.perf_counter() - t0) * 1000)
        print(f"| {r.file} | {os.path.getsize(files[r.file]) / 1e6:.1f} | {r.max_abs_prob:.4f} | {r.mean_abs_prob:.4f} | "
              f"{r.argmax_agree}/{r.argmax_total} | {np.median(t):.1f} |")


if __name__ == "__main__":
    main()
