"""Engines: the same per-mini-batch function (read, then every model on the same clips) run locally or on Ray Data.

Files are cut into the same mini-batches in both engines, so every model sees the same batches and the
results are the same. Ray: a read stage (tasks, files decoded in parallel) then actors that each hold
the onnxruntime sessions (and the PyTorch reference when asked), one mini-batch per call.
"""
from __future__ import annotations

import os
import pickle

from ..errors import VoxportError
from ..infer.folder import ModelFolder
from ..infer.predict import Predictor
from ..infer.run import iter_records, process, read_clip

PYTORCH = "pytorch"


def make_predictors(folder: str, dtypes: list, options, threads: int = 0, loaded=None) -> dict:
    """name -> Predictor: "pytorch" (when `loaded` is given) then each dtype. One minimum length for all."""
    mf = ModelFolder(folder)
    models = {}
    if loaded is not None:
        from .reference import TorchModel

        models[PYTORCH] = TorchModel(loaded, threads)
    for dt in dtypes:
        models[dt] = mf.open(dt, threads)
    n_min = max(mf.min_samples(m) for m in models.values() if hasattr(m, "metadata")) if dtypes else mf.min_samples()
    return {name: Predictor(mf, m, options, n_min) for name, m in models.items()}


def run_local(folder, dtypes, paths, options, threads=0, loaded=None, progress=False) -> list:
    mf = ModelFolder(folder)
    predictors = make_predictors(folder, dtypes, options, threads, loaded)
    return list(iter_records(predictors, paths, mf.sample_rate, options.batch_size, progress=progress))


def _read_group(row, sr):
    """A Ray task: decode one mini-batch of files."""
    paths = pickle.loads(row["paths"])
    return {"g": row["g"], "paths": row["paths"], "clips": pickle.dumps([read_clip(p, sr) for p in paths])}


class _Predict:
    """A Ray actor: the sessions are opened once, then every mini-batch of decoded clips goes through them."""

    def __init__(self, folder, dtypes, options, threads, source_record, checkpoint):
        loaded = None
        if source_record is not None:
            from .reference import load_reference

            loaded = load_reference(source_record, checkpoint, threads)
        self.predictors = make_predictors(folder, dtypes, options, threads, loaded)

    def __call__(self, batch):
        import numpy as np

        out = []
        for paths, clips in zip(batch["paths"], batch["clips"]):
            out.append(pickle.dumps(process(self.predictors, pickle.loads(paths), pickle.loads(clips))))
        return {"g": np.asarray(batch["g"]), "records": np.array(out, dtype=object)}


def run_ray(folder, dtypes, paths, options, threads=1, workers=None, source_record=None, checkpoint=None, progress=False) -> list:
    """Ray Data: local Ray by default, a cluster when RAY_ADDRESS is set. `workers` actors (default: CPUs / threads)."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise VoxportError("--engine ray needs Ray Data: pip install 'voxport[ray]'") from None
    mf = ModelFolder(folder)
    import logging

    threads = threads or 1
    started = not ray.is_initialized()
    if started:
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = bool(progress)
    if hasattr(ctx, "print_on_execution_start"):
        ctx.print_on_execution_start = False
    workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1) // threads))
    size = options.batch_size
    groups = [paths[i:i + size] for i in range(0, len(paths), size)]
    items = [{"g": g, "paths": pickle.dumps(group)} for g, group in enumerate(groups)]
    ds = ray.data.from_items(items, override_num_blocks=min(len(items), max(1, 4 * workers)))
    # decoding takes no CPU reservation: the actors hold all of them, and reading must not wait behind them
    ds = ds.map(_read_group, fn_kwargs={"sr": mf.sample_rate}, num_cpus=0)
    ds = ds.map_batches(_Predict, batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=threads,
                        fn_constructor_kwargs={"folder": os.path.abspath(folder), "dtypes": list(dtypes), "options": options,
                                               "threads": threads, "source_record": source_record, "checkpoint": checkpoint})
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Ray's advice on under-used actors for small inputs
            rows = sorted(ds.take_all(), key=lambda r: int(r["g"]))
    finally:
        if started:
            ray.shutdown()
    records = [rec for r in rows for rec in pickle.loads(r["records"])]
    if len(records) != len(paths):
        raise VoxportError(f"the Ray run returned {len(records)} records for {len(paths)} files")
    return records
