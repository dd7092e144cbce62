"""The layers of docs/layout.md: every voxport import (module level or inside a function) points to a layer at or
below its own, and no two modules import each other, directly or around a loop."""
import ast
import os

import voxport

ROOT = os.path.dirname(os.path.abspath(voxport.__file__))
# lower number = lower layer; a module may import its own layer and those below
LAYERS = {
    "errors": 0, "results": 0, "tolerances": 0, "files": 0, "onnxutil": 0, "ctc": 0,
    "archs": 1, "infer": 1,
    "export": 2, "verify": 2,
    "quantize": 3,
    "package": 4,
    "evaluate": 5, "bench": 5, "validate": 5,
    "build": 6,
    "cli": 7,
}


def modules() -> dict:
    out = {}
    for d, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(d, f), os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(d, f)
    return out


def imports(mods: dict) -> dict:
    edges = {}
    for m, path in mods.items():
        pkg = m.split(".") if path.endswith("__init__.py") else m.split(".")[:-1]
        found = set()
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            targets = []
            if isinstance(node, ast.ImportFrom):
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([node.module] if node.module else [])) if node.level else node.module
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                while t and t not in mods and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in mods and t != m:
                    found.add(t)
        edges[m] = found
    return edges


def layer(m: str) -> int:
    parts = m.split(".")
    return -1 if len(parts) == 1 else LAYERS[parts[1]]


def test_every_module_has_a_layer():
    assert {m.split(".")[1] for m in modules() if "." in m} <= set(LAYERS)


def upward(edges: dict) -> list:
    return [(a, b) for a, bs in edges.items() for b in bs if layer(a) >= 0 and layer(b) > layer(a)]


def test_imports_point_down():
    up = upward(imports(modules()))
    assert not up, up


def test_no_import_cycles():
    edges = imports(modules())
    state, stack = {}, []

    def visit(v):
        state[v] = 1
        stack.append(v)
        for w in edges.get(v, ()):
            if layer(w) < 0:  # the package's own __init__ (the public API) sits above everything
                continue
            if state.get(w) == 1:
                raise AssertionError(" -> ".join(stack[stack.index(w):] + [w]))
            if w not in state:
                visit(w)
        stack.pop()
        state[v] = 2

    for m in sorted(edges):
        if m not in state and layer(m) >= 0:
            visit(m)


def test_the_check_sees_an_upward_import(tmp_path):
    """The analysis itself: an archs module importing quantize (inside a function) is reported."""
    mods = modules()
    fake = tmp_path / "fake.py"
    fake.write_text("def f():\n    from ..quantize import quantize\n")
    mods["voxport.archs.fake"] = str(fake)  # resolved as if it were voxport/archs/fake.py
    assert ("voxport.archs.fake", "voxport.quantize") in upward(imports(mods))


def test_every_architecture_has_its_tests_and_bars():
    """Optimum's rule: a registered architecture without tests of its own (tests/test_<name>.py: a tiny model in the
    upstream layout, exported, quantized and verified) fails here; so does one without a measured bar per kind."""
    from voxport.archs import arch_names, get_arch
    from voxport.tolerances import PARITY

    tests = os.listdir(os.path.dirname(os.path.abspath(__file__)))
    for name in arch_names():
        assert f"test_{name}.py" in tests, name
        spec = get_arch(name)
        rows = spec.parity or PARITY[spec.tolerance_profile or name]
        assert {"fp32", "q8"} <= set(rows) and all(t.why for t in rows.values()), name
