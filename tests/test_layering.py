"""The layering of docs/adr/0012-layering.md, checked from the source (``ast``, no import).

Every import in ``coopsim/`` — at module level or inside a function — goes to a lower layer
or stays inside its own sub-package; and nothing outside ``coopsim/context.py`` reads a
``_``-prefixed attribute of a context.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "coopsim"

# Layer of each part of the package: an import must go to a strictly lower layer, or stay
# in its own part. Parts of one layer do not import each other.
LAYERS = {
    "errors": 0,
    "configs": 0,
    "engine": 1,
    "topology": 1,
    "runtime": 2,
    "tensor": 3,
    "kernels": 4,
    "distributed": 4,
    "tp": 5,
    "testing": 5,
    "bridge": 5,
    "bench": 5,
    "context": 6,
    "__init__": 8,
}
# Entry points: modules on the user's side of the API (a CLI, a pytest plugin, a launcher),
# shipped in the package so that an install is enough. They may import every part (the
# context included); only ``coopsim/__init__.py`` imports them (lazily).
ENTRY_POINTS = ("coopsim.bench.cli", "coopsim.bench.__main__", "coopsim.testing.plugin",
                "coopsim.bridge")
ENTRY_LAYER = 7
CONTEXT_NAMES = ("ctx", "_ctx", "context")


def _layer(module: str, part: str):
    if any(module == e or module.startswith(e + ".") for e in ENTRY_POINTS):
        return ENTRY_LAYER
    return LAYERS.get(part)


def _part(module: str) -> str | None:
    """``coopsim.distributed.api`` -> ``distributed``; None outside coopsim."""
    names = module.split(".")
    if names[0] != "coopsim":
        return None
    return names[1] if len(names) > 1 else "__init__"


def _imports(tree: ast.AST, module: str):
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:  # "from coopsim import context" imports coopsim.context
                if target == "coopsim":
                    yield node.lineno, f"coopsim.{alias.name}"


def _reads_context_private(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else None
            if name in CONTEXT_NAMES:
                yield node.lineno, f"{name}.{node.attr}"


def violations(package_dir: Path) -> list[str]:
    """Every upward or sideways import between parts, and every private read of a context."""
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        relative = path.relative_to(package_dir.parent).with_suffix("")
        module = ".".join(relative.parts)
        if module.endswith(".__init__"):
            module = module[: -len(".__init__")]
        part = _part(module)
        layer = _layer(module, part)
        if layer is None:
            found.append(f"{path}: part {part!r} has no layer in docs/adr/0012-layering.md")
            continue
        tree = ast.parse(path.read_text(), str(path))
        for lineno, target in _imports(tree, module):
            other = _part(target)
            if other is None or (other == part and _layer(target, other) <= layer):
                continue
            other_layer = _layer(target, other)
            if other_layer is None:
                found.append(f"{path}:{lineno}: imports {target}, a part with no layer")
            elif other_layer >= layer:
                found.append(f"{path}:{lineno}: {part} (layer {layer}) imports {target} "
                             f"({other}, layer {other_layer}): imports must point downward")
        if part != "context":
            for lineno, what in _reads_context_private(tree):
                found.append(f"{path}:{lineno}: reads {what}, a private field of the context; "
                             f"use the runtime port")
    return found


def test_the_package_imports_downward_only_and_reads_no_context_private():
    assert violations(PACKAGE) == []


def test_the_layering_check_fails_on_a_bad_import_and_a_private_read(tmp_path):
    bad = tmp_path / "coopsim"
    (bad / "engine").mkdir(parents=True)
    (bad / "tensor").mkdir()
    (bad / "__init__.py").write_text("")
    (bad / "engine" / "__init__.py").write_text("")
    (bad / "tensor" / "__init__.py").write_text("")
    (bad / "engine" / "upward.py").write_text("def f():\n    from coopsim.distributed import api\n")
    (bad / "tensor" / "peek.py").write_text("def f(ctx):\n    return ctx._runtime\n")
    (bad / "tensor" / "fine.py").write_text("from coopsim.engine import Engine\nfrom . import peek\n")
    found = violations(bad)
    assert len(found) == 2, found
    assert "engine (layer 1) imports coopsim.distributed" in found[0]
    assert "reads ctx._runtime" in found[1]


def test_only_entry_points_import_the_context(tmp_path):
    bad = tmp_path / "coopsim"
    (bad / "bench").mkdir(parents=True)
    (bad / "bench" / "runner.py").write_text("from coopsim.context import RuntimeContext\n")
    (bad / "bench" / "cli.py").write_text("from coopsim.context import RuntimeContext\n"
                                          "from coopsim.bench import runner\n")
    found = violations(bad)
    assert len(found) == 1 and "bench/runner.py:1" in found[0], found


def test_the_layering_check_fails_on_a_sideways_relative_import(tmp_path):
    bad = tmp_path / "coopsim"
    (bad / "kernels").mkdir(parents=True)
    (bad / "kernels" / "__init__.py").write_text("")
    (bad / "kernels" / "sideways.py").write_text("from ..distributed import api\n")
    found = violations(bad)
    assert any("kernels (layer 4) imports coopsim.distributed" in f for f in found), found
