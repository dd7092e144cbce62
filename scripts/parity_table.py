"""Parity per byte of the 8-bit methods, fully quantized (no keep-float search), on several checkpoints.

    python scripts/parity_table.py CKPT_DIR [CKPT_DIR ...] [--arch ecapa] [--audio FILE ...] [--json out.json]

For each checkpoint: export fp32 once, then each method variant; max / mean |dp| against PyTorch over the
synthetic suite and the speech clips, argmax on decisive rows, and separately on the --audio clips
(held out: never used by calibration or the search).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile

VARIANTS = [
    # label, mode, method, per_channel, bias correction
    ("weight-only per-channel", "q8", "weight-only", True, False),
    ("weight-only per-channel + bias corr.", "q8", "weight-only", True, True),
    ("weight-only per-tensor", "q8", "weight-only", False, False),
    ("weight-only per-tensor + bias corr.", "q8", "weight-only", False, True),
    ("dynamic uint8 per-channel", "uint8", None, True, False),
    ("dynamic uint8 per-channel + bias corr.", "uint8", None, True, True),
    ("dynamic uint8 per-tensor + bias corr.", "uint8", None, False, True),
    ("dynamic int8 (7-bit) per-channel", "int8", None, True, False),
    ("dynamic int8 (7-bit) per-channel + bias corr.", "int8", None, True, True),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--arch", default="ecapa")
    ap.add_argument("--audio", nargs="*", default=[])
    ap.add_argument("--json")
    args = ap.parse_args()

    from voxport.archs import get_arch
    from voxport.export import export_model
    from voxport.quantize import quantize
    from voxport.quantize.fit import calibration_cases
    from voxport.verify.audio import load_audio
    from voxport.verify.check import build_cases, compare
    from voxport.verify.runtimes import OnnxRuntimePython
    from voxport.archs.suite import audio_cases

    spec = get_arch(args.arch)
    rows = []
    for ck in args.checkpoints:
        loaded = spec.load(checkpoint=ck)
        cases = build_cases(spec, loaded)
        held = [c for p in args.audio for c in audio_cases(os.path.basename(p), load_audio(p, spec.sample_rate),
                                                          prepare=lambda x: spec.prepare(loaded, x))]
        refs = [spec.reference(loaded, c) for c in cases]
        hrefs = [spec.reference(loaded, c) for c in held]
        calib = calibration_cases(spec, loaded)
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = os.path.join(tmp, "model.onnx")
            export_model(args.arch, fp32, loaded=loaded)
            for label, mode, method, pc, bc in VARIANTS:
                out = os.path.join(tmp, "q.onnx")
                r = quantize(fp32, out, mode=mode, method=method, per_channel=pc, write_config_file=False,
                             calibration=calib if bc else None)
                tol = spec.tolerance(loaded, mode)
                rt = OnnxRuntimePython()
                a = compare(label, mode, "python", cases, refs, rt.run_cases(out, cases), tol)
                row = {"checkpoint": os.path.basename(ck.rstrip("/")), "variant": label, "size_mb": round(r.size_bytes / 1e6, 2),
                       "max_dp": round(a.max_abs_prob, 4), "mean_dp": round(a.mean_abs_prob, 5),
                       "decisive": f"{a.decisive_agree}/{a.decisive_total}", "near_tie_flips": a.near_tie_flips}
                if held:
                    h = compare(label, mode, "python", held, hrefs, rt.run_cases(out, held), tol)
                    row.update(held_max_dp=round(h.max_abs_prob, 4), held_argmax=f"{h.argmax_agree}/{h.argmax_total}")
                rows.append(row)
                print(" | ".join(str(v) for v in row.values()), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
