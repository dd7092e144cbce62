"""Typed results of each stage."""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field


class Status(str, enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    NOT_RUN = "not run"


def _plain(value):
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None  # strict JSON has no NaN or Infinity
    return value


def _num(x: float, width: int) -> str:
    """A figure for a table; "-" where there is none (NaN)."""
    return f"{'-':>{width}}" if x != x else f"{x:>{width}.2e}"


class _ToDict:
    def to_dict(self) -> dict:
        return _plain(self)


@dataclass(frozen=True)
class ExportResult(_ToDict):
    path: str
    arch: str
    opset: int
    route: str
    inputs: list
    outputs: list
    nodes_before: int
    nodes_after: int
    size_bytes: int
    keep_float: list
    seconds: float
    checked_shapes: list = field(default_factory=list)

    def to_table(self) -> str:
        return (
            f"exported {self.arch} -> {self.path}\n"
            f"  opset {self.opset} ({self.route}), nodes {self.nodes_before} -> {self.nodes_after} after simplify, "
            f"{self.size_bytes / 1e6:.1f} MB, {self.seconds:.1f} s\n"
            f"  inputs {', '.join(self.inputs)}; outputs {', '.join(self.outputs)}\n"
            f"  dynamic axes checked on {len(self.checked_shapes)} shapes; kept float when quantizing: {len(self.keep_float)} nodes"
        )


@dataclass(frozen=True)
class QuantizeResult(_ToDict):
    path: str
    mode: str
    size_bytes: int
    source_size_bytes: int
    kept_float: list
    options: dict
    seconds: float

    def to_table(self) -> str:
        return (
            f"quantized ({self.mode}) -> {self.path}\n"
            f"  {self.source_size_bytes / 1e6:.1f} MB -> {self.size_bytes / 1e6:.1f} MB, "
            f"{len(self.kept_float)} nodes kept float, {self.seconds:.1f} s"
        )


@dataclass(frozen=True)
class FileReport(_ToDict):
    """Parity of one ONNX file against the PyTorch reference over the whole suite."""

    file: str
    kind: str
    runtime: str
    status: Status
    cases: int
    max_abs_logit: float
    mean_abs_logit: float
    max_abs_prob: float
    mean_abs_prob: float
    over_1e2: int
    over_1e1: int
    argmax_agree: int
    argmax_total: int
    tolerance: dict
    reasons: list = field(default_factory=list)
    worst_case: str = ""
    extra: dict = field(default_factory=dict)
    # decisions whose reference margin is larger than the tolerance allows a file to move (see Tolerance)
    decisive_agree: int = 0
    decisive_total: int = 0
    near_tie_flips: int = 0  # argmax flips on rows that are not decisive: allowed, but shown
    flip_examples: list = field(default_factory=list)  # "case [row]: p(1) 0.536 -> 0.499", the first few
    # embedding outputs (None when the graph has none): lowest cosine to the reference over all rows, largest |d|,
    # largest change of a pairwise cosine score (two rows' embeddings), and the rows / pairs they were taken over
    min_cosine: float | None = None
    max_abs_embedding: float | None = None
    max_pair_delta: float | None = None
    embedding_rows: int = 0

    @property
    def agreement(self) -> float:
        return self.argmax_agree / self.argmax_total if self.argmax_total else 1.0

    @property
    def decisive_agreement(self) -> float:
        return self.decisive_agree / self.decisive_total if self.decisive_total else 1.0


@dataclass(frozen=True)
class VerifyReport(_ToDict):
    status: Status
    files: list
    cases: list
    reference: str

    @property
    def passed(self) -> bool:
        return self.status == Status.PASSED

    def to_table(self) -> str:
        head = (f"{'file':<28} {'runtime':<8} {'max|dlogit|':>11} {'mean|dlogit|':>12} {'max|dp|':>9} {'>1e-2':>6} {'>1e-1':>6} "
                f"{'argmax':>11} {'decisive':>11} {'near-tie flips':>14}  status")
        lines = [f"reference: {self.reference}; {len(self.cases)} cases", head]
        for f in self.files:
            lines.append(
                f"{f.file:<28} {f.runtime:<8} {_num(f.max_abs_logit, 11)} {_num(f.mean_abs_logit, 12)} {_num(f.max_abs_prob, 9)} "
                f"{f.over_1e2:>6} {f.over_1e1:>6} {f.argmax_agree:>5}/{f.argmax_total:<5} {f.decisive_agree:>5}/{f.decisive_total:<5} "
                f"{f.near_tie_flips:>14}  {f.status.value}"
            )
            for flip in f.flip_examples[:3]:
                lines.append(f"    near-tie flip (within tolerance): {flip}")
            if f.min_cosine is not None:
                lines.append(f"    embeddings ({f.embedding_rows} rows): min cosine {f.min_cosine:.7f}, max |d| {f.max_abs_embedding:.2e}, "
                             f"max |d pairwise score| {f.max_pair_delta:.2e}")
            if f.extra:
                lines.append("    " + ", ".join(f"{k.replace('_', ' ')}: {v:.3g}" if isinstance(v, float) else f"{k.replace('_', ' ')}: {v}"
                                                for k, v in f.extra.items()))
            for r in f.reasons:
                lines.append(f"    {r}")
        lines.append(f"verify: {self.status.value}")
        return "\n".join(lines)


@dataclass(frozen=True)
class BuildResult(_ToDict):
    folder: str
    export: ExportResult
    quantized: list
    verify: VerifyReport
    files: dict
    seconds: float
    peak_rss_mb: float
    skipped: dict = field(default_factory=dict)
    search: dict = field(default_factory=dict)  # mode -> what the keep-float search did (FitResult.to_dict())
    peak_rss_children_mb: float = 0.0  # the largest child process (Node, Chromium for --runtime node,browser)

    def to_table(self) -> str:
        lines = [self.export.to_table()]
        lines += [q.to_table() for q in self.quantized]
        for mode, f in self.search.items():
            kept = f.get("kept_float") or []
            if kept:
                lines.append(f"  {mode}: fully quantized max |dp| {f['max_abs_prob_all_quantized']:.3g} > {f['target_max_abs_prob']:.3g}; "
                             f"kept float: " + ", ".join(k["node"] for k in kept[:6]) + (" ..." if len(kept) > 6 else "")
                             + f" -> {f['max_abs_prob']:.3g}, {f['size_bytes'] / 1e6:.1f} MB "
                             f"({f['size_bytes'] / f['size_all_quantized']:.2f}x fully quantized)")
        lines += [f"skipped {mode}: {why}" for mode, why in self.skipped.items()]
        lines.append(self.verify.to_table())
        children = f", children {self.peak_rss_children_mb:.0f} MB" if self.peak_rss_children_mb else ""
        lines.append(f"built {self.folder} in {self.seconds:.1f} s (peak RSS {self.peak_rss_mb:.0f} MB{children}; "
                     f"recorded in voxport.json)")
        for name, size in self.files.items():
            lines.append(f"  {name:<32} {size / 1e6:>9.2f} MB")
        return "\n".join(lines)


@dataclass(frozen=True)
class BenchRow(_ToDict):
    name: str
    runtime: str
    size_bytes: int
    seconds_audio: float
    median_ms: float
    p95_ms: float
    runs: int
    source: str = ""  # "" for the benched folder or files (and PyTorch); else the label of an --against export
    path: str = ""


@dataclass(frozen=True)
class BenchResult(_ToDict):
    folder: str
    threads: int
    rows: list
    cpu: str  # the CPU model
    cpu_flags: dict = field(default_factory=dict)  # ISA extension -> present
    int8_dot_product: bool = False  # VNNI / AMX-INT8 / ARM dotprod
    machine: str = ""
    cores: int = 0
    versions: dict = field(default_factory=dict)  # onnxruntime, torch
    runs: int = 0
    warmup: int = 0
    interleaved: bool = True  # per window, one run of each candidate in turn, round after round
    files: dict = field(default_factory=dict)  # name -> path of the benched files
    fp32: str = ""  # the file the others are divided by
    against: list = field(default_factory=list)  # [{label, path, files, fp32}]
    ratios: list = field(default_factory=list)  # [{kind: fp32|pytorch|against, seconds_audio, name, runtime, baseline, ratio}]
    load_average: list = field(default_factory=list)  # 1-minute load average at the start and the end
    thread_pools: dict = field(default_factory=dict)  # how idle threads wait (no spinning: see bench.py)

    def ratio(self, kind: str, name: str, seconds_audio: float, runtime: str = "onnxruntime", against: str | None = None):
        for r in self.ratios:
            if (r["kind"], r["name"], r["seconds_audio"], r["runtime"]) == (kind, name, seconds_audio, runtime) and \
                    r.get("against") == against:
                return r["ratio"]
        return None

    def cpu_line(self) -> str:
        have = [f for f, v in self.cpu_flags.items() if v]
        lack = [f for f, v in self.cpu_flags.items() if not v]
        return (f"cpu: {self.cpu} ({self.machine}, {self.cores} cores); flags: {' '.join(have) or 'none known'}"
                + (f"; absent: {' '.join(lack)}" if lack else "")
                + f"; int8 dot products: {'yes' if self.int8_dot_product else 'no'}")

    def to_table(self) -> str:
        what = self.folder or ", ".join(self.files.values())
        versions = ", ".join(f"{k} {v}" for k, v in self.versions.items())
        load = ""
        if len(self.load_average) == 2 and None not in self.load_average:
            load = f"; load average {self.load_average[0]:.2f} at the start, {self.load_average[1]:.2f} at the end"
        lines = [f"bench {what}: {self.threads} threads" + (f", {versions}" if versions else ""),
                 self.cpu_line(),
                 f"timing: per window, {self.runs} rounds of one run of each candidate in turn, after {self.warmup} warm-up "
                 f"rounds, idle threads not spinning (Transformers.js runtimes in their own process){load}"]
        labels = [a["label"] for a in self.against]
        cols = ["x fp32", "x torch"] + [f"x {a}" for a in labels]
        width = max([28] + [len(r.name) for r in self.rows])
        rt_width = max([12] + [len(r.runtime) for r in self.rows])
        head = f"{'variant':<{width}} {'runtime':<{rt_width}} {'size MB':>8} {'audio s':>8} {'median ms':>10} {'p95 ms':>8}"
        lines.append(head + "".join(f" {c:>{max(8, len(c))}}" for c in cols))
        for r in self.rows:
            size = f"{r.size_bytes / 1e6:.1f}" if r.size_bytes else "-"
            cells = [self.ratio("fp32", r.name, r.seconds_audio, r.runtime), self.ratio("pytorch", r.name, r.seconds_audio, r.runtime)]
            cells += [self.ratio("against", r.name, r.seconds_audio, r.runtime, a) for a in labels]
            lines.append(f"{r.name:<{width}} {r.runtime:<{rt_width}} {size:>8} {r.seconds_audio:>8.2f} {r.median_ms:>10.1f} {r.p95_ms:>8.1f}"
                         + "".join(f" {('-' if v is None else f'{v:.2f}'):>{max(8, len(c))}}" for c, v in zip(cols, cells)))
        if self.fp32:
            lines.append(f"x fp32: median / the median of {self.fp32} (same runtime and window); x torch: median / PyTorch eager's")
        for a in self.against:
            lines.append(f"x {a['label']}: median / the median of {a['label']}'s file of the same name, else of its {a['fp32']} "
                         f"({a['path']})")
        return "\n".join(lines)
