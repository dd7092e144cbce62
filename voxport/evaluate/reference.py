"""The PyTorch reference of a built folder, rebuilt through voxport's architecture registry."""
from __future__ import annotations

import numpy as np

from ..errors import VoxportError


class TorchModel:
    """The same call shape as infer.OnnxModel: (input_values, attention_mask) -> {output name: array}, computed by the
    architecture's one reference (ArchSpec.reference: the PyTorch forward, or SpeechBrain's own calls)."""

    output_names = ["logits"]

    def __init__(self, loaded, threads: int = 0):
        import torch

        from ..archs import get_arch

        if threads:
            torch.set_num_threads(threads)
        self.loaded = loaded
        self.spec = get_arch(loaded.arch)
        self.uses_mask = "attention_mask" in self.spec.input_names(loaded)

    def __call__(self, input_values: np.ndarray, attention_mask: np.ndarray | None = None) -> dict:
        from ..archs.base import Case

        x = np.ascontiguousarray(input_values, dtype=np.float32)
        mask = (attention_mask if attention_mask is not None else np.ones(x.shape, np.int64)) if self.uses_mask else None
        out = self.spec.reference(self.loaded, Case("run", x, mask))
        return out if isinstance(out, dict) else {"logits": out}


def load_reference(record: dict, checkpoint: str | None = None, threads: int = 0):
    """The Loaded PyTorch model of a folder's voxport.json record. Raises VoxportError saying why not.

    threads is set before loading: a random-init record is rebuilt by running audio through the model
    (calibration), and float sums split over threads differ in the last bits."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    source = (record or {}).get("source")
    if not source or "arch" not in source:
        raise VoxportError("the folder has no voxport.json source record")
    from ..archs.source import load_source

    return load_source(source, checkpoint=checkpoint)
