"""Files of a built folder: the Transformers.js dtype -> file-name table (here, once), what kind a file is, and
writing a folder all or nothing (made in a temporary folder, moved into place whole)."""
from __future__ import annotations

import json
import os
import shutil
import tempfile

from .errors import PackageError

DTYPE_FILES = {
    "fp32": "model.onnx",
    "fp16": "model_fp16.onnx",
    "q8": "model_quantized.onnx",
    "int8": "model_int8.onnx",
    "uint8": "model_uint8.onnx",
    "q4": "model_q4.onnx",
    "q4f16": "model_q4f16.onnx",
    "bnb4": "model_bnb4.onnx",
}
SOURCE_FILE = "voxport.json"


def kind_of(file_name: str) -> str:
    """dtype of a file from its standard name; unknown names count as fp32 when they end in model.onnx."""
    for dtype, name in DTYPE_FILES.items():
        if file_name == name:
            return dtype
    return "q8" if "quant" in file_name or "q8" in file_name else "fp32"


def file_kind(path: str) -> tuple:
    """(dtype, numeric class) of an ONNX file from its own voxport metadata; the name only for foreign files.
    The numeric class picks the Transformers.js tolerance: "float" (float32 compute, weight-only int8 included),
    "fp16", or "dynamic" (integer kernels)."""
    import onnx

    try:
        meta = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    except Exception:
        meta = {}
    q = json.loads(meta.get("voxport.quantization") or "{}")
    if q.get("mode"):
        kind = q["mode"]
    elif "voxport.arch" in meta:
        kind = "fp32"
    else:
        kind = kind_of(os.path.basename(path))
    if kind in ("fp16", "q4f16") or q.get("float16"):
        numeric = "fp16"
    elif q.get("method") == "dynamic":
        numeric = "dynamic"
    else:
        numeric = "float"
    return kind, numeric


OLD_SUFFIX = ".old-voxport"


def recover_interrupted(folder: str) -> None:
    """A replacement killed between its two renames leaves `X.old-voxport` and no X: put the old folder back.
    With both present the new folder is complete (it is renamed into place whole): drop the old one."""
    folder = folder.rstrip("/\\") or folder
    old = folder + OLD_SUFFIX
    if os.path.isdir(old):
        if not os.path.lexists(folder):
            os.replace(old, folder)
        else:
            shutil.rmtree(old, ignore_errors=True)


def check_output_location(path: str, option: str = "--output-dir") -> None:
    """The place `path` would be written must be a folder we can create files in; checked before any work."""
    target = os.path.abspath(path)
    parent = os.path.dirname(target)
    while not os.path.lexists(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise PackageError(f"cannot create {path}: {parent} is a file, not a folder; choose another {option}")
    try:
        probe = tempfile.mkdtemp(prefix=".voxport-probe-", dir=parent)
        os.rmdir(probe)
    except OSError as e:
        raise PackageError(f"cannot write in {parent} ({e.strerror or type(e).__name__}); choose another {option}") from None


def make_parents(path: str) -> str | None:
    """Create the missing folders above `path`; return the topmost one created (for remove_empty), or None."""
    parent = os.path.dirname(os.path.abspath(path))
    top = None
    while not os.path.exists(parent):
        top, parent = parent, os.path.dirname(parent)
    if top:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return top


def remove_empty(top: str | None, path: str) -> None:
    """Undo make_parents when nothing was published: remove the created folders that are still empty."""
    if not top:
        return
    d = os.path.dirname(os.path.abspath(path))
    while True:
        try:
            os.rmdir(d)
        except OSError:
            return
        if d == top:
            return
        d = os.path.dirname(d)


def check_output_dir(folder: str, force: bool) -> None:
    recover_interrupted(folder)
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise PackageError(f"{folder} exists and is not a folder; choose another --output-dir")
    if os.path.exists(folder) and not force:
        raise PackageError(f"{folder} already exists; pass --force to replace it or choose another --output-dir")
    check_output_location(folder)


def _exchange(a: str, b: str) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def publish(tmp: str, folder: str, force: bool) -> None:
    """Move a finished temporary folder into place, replacing the old one only with force.

    Replacing swaps the two folders atomically where the OS can; elsewhere the old folder is renamed aside
    first, and an interrupted replacement is undone by the next run (recover_interrupted)."""
    folder = folder.rstrip("/\\") or folder
    check_output_dir(folder, force)
    if not os.path.exists(folder):
        os.replace(tmp, folder)
        return
    if _exchange(tmp, folder):
        shutil.rmtree(tmp, ignore_errors=True)  # now holds the old folder
        return
    old = folder + OLD_SUFFIX
    shutil.rmtree(old, ignore_errors=True)
    os.replace(folder, old)
    try:
        os.replace(tmp, folder)
    except BaseException:
        os.replace(old, folder)
        raise
    shutil.rmtree(old, ignore_errors=True)


def json_safe(value):
    """Strict-JSON form of a value: NaN and infinities become null (JSON has neither)."""
    import math

    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:  # numpy scalars
        return json_safe(value.item())
    return value


def write_json(path: str, data) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(json_safe(data), f, indent=2, ensure_ascii=False, allow_nan=False)
        f.write("\n")
