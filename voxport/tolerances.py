"""Every pass criterion in one place, each with the measurement it comes from.

PARITY: a file against the PyTorch reference, per tolerance profile (an architecture names its profile)
and file kind. RUNTIME: Transformers.js (Node, Chromium WASM, WebGPU) against onnxruntime-python on the
same file, per runtime and numeric class of the file. FIT_MARGIN: how far under the parity bar the
automatic keep-float search aims, so that audio it never saw (speech, the user's clips) stays inside.
"""
from __future__ import annotations

import dataclasses

from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerance:
    """Pass criteria for one kind of file (fp32, q8 ...).

    min_agreement counts decisive rows only: rows whose reference top-1/top-2 probability margin is larger
    than twice max_abs_prob (a file within tolerance cannot flip them). Flips on near-ties are reported apart.
    """

    max_abs_logit: float | None = None
    max_abs_prob: float | None = None
    min_agreement: float = 1.0
    why: str = ""
    # embedding outputs: the lowest cosine similarity to the reference per row, and the largest change of a
    # verification score (the cosine between two clips' embeddings) over every pair of rows
    min_cosine: float | None = None
    max_pair_delta: float | None = None

    def margin(self) -> float:
        """The reference margin above which a row counts as decisive."""
        return 2 * self.max_abs_prob if self.max_abs_prob is not None else 0.0


PARITY = {
    "ecapa": {
        "fp32": Tolerance(max_abs_logit=1e-4, min_agreement=1.0,
                          why="same float32 math; FFT vs DFT and kernel order: 1.3e-5 measured at C=1024"),
        "fp16": Tolerance(max_abs_prob=0.02, min_agreement=0.98,
                          why="float16 weights and activations: 1.9e-3 measured; 10x margin"),
        "q8": Tolerance(max_abs_prob=0.03, min_agreement=0.99,
                        why="8-bit weights, float compute; a collapsed file is off by ~0.5; measured 0.004-0.014"),
        "int8": Tolerance(max_abs_prob=0.05, min_agreement=0.98,
                          why="8-bit weights and activations (7-bit weights); measured 0.02 once sensitive nodes stay float"),
        "uint8": Tolerance(max_abs_prob=0.05, min_agreement=0.98,
                           why="8-bit weights and activations; measured 0.02 once sensitive nodes stay float"),
        "q4": Tolerance(max_abs_prob=0.1, min_agreement=0.98, why="4-bit MatMul weights (ECAPA has none: skipped)"),
    },
    "wav2vec2": {
        "fp32": Tolerance(max_abs_logit=1e-4, min_agreement=1.0, why="same float32 math; attention/conv kernel order ~1e-6"),
        "fp16": Tolerance(max_abs_prob=0.05, min_agreement=0.95, why="float16 through 12-24 transformer layers"),
        "q8": Tolerance(max_abs_prob=0.1, min_agreement=0.95,
                        why="8-bit transformer weights and activations; 6.8e-5 (95M) to 0.124 (300M, random deep weights)"),
        "q4": Tolerance(max_abs_prob=0.3, min_agreement=0.75,
                        why="4-bit block weights; random-weight CTC frames are near ties (79.5% agreement at max |dp| 0.003)"),
    },
}
# SpeechBrain ECAPA-TDNN folders: embeddings by cosine and pairwise scores, classifier scores (cosine similarities
# or log-probabilities) by max |d| for fp32 and by the top label for the others; the bars are the issue's. Measured on
# random-weight folders (BatchNorm statistics from speech-like audio), verify suite + espeak-ng speech, 49 rows:
# C=1024 in the spkrec-ecapa-voxceleb shape, and the C=32 test folder.
PARITY["speechbrain"] = {
    "fp32": Tolerance(max_abs_logit=1e-4, min_agreement=1.0, min_cosine=0.99999, max_pair_delta=1e-4,
                      why="same float32 math, the STFT as a DFT Conv1d; measured cosine 1.0000000, pairwise 2.5e-6 / 8.4e-6, "
                          "scores 3.2e-6 / 5.1e-6 (C=1024 / C=32)"),
    "fp16": Tolerance(min_agreement=0.9, min_cosine=0.995, max_pair_delta=0.02,
                      why="float16 weights and activations; measured cosine 0.999993 / 0.99999, pairwise 8.3e-4 / 3.2e-3"),
    "q8": Tolerance(min_agreement=0.9, min_cosine=0.995, max_pair_delta=0.02,
                    why="8-bit weights, float compute, front end and first Conv float; measured cosine 0.99982 / 0.99947, "
                        "pairwise 3.9e-3 / 0.017, top label 48/49 / 49/49"),
}
PARITY["speechbrain"]["uint8"] = Tolerance(
    min_agreement=0.9, min_cosine=0.995, max_pair_delta=0.02,
    why="the q8 bar; dynamic uint8 activations miss it: measured cosine 0.987 / 0.984, pairwise 0.029 / 0.13 (C=1024 / C=32)")
for _kind in ("int8", "q4", "q4f16"):
    PARITY["speechbrain"][_kind] = PARITY["speechbrain"]["q8"]
PARITY["ecapa"]["q4f16"] = PARITY["ecapa"]["q4"]
# ECAPA with --embeddings: the 192-d vector before fc7, by cosine per row and the change of pairwise scores.
# Measured on two checkpoints made from speech (C=1024 / C=512), verify cases: fp32 cosine 1.0000000, pairwise
# 7e-7 / 1.2e-6; fp16 0.9999975 / 0.9999992, 5.4e-4 / 2.9e-4; 8-bit files (after the search) min cosine 0.99929,
# max pairwise 0.016 (C=512 uint8). The 8-bit bars are what a speaker-verification user can afford: cosine 0.995,
# scores within 0.02.
for _kind, (_cos, _pair) in {"fp32": (0.99999, 1e-4), "fp16": (0.999, 0.005), "q8": (0.995, 0.02), "int8": (0.995, 0.02),
                             "uint8": (0.995, 0.02), "q4": (0.995, 0.02), "q4f16": (0.995, 0.02)}.items():
    PARITY["ecapa"][_kind] = dataclasses.replace(PARITY["ecapa"][_kind], min_cosine=_cos, max_pair_delta=_pair)
for _kind in ("int8", "uint8"):
    PARITY["wav2vec2"][_kind] = PARITY["wav2vec2"]["q8"]
PARITY["wav2vec2"]["q4f16"] = PARITY["wav2vec2"]["q4"]
# wav2vec2-family embeddings (x-vector `embeddings`, frame `last_hidden_state`): the ECAPA embedding bars. Measured on
# tiny random checkpoints (wav2vec2 / WavLM, layer- and group-norm), verify suite + speech: frames fp32 cosine
# 1.0000000 (every frame), pairwise 3.9e-7; fp16 0.999997, 6.6e-4; q8/uint8 0.99981, 4.6e-3; int8 0.99980, 5.7e-3;
# x-vectors 0.999998 and 1.6e-7 at worst (random TDNN heads give near-equal embeddings: small pairwise changes).
for _kind, _tol in PARITY["wav2vec2"].items():
    _ecapa = PARITY["ecapa"].get(_kind) or PARITY["ecapa"]["q8"]
    PARITY["wav2vec2"][_kind] = dataclasses.replace(_tol, min_cosine=_ecapa.min_cosine, max_pair_delta=_ecapa.max_pair_delta)


def parity(profile: str, kind: str) -> Tolerance:
    """The bar of one file kind of one profile; a kind without a measured row is an error, never another kind's bar."""
    table = PARITY.get(profile)
    if table is None or kind not in table:
        from .errors import VoxportError

        raise VoxportError(f"no tolerance for {kind} files of {profile}: add a measured row to voxport.tolerances.PARITY"
                           if table is not None else f"no tolerance profile '{profile}' in voxport.tolerances.PARITY")
    return table[kind]


# Transformers.js vs onnxruntime-python on the same file, max |dp|: (tolerance, measured).
RUNTIME = {
    ("node", "float"): (1e-5, "onnxruntime-node runs the same CPU kernels: 3e-8 measured for every file"),
    ("node", "fp16"): (1e-3, "same kernels as native: 3e-8 measured"),
    ("node", "dynamic"): (2e-2, "same kernels as native: 3e-8 measured; kept at the WASM bar"),
    ("browser", "float"): (5e-5, "WASM SIMD sums in another order: 1.14e-5 (C=64) and 2.4e-6 (C=1024) measured on Chromium 156"),
    ("browser", "fp16"): (1e-3, "WASM float16 kernels round differently: 1.4e-5 measured"),
    ("browser", "dynamic"): (2e-2, "WASM's ConvInteger/MatMulInteger round activations differently: 2.4e-3 / 5.5e-3 measured"),
    ("webgpu", "float"): (5e-5, "SwiftShader adapter: 1.2e-6 (fp32) and 8.3e-7 (q8 weight-only) measured"),
    ("webgpu", "fp16"): (1e-3, "float16 shaders where the adapter has shader-f16"),
    ("webgpu", "dynamic"): (2e-2, "integer ops fall back to the WASM kernels"),
}


# Embedding outputs are compared relative to their largest |value| (runtime_difference in verify/check.py); where
# that needs another bar than the table above, it is here.
RUNTIME_RELATIVE = {
    ("node", "fp16"): (5e-3, "float16 is 9.8e-4 per rounding: onnxruntime-node's fp16 kernels vs Python 1.32's gave 1.5e-3 "
                             "on WavLM frame embeddings (every frame of 38 clips)"),
}


def runtime(name: str, numeric: str, relative: bool = False) -> float:
    if relative and (name, numeric) in RUNTIME_RELATIVE:
        return RUNTIME_RELATIVE[(name, numeric)][0]
    return RUNTIME[(name, numeric)][0]


# The keep-float search aims at this share of a file kind's max |dp| bar on the verify suite, so that
# held-out audio (the user's files) stays within the bar itself. Measured on 4 recorded clips never seen by the
# build (C=1024 ECAPA made from speech): int8 0.036 -> 0.054, uint8 0.032 -> 0.058, q8 0.017 -> 0.026, i.e.
# held-out max |dp| up to 1.6x the suite's; 0.75 let int8/uint8 pass the suite and miss 0.05 on recordings.
FIT_MARGIN = 0.6
# Keeping nodes float may grow a quantized file to at most this multiple of its fully quantized size.
SIZE_BUDGET = 1.25
