"""Where a checkpoint comes from and how a built folder records it.

A `--checkpoint` is a local folder or a hub id ("owner/name"). Anything that looks like a path (starts
with `.`, `~` or `/`, has more than one `/`, or whose first part is an existing folder) is a path: when it
does not exist the answer is "not found", never a hub lookup.

The source record written into a folder (ONNX metadata, voxport.json, model card) names the hub id and
the revision, or only the base name of a local folder, plus the sha256 of each weight file: never a local
path. Rebuilding the reference from a local record needs the folder again (`--checkpoint`), and the
weights must hash the same.
"""
from __future__ import annotations

import glob
import hashlib
import os
import re

from ..errors import CheckpointError

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
# weights, in the order they are looked for: safetensors first, a pickle only when that is all there is
WEIGHT_PATTERNS = (("*.safetensors",), ("pytorch_model*.bin",))

# local folders loaded in this process, by (name, weight hashes): lets a stage that rebuilds the reference
# from a source record (e.g. the sensitivity ranking during a build) find the folder again
_LOCAL: dict = {}


def looks_local(checkpoint: str) -> bool:
    c = str(checkpoint)
    if c.startswith((".", "~", "/")) or "\\" in c or (os.sep != "/" and os.sep in c):
        return True
    if c.count("/") != 1 or not HUB_ID.match(c):
        return True
    return os.path.isdir(c.split("/")[0])


def hub_id(checkpoint) -> str | None:
    """The checkpoint as a hub id ("owner/name") when it is not a local path."""
    if not checkpoint or os.path.exists(os.path.expanduser(str(checkpoint))) or looks_local(checkpoint):
        return None
    return str(checkpoint)


def check_checkpoint(checkpoint: str, layout: str = "a checkpoint folder") -> None:
    """Cheap check before any work: an existing folder, or a well-formed hub id."""
    path = os.path.expanduser(str(checkpoint))
    if os.path.isdir(path):
        return
    if os.path.exists(path):
        raise CheckpointError(f"--checkpoint must be a folder, not a file: {checkpoint}; pass {layout}")
    if hub_id(checkpoint):
        return
    raise CheckpointError(f"checkpoint folder not found: {checkpoint}; pass {layout}, or a hub id (owner/name)")


def commit_of(folder: str) -> str | None:
    """The commit a hub snapshot folder holds (snapshot_download returns .../snapshots/<commit>)."""
    name = os.path.basename(os.path.normpath(folder))
    return name if COMMIT.match(name) else None


def weight_files(folder: str) -> list:
    """The weight files a loader reads: every *.safetensors, else pytorch_model*.bin."""
    for patterns in WEIGHT_PATTERNS:
        found = sorted(p for pat in patterns for p in glob.glob(os.path.join(folder, pat)))
        if found:
            return found
    return []


def resolve_checkpoint(checkpoint: str, patterns: list, layout: str, revision: str | None = None) -> str:
    """A local folder as it is; a hub id downloaded (the non-weight files in `patterns`, then the weights:
    safetensors, or pytorch_model.bin when the repository has nothing else)."""
    check_checkpoint(checkpoint, layout)
    path = os.path.expanduser(str(checkpoint))
    if os.path.isdir(path):
        if revision:
            raise CheckpointError(f"--revision is for hub checkpoints; {checkpoint} is a local folder")
        return path
    others = [p for p in patterns if not p.endswith((".safetensors", ".bin"))]
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(checkpoint, revision=revision, allow_patterns=others + list(WEIGHT_PATTERNS[0]))
        if not weight_files(folder):
            folder = snapshot_download(checkpoint, revision=commit_of(folder) or revision,
                                       allow_patterns=others + list(WEIGHT_PATTERNS[1]))
    except Exception as e:
        raise CheckpointError(f"cannot download '{checkpoint}'{f' at revision {revision}' if revision else ''} from the hub "
                              f"({type(e).__name__}); if it is a local folder, it does not exist here (write ./{checkpoint}), "
                              "else download it and pass the local folder") from None
    return folder


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _key(name: str, weights: dict) -> tuple:
    return name, tuple(sorted((weights or {}).items()))


def checkpoint_record(checkpoint: str, folder: str, files: list, revision: str | None = None) -> dict:
    """Source fields for a loaded checkpoint: hub id + revision, or the local folder's base name; sha256 of
    each weight file. Never a local path."""
    hashes = {os.path.basename(f): sha256_file(f) for f in files}
    hub = hub_id(checkpoint)
    if hub:
        return {"checkpoint": hub, "revision": commit_of(folder) or revision, "weights": hashes}
    name = os.path.basename(os.path.abspath(os.path.expanduser(str(checkpoint))))
    _LOCAL[_key(name, hashes)] = os.path.abspath(folder)
    return {"checkpoint": name, "local": True, "weights": hashes}


def recorded_folder(name: str, weights: dict) -> str:
    """The folder of a local source record, when this process loaded it; else say what to pass."""
    folder = _LOCAL.get(_key(name, weights))
    if folder is None or not os.path.isdir(folder):
        raise CheckpointError(f"built from the local checkpoint folder '{name}'; pass --checkpoint PATH to that folder")
    return folder


def load_source(source: dict, checkpoint: str | None = None, revision: str | None = None, what: str = "the folder"):
    """Rebuild the reference model of a source record. A local record needs `checkpoint` (the folder again);
    weights whose sha256 differ from the recorded ones are refused."""
    from . import get_arch

    spec = get_arch(source["arch"])
    kw = {k: v for k, v in source.items() if k not in ("weights", "local")}
    if checkpoint:
        if source.get("random_init"):
            raise CheckpointError(f"{what} was built from random weights (seed {source.get('seed')}); drop --checkpoint")
        same_hub = not source.get("local") and checkpoint == source.get("checkpoint")
        kw.update(checkpoint=checkpoint, revision=revision or (source.get("revision") if same_hub else None))
    elif source.get("local"):
        raise CheckpointError(f"{what} was built from the local checkpoint folder '{source.get('checkpoint')}'; "
                              "pass --checkpoint PATH to that folder")
    loaded = spec.load(**kw)
    want, got = source.get("weights"), loaded.source.get("weights")
    if want and got != want:
        diff = sorted(set(want) ^ set(got or {})) or sorted(k for k in want if want[k] != (got or {}).get(k))
        raise CheckpointError(f"the weights in {checkpoint or source.get('checkpoint')} differ from the ones {what} was built from "
                              f"(sha256 of {', '.join(diff[:3])}); pass the same checkpoint")
    return loaded


def card_license(folder) -> str | None:
    """The licence named in a checkpoint's model card front matter (README.md), if any."""
    path = os.path.join(folder or "", "README.md")
    if folder and os.path.isfile(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(4000)
        if text.startswith("---"):
            for line in text.split("---")[1].splitlines():
                if line.strip().startswith("license:"):
                    return line.split(":", 1)[1].strip() or None
    return None


def read_license(folder: str | None) -> bytes | None:
    """The checkpoint folder's licence file (LICENSE, LICENSE.md or LICENSE.txt), or None."""
    for name in ("LICENSE", "LICENSE.md", "LICENSE.txt"):
        p = os.path.join(folder or "", name)
        if folder and os.path.isfile(p):
            with open(p, "rb") as f:
                return f.read()
    return None
