"""The README's speed table from `voxport bench --json`: median ms and ratios per window, the CPU and its flags.

    voxport bench FOLDER --threads 2 --seconds 0.75,3 --json > bench.json
    python scripts/bench_table.py bench.json
"""
from __future__ import annotations

import argparse
import json
import os


def describe(folder: str, name: str) -> str:
    """A file's kind from the folder's quantize_config.json: "q8, weight-only per-tensor" and the like."""
    if name == "model.onnx":
        return "fp32"
    try:
        with open(os.path.join(folder, "quantize_config.json")) as f:
            c = json.load(f)["files"][name]
    except (OSError, KeyError, ValueError):
        return ""
    if c.get("method") in ("weight-only", "dynamic"):
        scale = "per-channel" if c.get("per_channel") else "per-tensor"
        kept = len((c.get("search") or {}).get("kept_float") or [])
        extra = f", {kept} node{'s' if kept > 1 else ''} kept float" if kept else ""
        return f"{c['mode']}, {c['method']} {scale}{extra}"
    return c.get("mode", "")


def table(d: dict) -> str:
    windows = sorted({r["seconds_audio"] for r in d["rows"]})
    ratio = {(x["kind"], x["name"], x["runtime"], x["seconds_audio"], x.get("against")): x["ratio"] for x in d["ratios"]}
    labels = [a["label"] for a in d.get("against", [])]
    head = ["file", "size"]
    for w in windows:
        head += [f"{w:g} s ms", "x fp32", "x PyTorch"] + [f"x {a}" for a in labels]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = []
    for r in d["rows"]:
        if (r["name"], r["runtime"]) not in keys:
            keys.append((r["name"], r["runtime"]))
    rows = {(r["name"], r["runtime"], r["seconds_audio"]): r for r in d["rows"]}
    for name, runtime in keys:
        kind = describe(d["folder"], name) if d.get("folder") else ""
        label = "PyTorch eager" if runtime == "pytorch" else f"{name} ({kind})" if kind else name
        if runtime not in ("pytorch", "onnxruntime"):
            label += f", {runtime}"
        any_row = next(r for (n, rt, _), r in rows.items() if (n, rt) == (name, runtime))
        cells = [label, f"{any_row['size_bytes'] / 1e6:.1f} MB" if any_row["size_bytes"] else ""]
        for w in windows:
            r = rows.get((name, runtime, w))
            cells.append(f"{r['median_ms']:.1f}" if r else "")
            for kind_, against in [("fp32", None), ("pytorch", None)] + [("against", a) for a in labels]:
                v = ratio.get((kind_, name, runtime, w, against))
                cells.append(f"{v:.2f}" if v is not None else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def header(d: dict) -> str:
    flags = [f for f, v in d.get("cpu_flags", {}).items() if v]
    absent = [f for f, v in d.get("cpu_flags", {}).items() if not v]
    load = d.get("load_average") or []
    return (f"{d['cpu']} ({d.get('machine', '')}, {d.get('cores', '?')} cores), flags {', '.join(flags) or 'none known'}"
            + (f" (no {', '.join(absent)})" if absent else "")
            + f"; {d['threads']} threads, onnxruntime {d.get('versions', {}).get('onnxruntime', '?')}"
            + (f", torch {d['versions']['torch']}" if d.get("versions", {}).get("torch") else "")
            + f"; {d.get('runs')} interleaved rounds after {d.get('warmup')} warm-up"
            + (f"; load average {load[0]:.2f} -> {load[1]:.2f}" if len(load) == 2 and None not in load else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", help="the output of `voxport bench ... --json`")
    a = ap.parse_args()
    with open(a.json) as f:
        d = json.load(f)
    print(header(d))
    print()
    print(table(d))


if __name__ == "__main__":
    main()
