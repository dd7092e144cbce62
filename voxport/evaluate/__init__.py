"""`voxport evaluate`: the PyTorch reference and each ONNX file of a folder on labelled audio, side by side."""
from __future__ import annotations

import csv
import os
import sys
import time
from dataclasses import dataclass, field

from ..errors import VoxportError
from ..infer.folder import ModelFolder
from ..infer.predict import Options
from ..infer.run import plain
from ..files import DTYPE_FILES
from . import metrics
from .engine import PYTORCH


def read_labels(path: str) -> tuple:
    """("label" | "text" | "speaker", [(audio path, value)]) from a CSV with a header: path,label, path,text or
    path,speaker (speaker verification: every pair of clips is a trial). Relative audio paths are relative to the CSV's
    folder."""
    if not os.path.isfile(path):
        raise VoxportError(f"labels file not found: {path}; pass a CSV with a header path,label (or path,text for CTC)")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in reader.fieldnames or []]
        reader.fieldnames = fields
        kind = next((k for k in ("label", "text", "speaker") if k in fields), None)
        if "path" not in fields or kind is None:
            raise VoxportError(f"{path} needs a header row with columns path,label (classifiers), path,text (CTC) or "
                               f"path,speaker (speaker verification); got {','.join(fields) or 'nothing'}")
        base = os.path.dirname(os.path.abspath(path))
        rows = []
        for k, row in enumerate(reader, start=2):
            p, v = (row.get("path") or "").strip(), row.get(kind)
            if not p:
                raise VoxportError(f"{path} line {k}: empty path")
            if v is None or (kind != "text" and not v.strip()):
                raise VoxportError(f"{path} line {k}: no {kind} for {p}")
            rows.append((p if os.path.isabs(p) else os.path.join(base, p), v.strip() if kind != "text" else v))
    if not rows:
        raise VoxportError(f"{path} has no rows under its header")
    return kind, rows


@dataclass
class EvalReport:
    folder: str
    task: str
    engine: str
    rows: list
    files: list  # per file: path, status, error, truth, predictions {model: label | text}
    reference: str | None  # the row drops are measured against: "pytorch", "fp32" or None
    notes: list = field(default_factory=list)
    max_drop: float | None = None
    gate_failures: list = field(default_factory=list)
    seconds: float = 0.0
    measure: str = "label"  # what the CSV labels: "label", "text" or "speaker"

    @property
    def failed(self) -> list:
        return [f for f in self.files if f["status"] != "ok"]

    @property
    def passed(self) -> bool:
        return not self.gate_failures and not self.failed

    def to_dict(self) -> dict:
        return plain({"folder": self.folder, "task": self.task, "engine": self.engine, "reference": self.reference,
                      "rows": self.rows, "max_drop": self.max_drop, "gate_failures": self.gate_failures,
                      "notes": self.notes, "n_files": len(self.files), "n_failed": len(self.failed),
                      "seconds": round(self.seconds, 3),
                      "clips_per_s": round(len(self.files) / self.seconds, 3) if self.seconds else None,
                      "files": self.files})

    def to_table(self) -> str:
        f = lambda v, fmt="{:.4f}": "-" if v is None else fmt.format(v)  # noqa: E731
        lines = []
        if self.measure == "speaker":
            head = ["model", "file", "trials (same)", "EER", "threshold", "max |Δscore|", "same decisions", "ΔEER (pts)"]
            body = [[r["model"], r["file"] or "-", f"{r['trials']} ({r['same_speaker_trials']})", f(r["eer"]), f(r["threshold"]),
                     f(r["max_score_change"], "{:.2e}"), f(r["agreement_with_pytorch"]), f(r.get("eer_change_points"), "{:+.2f}")]
                    for r in self.rows]
        elif self.task == "audio-classification":
            head = ["model", "file", "accuracy", "F1-macro", "mean conf", "agree w/ PyTorch", "Δacc (pts)"]
            body = [[r["model"], r["file"] or "-", f(r["accuracy"]), f(r["f1_macro"]), f(r["mean_confidence"]),
                     f(r["agreement_with_pytorch"]), f(r.get("accuracy_change_points"), "{:+.2f}")] for r in self.rows]
        else:
            head = ["model", "file", "WER", "CER", "same text as PyTorch", "ΔWER (pts)", "ΔCER (pts)"]
            body = [[r["model"], r["file"] or "-", f(r["wer"]), f(r["cer"]), f(r["agreement_with_pytorch"]),
                     f(r.get("wer_change_points"), "{:+.2f}"), f(r.get("cer_change_points"), "{:+.2f}")] for r in self.rows]
        lines += _grid(head, body)
        if self.measure == "speaker" and self.reference:
            lines += ["", f"same decisions: trials accepted / rejected as {self.reference} does at its EER threshold"]
        if self.task == "audio-classification" and self.measure == "label" and self.rows:
            classes = list(self.rows[0]["per_class"])
            lines += ["", "per class: precision / recall / F1 (support)"]
            lines += _grid(["class"] + [r["model"] for r in self.rows],
                           [[c] + [f"{r['per_class'][c]['precision']:.3f} / {r['per_class'][c]['recall']:.3f} / "
                                   f"{r['per_class'][c]['f1']:.3f} ({r['per_class'][c]['support']})" for r in self.rows]
                            for c in classes])
            lines += ["", "confusion (rows: true, columns: predicted " + ", ".join(classes) + ")"]
            for r in self.rows:
                lines.append(f"  {r['model']:<8} " + "  ".join(f"{c}: {row}" for c, row in zip(classes, r["confusion"]["matrix"])))
        lines.append("")
        n_ok = len(self.files) - len(self.failed)
        lines.append(f"{n_ok} of {len(self.files)} files evaluated ({self.engine} engine, {self.seconds:.1f} s"
                     + (f", {len(self.files) / self.seconds:.1f} clips/s)" if self.seconds else ")"))
        for x in self.failed[:10]:
            lines.append(f"  failed: {x['path']}: {x['error']}")
        if len(self.failed) > 10:
            lines.append(f"  ... and {len(self.failed) - 10} more failed files")
        for n in self.notes:
            lines.append(f"note: {n}")
        if self.max_drop is not None:
            lines.append(f"gate --max-drop {self.max_drop} against {self.reference}: "
                         + ("passed" if not self.gate_failures else "FAILED: " + "; ".join(self.gate_failures)))
        return "\n".join(lines)


def _grid(head: list, body: list) -> list:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt = lambda row: "  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip()  # noqa: E731
    return [fmt(head)] + [fmt(r) for r in body]


def _label_map(model_labels: list, truths: list) -> dict:
    exact = {lab: lab for lab in model_labels}
    lower = {lab.lower(): lab for lab in model_labels}
    out = {}
    for t in set(truths):
        m = exact.get(t) or lower.get(t.lower())
        if m is None:
            raise VoxportError(f"label '{t}' in the CSV is none of the model's labels ({', '.join(model_labels)}); rename it in the CSV")
        out[t] = m
    return out


def compare_rows(rows: list, ref_row: dict | None, kind: str, max_drop: float | None) -> list:
    """Changes against the reference row, in points (x100), written into each row; the --max-drop failures."""
    gate = []
    for r in rows:
        if ref_row is None or r is ref_row:
            continue
        if kind == "speaker":
            d = None if r["eer"] is None or ref_row["eer"] is None else 100 * (r["eer"] - ref_row["eer"])
            r["eer_change_points"] = d
            if max_drop is not None and d is not None and d > max_drop + 1e-9:
                gate.append(f"{r['model']} gains {d:.2f} EER points (> {max_drop})")
        elif kind == "label":
            d = None if r["accuracy"] is None or ref_row["accuracy"] is None else 100 * (r["accuracy"] - ref_row["accuracy"])
            r["accuracy_change_points"] = d
            if max_drop is not None and d is not None and -d > max_drop + 1e-9:
                gate.append(f"{r['model']} loses {-d:.2f} accuracy points (> {max_drop})")
        else:
            for key in ("wer", "cer"):
                r[f"{key}_change_points"] = None if r[key] is None or ref_row[key] is None else 100 * (r[key] - ref_row[key])
            d = r["wer_change_points"]
            if max_drop is not None and d is not None and d > max_drop + 1e-9:
                gate.append(f"{r['model']} gains {d:.2f} WER points (> {max_drop})")
    return gate


def evaluate(folder: str, labels_csv: str, dtypes: str | None = "all", options: Options = Options(), engine: str = "local",
             checkpoint: str | None = None, pytorch: bool = True, threads: int = 0, workers: int | None = None,
             max_drop: float | None = None, normalize_text: bool = True, progress: bool = False) -> EvalReport:
    from .engine import run_local, run_ray

    mf = ModelFolder(folder)
    options.check(mf)
    kind, items = read_labels(labels_csv)
    if kind == "speaker":
        from .speakers import EMBEDDING_OUTPUTS

        if not set(EMBEDDING_OUTPUTS) & set(mf.output_names):
            raise VoxportError(f"{folder} has no embeddings output ({' or '.join(EMBEDDING_OUTPUTS)}): a path,speaker CSV needs "
                               "a folder built from a speaker model (or with --embeddings)")
        if options.window_s is not None or mf.is_ctc:
            options = Options(batch_size=options.batch_size)  # one embedding per whole clip
    elif mf.is_ctc and kind != "text":
        raise VoxportError(f"{folder} is a CTC folder: the labels CSV needs columns path,text")
    elif not mf.is_ctc and kind != "label":
        raise VoxportError(f"{folder} is a classifier: the labels CSV needs columns path,label")
    if engine not in ("local", "ray"):
        raise VoxportError("--engine is local or ray")
    dts = list(mf.files) if dtypes in (None, "all") else mf.dtypes(dtypes)
    notes, loaded = [], None
    if kind == "label":
        model_labels = [mf.id2label[i] for i in sorted(mf.id2label)]
        lmap = _label_map(model_labels, [v for _, v in items])
        items = [(p, lmap[v]) for p, v in items]
    if pytorch:
        from .reference import load_reference

        try:
            loaded = load_reference(mf.record, checkpoint, threads)
        except VoxportError as e:
            if checkpoint:
                raise
            notes.append(f"PyTorch row skipped: {e}")
            if progress:  # said at once, not only under the table at the end
                print(f"[{time.strftime('%H:%M:%S')}] {notes[-1]}", file=sys.stderr)
    elif checkpoint:
        raise VoxportError("--checkpoint is for the PyTorch reference; drop --no-pytorch or --checkpoint")
    if max_drop is not None and loaded is None and "fp32" not in dts:
        raise VoxportError("--max-drop needs a reference: the PyTorch model (see --checkpoint) or the fp32 file in --dtype")
    paths = [p for p, _ in items]
    t0 = time.time()
    if engine == "local":
        records = run_local(folder, dts, paths, options, threads, loaded, progress)
    else:
        # each actor rebuilds the reference itself from the record (a model object is not shipped)
        records = run_ray(folder, dts, paths, options, threads, workers, mf.record if loaded is not None else None,
                          checkpoint, progress)
    seconds = time.time() - t0
    models = ([PYTORCH] if loaded is not None else []) + dts
    src = (mf.record.get("source") or {})
    files_col = {PYTORCH: f"{src.get('arch', '?')} ({'random init, seed ' + str(src.get('seed')) if src.get('random_init') else src.get('checkpoint') or checkpoint})"}
    files_col.update({d: f"onnx/{DTYPE_FILES[d]}" for d in dts})
    per_file, embeddings = [], {m: [] for m in models}
    for (p, truth), rec in zip(items, records):
        entry = {"path": p, "status": rec["status"], "error": rec["error"], "truth": truth, "predictions": {}}
        for m, res in rec["results"].items():
            if kind == "speaker":
                from .speakers import clip_embedding

                emb = clip_embedding(res)
                embeddings[m].append(emb)
                entry["predictions"][m] = {"embedding_norm": float((emb ** 2).sum() ** 0.5)}
            elif kind == "label":
                entry["predictions"][m] = {"label": res["labels"][0]["label"], "score": res["labels"][0]["score"]}
            else:
                entry["predictions"][m] = res["text"]
        per_file.append(entry)
    ok = [e for e in per_file if e["status"] == "ok"]
    rows = []
    if kind == "speaker":
        from .speakers import verification_rows

        rows = verification_rows(models, embeddings, [e["truth"] for e in ok], PYTORCH if loaded is not None else "fp32")
        for r in rows:
            r["file"], r["n"] = files_col[r["model"]], len(ok)
    for m in models if kind != "speaker" else []:
        row = {"model": m, "file": files_col[m]}
        if kind == "label":
            row.update(metrics.classification([e["truth"] for e in ok], [e["predictions"][m]["label"] for e in ok],
                                              [e["predictions"][m]["score"] for e in ok], model_labels))
            row["agreement_with_pytorch"] = (sum(e["predictions"][m]["label"] == e["predictions"][PYTORCH]["label"] for e in ok) / len(ok)
                                             if loaded is not None and m != PYTORCH and ok else None)
        else:
            norm = metrics.normalize_text if normalize_text else (lambda s: " ".join(s.split()))
            row.update(metrics.ctc([norm(e["truth"]) for e in ok], [norm(e["predictions"][m]) for e in ok]))
            row["agreement_with_pytorch"] = (sum(e["predictions"][m] == e["predictions"][PYTORCH] for e in ok) / len(ok)
                                             if loaded is not None and m != PYTORCH and ok else None)
        row["n"] = len(ok)
        rows.append(row)
    reference = PYTORCH if loaded is not None else ("fp32" if "fp32" in dts else None)
    ref_row = next((r for r in rows if r["model"] == reference), None)
    gate = compare_rows(rows, ref_row, kind, max_drop)
    if max_drop is not None and len(rows) < 2:
        notes.append("--max-drop compared nothing: only one model was evaluated")
    return EvalReport(folder=folder, task=mf.task, engine=engine, rows=rows, files=per_file, reference=reference if ref_row else None,
                      notes=notes, max_drop=max_drop, gate_failures=gate, seconds=seconds, measure=kind)
