"""PNG charts of an evaluation with matplotlib: a confusion matrix per model and a per-file comparison."""
from __future__ import annotations

import os


def write_plots(report, folder: str) -> list:
    """Write the charts into `folder` (each written to a temporary name, then renamed). Returns the paths."""
    try:
        import matplotlib
    except ImportError:
        from ..errors import VoxportError

        raise VoxportError("--plots needs matplotlib: pip install 'voxport[plots]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    os.makedirs(folder, exist_ok=True)
    written = []

    def save(fig, name):
        path = os.path.join(folder, name)
        tmp = os.path.join(folder, f".{name}.tmp.png")
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        plt.close(fig)
        os.replace(tmp, path)
        written.append(path)

    rows = report.rows
    if not rows:
        return written
    classifier = report.task == "audio-classification" and report.measure == "label"
    if report.measure == "speaker":  # no confusion matrix: the error rate and the decisions kept
        metrics = [("eer", "EER"), ("agreement_with_pytorch", "same decisions as PyTorch")]
    elif classifier:
        for r in rows:
            labels, m = r["confusion"]["labels"], np.asarray(r["confusion"]["matrix"])
            fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(labels), 1.0 + 0.9 * len(labels)))
            ax.imshow(m, cmap="Blues")
            for (i, j), v in np.ndenumerate(m):
                ax.text(j, i, str(v), ha="center", va="center", color="white" if v > m.max() / 2 else "black")
            ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
            ax.set_yticks(range(len(labels)), labels)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
            ax.set_title(f"{r['model']}: accuracy {acc}")
            save(fig, f"confusion_{r['model']}.png")
        metrics = [("accuracy", "accuracy"), ("f1_macro", "F1-macro"), ("mean_confidence", "mean confidence"),
                   ("agreement_with_pytorch", "agreement with PyTorch")]
    else:
        metrics = [("wer", "WER"), ("cer", "CER"), ("agreement_with_pytorch", "same text as PyTorch")]
    fig, ax = plt.subplots(figsize=(1.5 + 1.6 * len(rows), 3.6))
    width = 0.8 / len(metrics)
    x = np.arange(len(rows))
    for k, (key, name) in enumerate(metrics):
        vals = [r.get(key) if r.get(key) is not None else np.nan for r in rows]
        bars = ax.bar(x + (k - (len(metrics) - 1) / 2) * width, vals, width, label=name)
        for b, v in zip(bars, vals):
            if v == v:
                ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.3f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, [r["model"] for r in rows])
    ax.set_ylim(0, 1.1 if report.measure == "speaker" or classifier else None)
    ax.legend(fontsize=8, loc="lower right" if classifier else "upper right")
    ax.set_title(f"{os.path.basename(os.path.normpath(report.folder))}: {len(report.files) - len(report.failed)} files")
    save(fig, "comparison.png")
    return written
