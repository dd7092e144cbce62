"""The PyTorch reference of a built folder, rebuilt through voxport's architecture registry."""
from __future__ import annotations

import numpy as np

from ..errors import VoxportError


class TorchModel:
    """The same call shape as infer.OnnxModel: (input_values, attention_mask) -> {"logits": array}."""

    output_names = ["logits"]

    def __init__(self, loaded, threads: int = 0):
        import torch

        from ..archs import get_arch

        if threads:
            torch.set_num_threads(threads)
        self.loaded = loaded
        self.uses_mask = "attention_mask" in get_arch(loaded.arch).input_names(loaded)

    def __call__(self, input_values: np.ndarray, attention_mask: np.ndarray | None = None) -> dict:
        import torch

        from ..archs import get_arch

        args = [torch.from_numpy(np.ascontiguousarray(input_values, dtype=np.float32))]
        if self.uses_mask:
            mask = attention_mask if attention_mask is not None else np.ones(input_values.shape, np.int64)
            args.append(torch.from_numpy(mask))
        with torch.inference_mode():
            out = self.loaded.model(*args)
        if isinstance(out, (tuple, list)):  # several outputs, in the architecture's output_names() order
            return {name: o.float().numpy() for name, o in zip(get_arch(self.loaded.arch).output_names(self.loaded), out)}
        return {"logits": out.float().numpy()}


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
    try:  # the source-record helper (hashes, local folders by name), where this voxport has it
        from ..archs.source import load_source
    except ImportError:
        load_source = None
    if load_source is not None:
        return load_source(source, checkpoint=checkpoint)
    from ..archs import get_arch

    kw = dict(source)
    if checkpoint:
        kw.update(checkpoint=checkpoint, random_init=False)
    return get_arch(kw.pop("arch")).load(**kw)
