"""Registry of architectures. Adding one = adding a module that calls register()."""
from __future__ import annotations

from ..errors import VoxportError
from .base import ArchSpec, Case, Loaded, Tolerance

_REGISTRY: dict = {}
_LOADED = False


def register(cls):
    spec = cls()
    _REGISTRY[spec.name] = spec
    return cls


def get_arch(name: str) -> ArchSpec:
    _load_all()
    if name not in _REGISTRY:
        raise VoxportError(f"unknown architecture '{name}'; choose one of: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def arch_names() -> list:
    _load_all()
    return sorted(_REGISTRY)


def _load_all():
    """Every module of this package: an architecture module registers itself on import, so adding one is adding a file."""
    import importlib
    import pkgutil

    global _LOADED
    if _LOADED:
        return
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    _LOADED = True


__all__ = ["ArchSpec", "Case", "Loaded", "Tolerance", "register", "get_arch", "arch_names"]
