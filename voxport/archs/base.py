"""What an architecture declares: how to load it, export it, check it and package it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..tolerances import Tolerance, parity


SKIP = "skip"  # a recipe method: this architecture makes no file of the mode (its why says what was measured)


@dataclass(frozen=True)
class Recipe:
    """How one file kind is made: the method, weight scales per channel or per tensor, bias correction, and why.
    fallback: the recipe used instead when this one's file keeps its decisions only with so many nodes float that
    fewer than min_integer_share of its 8-bit weights still multiply in integer kernels (its speed-up is gone),
    or when no file of this recipe within the size budget meets the bar.
    alternatives: recipes fitted beside this one, the smallest file that meets the bar kept."""

    method: str
    per_channel: bool = True
    bias_correction: bool = False
    why: str = ""
    fallback: "Recipe | None" = None
    min_integer_share: float = 0.0
    # other recipes for the same file kind, as fast as this one on its targets: each is fitted too and the smallest
    # file that meets the bar is kept (the candidates' figures go into quantize_config.json)
    alternatives: tuple = ()

    def label(self) -> str:
        return f"{self.method} ({'per channel' if self.per_channel else 'per tensor'})"


DEFAULT_RECIPES = {
    "q8": Recipe("weight-only", True, why="int8 weights, float compute: runs wherever fp32 runs, WebGPU included"),
    "int8": Recipe("dynamic", True, why="QInt8 weights (7-bit range against AVX2 u8 x s8 saturation), uint8 activations"),
    "uint8": Recipe("dynamic", True, why="QUInt8 weights and activations, integer kernels (CPU, WASM)"),
    "fp16": Recipe("float16", why="float16 weights and compute, float32 inputs/outputs"),
    "q4": Recipe("MatMulNBits", why="4-bit block-wise MatMul weights"),
    "q4f16": Recipe("MatMulNBits", why="4-bit block-wise MatMul weights, float16 elsewhere"),
}


@dataclass
class Loaded:
    """A PyTorch model ready to run, and the record needed to rebuild it."""

    arch: str
    model: Any  # torch.nn.Module in eval mode: (input_values[, attention_mask]) -> logits
    source: dict  # JSON-able; spec.load(**source) rebuilds the same model
    config: dict
    extra: dict = field(default_factory=dict)


@dataclass
class Case:
    """One verify input: a batch of waveforms, with a mask when the graph takes one."""

    name: str
    input_values: np.ndarray  # float32 [B, N]
    attention_mask: np.ndarray | None = None  # int64 [B, N]
    lengths: list | None = None  # valid samples per row, for padded batches


class ArchSpec:
    """Base class for an architecture. Subclasses set the class attributes and override what differs."""

    name: str = ""
    sample_rate: int = 16000
    output_name: str = "logits"
    # opset -> export route ("dynamo" or "torchscript")
    routes: dict = {18: "dynamo", 17: "torchscript"}
    tolerance_profile: str = ""  # the row of voxport.tolerances.PARITY this architecture is judged by
    # or its own rows, file kind -> Tolerance (each with its measured why): a new architecture carries them here
    parity: dict = {}
    # file kind -> Recipe, chosen per architecture by measured parity per byte (and speed); kinds not named
    # here take DEFAULT_RECIPES
    recipes: dict = {}
    # whether load(embeddings=True) adds an `embeddings` output (the vector before the last layer): --embeddings
    adds_embeddings: bool = False
    # whether load(normalize_embeddings=True) gives the embeddings after a stored normalisation: --normalized-embeddings
    normalizes_embeddings: bool = False

    # loading
    def load(self, checkpoint: str | None = None, random_init: bool = False, seed: int = 0, **kw) -> Loaded:
        raise NotImplementedError

    def task(self, loaded: Loaded) -> str:
        return "audio-classification"

    def input_names(self, loaded: Loaded) -> list:
        return ["input_values"]

    def min_samples(self, loaded: Loaded) -> int:
        return 1

    def output_names(self, loaded: Loaded) -> list:
        """The graph's outputs, in order."""
        return [self.output_name]

    def output_kinds(self, loaded: Loaded) -> dict:
        """How verify compares each output: "logits" (differences, probabilities, argmax) or "embedding" (cosine per
        row, max |d|, change of the pairwise cosine scores). A single "logits" output keeps the one-array interface
        (reference() and the runtimes return an array); otherwise they return {output name: array}."""
        return {name: "logits" for name in self.output_names(loaded)}

    def multi_output(self, loaded: Loaded) -> bool:
        return self.output_kinds(loaded) != {"logits": "logits"}

    # export
    def export_module(self, loaded: Loaded, route: str):
        """The nn.Module to hand to torch.onnx.export for this route."""
        return loaded.model

    def example_inputs(self, loaded: Loaded) -> tuple:
        raise NotImplementedError

    def output_axes(self, loaded: Loaded, output: str) -> dict:
        """The dynamic axes of one output (the TorchScript route names them)."""
        return {0: "batch_size"}

    def check_shapes(self, loaded: Loaded) -> list:
        """(batch, samples) pairs other than the example, run after export to prove axes stay dynamic."""
        n = max(self.min_samples(loaded), 4000)
        return [(1, n), (3, n + 1234), (5, 2 * n + 77)]

    # onnxsim optimizer passes to skip for this architecture (see fuse)
    simplify_skip: tuple = ()

    def fuse(self, loaded: Loaded, onnx_model):
        """The simplified graph with fused ops written in, and {fused op: count}; default: unchanged, {}."""
        return onnx_model, {}

    def keep_float(self, onnx_model) -> list:
        """Names of nodes that quantization must leave in float, derived from the graph."""
        return []

    def metadata(self, loaded: Loaded) -> dict:
        return {}

    # verify
    def cases(self, loaded: Loaded) -> list:
        raise NotImplementedError

    def reference(self, loaded: Loaded, case: Case):
        """PyTorch logits for a case ({output name: array} when multi_output)."""
        import torch

        args = [torch.from_numpy(case.input_values)]
        if "attention_mask" in self.input_names(loaded):
            mask = case.attention_mask if case.attention_mask is not None else np.ones_like(case.input_values, dtype=np.int64)
            args.append(torch.from_numpy(mask))
        with torch.inference_mode():
            out = loaded.model(*args)
        if isinstance(out, (tuple, list)):  # several outputs, in output_names() order
            return {name: o.float().numpy() for name, o in zip(self.output_names(loaded), out)}
        return out.float().numpy()

    def recipe(self, mode: str) -> Recipe:
        return self.recipes.get(mode) or DEFAULT_RECIPES[mode]

    @property
    def q8_method(self) -> str:
        return self.recipe("q8").method

    def prepare(self, loaded: Loaded, audio: np.ndarray) -> np.ndarray:
        """What the deployed pipeline (Transformers.js's feature extractor) does to one clip before the graph."""
        return audio.astype(np.float32)

    def tolerance(self, loaded: Loaded, kind: str) -> Tolerance:
        if self.parity:
            if kind not in self.parity:
                from ..errors import VoxportError

                raise VoxportError(f"no tolerance for {kind} files of {self.name}: add a measured row to its parity")
            return self.parity[kind]
        return parity(self.tolerance_profile or self.name, kind)

    def deployed(self, loaded: Loaded) -> list:
        """The pipelines users run around this folder in the browser (voxport-web), each (kind, options), checked by
        verify in Transformers.js on a minute of speech: long-form CTC with word timestamps, rolling windows with an
        EMA (a voice app's 0.75 s windows every 150 ms), the speaker score of two clips."""
        task, outputs = self.task(loaded), self.output_names(loaded)
        if task == "automatic-speech-recognition":
            return [("longform", {"chunk_length_s": 10, "stride_length_s": 2, "return_timestamps": "word"})]
        out = []
        if task == "audio-classification" and "logits" in outputs:
            out.append(("windows", {"window_s": 0.75, "hop_s": 0.15, "ema": 0.2}))
        if "embeddings" in outputs:
            out.append(("verify", {}))
        return out

    def extra_checks(self, loaded: Loaded, kind: str, cases: list, refs: list, outs: list) -> tuple:
        """Architecture-specific checks on top of logits parity: (extra figures dict, failure reasons list)."""
        return {}, []

    # package
    def hf_config(self, loaded: Loaded) -> dict:
        raise NotImplementedError

    def preprocessor_config(self, loaded: Loaded) -> dict:
        raise NotImplementedError

    def extra_files(self, loaded: Loaded) -> dict:
        """Other files for the folder: name -> bytes (tokenizer, upstream LICENSE ...)."""
        return {}

    def card(self, loaded: Loaded) -> dict:
        """Model-card facts: base_model, license, labels, title."""
        return {}
