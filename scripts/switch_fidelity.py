"""How far the keep-float search's switch graph is from the real quantized file, on the CPU this runs on.

    python scripts/switch_fidelity.py prepare OUT [--C 64]       # export and quantize (needs PyTorch)
    python scripts/switch_fidelity.py measure OUT                 # onnxruntime only: run it on any CPU
    qemu-x86_64 -cpu Haswell-v4 .venv/bin/python scripts/switch_fidelity.py measure OUT   # an AVX2-only CPU

`measure` prints, per 8-bit method, the real file's error against fp32 (max |d| of probabilities over the cases),
how far the switch graph with every item quantized is from the real file (as a share of that error), and the worst
node alone (switch graph with one node's items on, against the file with that node alone quantized). onnxruntime
picks its integer kernels by CPUID, so under qemu-user with an older CPU model the file runs the kernels that
CPU would run (AVX2 without VNNI: u8 x s8 products through 16-bit saturating adds).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

METHODS = {"dynamic": {"mode": "q8", "method": "dynamic"}, "dynamic-s8": {"mode": "q8", "method": "dynamic-s8"},
           "uint8": {"mode": "uint8", "method": "dynamic"}}
ALONE = 4  # nodes measured alone, spread over the graph


def prepare(out: str, C: int) -> None:
    from voxport.archs import get_arch
    from voxport.export import export_model
    from voxport.quantize import quantize
    from voxport.quantize.common import read_source
    from voxport.quantize.shipped import shipped_weights, weight_nodes

    os.makedirs(out, exist_ok=True)
    spec = get_arch("ecapa")
    loaded = spec.load(random_init=True, seed=0, C=C)
    src = os.path.join(out, "model.onnx")
    export_model("ecapa", src, loaded=loaded)
    cases = [c for c in spec.cases(loaded) if c.input_values.shape[1] <= 3 * 16000][:4]
    np.savez(os.path.join(out, "cases.npz"), *[c.input_values for c in cases])
    model, _, keep = read_source(src)
    plan = {}
    for name, kw in METHODS.items():
        q = os.path.join(out, f"{name}.onnx")
        quantize(src, q, write_config_file=False, **kw)
        nodes = weight_nodes(model, set(keep))
        deq = shipped_weights(q, nodes)
        names = [n.name for n, w in nodes if w in deq]
        picks = sorted({int(i) for i in np.linspace(0, len(names) - 1, ALONE)})
        for i in picks:
            quantize(src, os.path.join(out, f"{name}-alone{i}.onnx"), write_config_file=False,
                     extra_float=[x for j, x in enumerate(names) if j != i], **kw)
        plan[name] = {"nodes": names, "alone": picks}
    json.dump({"C": C, "keep": keep, "plan": plan}, open(os.path.join(out, "plan.json"), "w"))


def measure(out: str, n_cases: int = 0, methods=(), alone_too: bool = True) -> dict:
    from voxport.archs.base import Case
    from voxport.quantize.common import read_source
    from voxport.quantize.fit import SwitchRunner
    from voxport.quantize.shipped import weight_nodes
    from voxport.verify.runtimes import OnnxRuntimePython

    plan = json.load(open(os.path.join(out, "plan.json")))
    data = np.load(os.path.join(out, "cases.npz"))
    cases = [Case(f"c{i}", data[k]) for i, k in enumerate(data.files)]
    cases = cases[:n_cases] if n_cases else cases
    src = os.path.join(out, "model.onnx")
    ort = OnnxRuntimePython()

    def probs(outs):
        return [np.exp(o - o.max(-1, keepdims=True)) / np.exp(o - o.max(-1, keepdims=True)).sum(-1, keepdims=True) for o in outs]

    def gap(a, b):
        return float(max(np.abs(x - y).max() for x, y in zip(probs(a), probs(b))))

    fp32 = ort.run_cases(src, cases)
    model, _, keep = read_source(src)
    by_name = {n.name: (n, w) for n, w in weight_nodes(model, set(keep))}
    report = {}
    for name, p in plan["plan"].items():
        if methods and name not in methods:
            continue
        q = os.path.join(out, f"{name}.onnx")
        nodes = [by_name[x] for x in p["nodes"]]
        n = len(nodes)
        from voxport.quantize.shipped import integer_nodes
        from voxport.onnxutil import load_light

        dynamic = integer_nodes({i.name for i in load_light(q).graph.initializer}, nodes)
        m = 2 * n if dynamic else n
        runner = SwitchRunner(src, nodes, q, dynamic, None, out)
        real = ort.run_cases(q, cases)
        err = gap(real, fp32)
        emu = gap(runner.run(np.ones(m), cases), real)
        alone = []
        for i in p["alone"] if alone_too else []:
            s = np.zeros(m)
            s[i] = 1.0
            if dynamic:
                s[n + i] = 1.0
            r = ort.run_cases(os.path.join(out, f"{name}-alone{i}.onnx"), cases)
            alone.append(gap(runner.run(s, cases), r))
        report[name] = {"error": round(err, 5), "switch_vs_real_share": round(emu / err, 3),
                        "alone_max_abs": max(alone) if alone else None, "cases": len(cases)}
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["prepare", "measure"])
    ap.add_argument("out")
    ap.add_argument("--C", type=int, default=64)
    ap.add_argument("--cases", type=int, default=0, help="measure: the first N cases only (emulated CPUs are slow)")
    ap.add_argument("--methods", default="", help="measure: comma-separated subset of " + ", ".join(METHODS))
    ap.add_argument("--no-alone", action="store_true", help="measure: skip the nodes alone")
    args = ap.parse_args()
    if args.what == "prepare":
        prepare(args.out, args.C)
    else:
        print(json.dumps(measure(args.out, args.cases, tuple(m for m in args.methods.split(",") if m), not args.no_alone), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
