"""The package's layers, as the architecture document draws them, enforced.

* ``fedzo.zo`` is the pure core: the standard library, torch, ``fedzo.errors``,
  ``fedzo.registry``, ``fedzo.killpoints``, ``fedzo.atomic`` and ``fedzo.cache`` (standard library only) only.
* Nothing in ``fedzo`` imports the top-level ``analysis`` (experiment scripts).
* ``fedzo.federation`` does not import the centralized trainer (``fedzo.train``).
* ``fedzo.records`` and ``fedzo.config`` import neither Flower nor transformers;
  ``fedzo.records`` not even torch.
* No import cycles between fedzo modules, counting imports inside functions.
* Modules stay under 400 lines and functions under 60.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fedzo"
STDLIB = set(sys.stdlib_module_names)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path, *, type_checking: bool = False) -> set[str]:
    """Every module ``path`` imports (module level and inside functions; TYPE_CHECKING
    imports only with ``type_checking``)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child) and not type_checking:
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                out.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1] + [base]).strip(".")
                out.add(base)
                out.update(f"{base}.{a.name}" for a in child.names if f"{base}.{a.name}" in MODULES)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return out


# the import graph with TYPE_CHECKING imports: a cycle only a type checker sees is a cycle all the same
GRAPH = {name: {m for m in imports_of(path, type_checking=True) if m in MODULES and m != name}
         for name, path in MODULES.items()}


def test_zo_core_imports_only_torch_and_the_standard_library() -> None:
    allowed = {"torch", "fedzo.errors", "fedzo.registry", "fedzo.killpoints", "fedzo.atomic", "fedzo.cache"}
    for name, path in MODULES.items():
        if not name.startswith("fedzo.zo"):
            continue
        for mod in imports_of(path):
            top = mod.split(".")[0]
            kernel = top == "triton" and name == "fedzo.zo.triton_direction"  # the optional GPU kernel's compiler
            ok = top in STDLIB or top == "torch" or kernel or mod.startswith("fedzo.zo") or mod in allowed
            assert ok, f"{name} imports {mod}: fedzo.zo may import only torch and the standard library"


def test_nothing_in_the_package_imports_analysis_or_the_trainer_from_federation() -> None:
    for name, path in MODULES.items():
        mods = imports_of(path)
        assert not any(m == "analysis" or m.startswith("analysis.") for m in mods), f"{name} imports analysis"
        if name.startswith("fedzo.federation"):
            assert "fedzo.train" not in mods, f"{name} imports the centralized trainer"


def test_config_holds_names_not_the_code_behind_them() -> None:
    for name, path in MODULES.items():
        if name.startswith("fedzo.config"):
            bad = sorted(m for m in imports_of(path, type_checking=True) if m.startswith("fedzo.federation")
                         or m in ("fedzo.zo.perturb", "fedzo.zo.server_optimizers"))
            assert not bad, f"{name} imports {bad}: fedzo.config reads plug-in names from fedzo.config.names"


FEDERATION_ROLES = {  # subpackage: the subpackages of fedzo.federation it may not import
    "wire": {"client", "server", "transports"},  # the schema both sides read
    "client": {"server", "transports"},  # a worker process runs no server code
    "server": {"client"},  # the server reaches clients only through a transport and the wire
}


@pytest.mark.parametrize("role", sorted(FEDERATION_ROLES))
def test_federation_roles_keep_to_their_side(role: str) -> None:
    prefix = f"fedzo.federation.{role}"
    banned = tuple(f"fedzo.federation.{other}" for other in FEDERATION_ROLES[role])
    for name, path in MODULES.items():
        if name == prefix or name.startswith(prefix + "."):
            bad = sorted(m for m in imports_of(path) if m.startswith(banned))
            assert not bad, f"{name} imports {bad}: fedzo.federation.{role} may not import {sorted(banned)}"


def _cycle() -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := dfs(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(GRAPH):
        if start not in state and (found := dfs(start)):
            return found
    return None


def test_no_import_cycles() -> None:
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize(("module", "forbidden"), [
    ("fedzo.records", {"torch", "flwr", "transformers", "ray"}),
    ("fedzo.reporting.rundir", {"torch", "flwr", "transformers", "ray"}),
    ("fedzo.config", {"flwr", "transformers", "peft", "ray"}),
])
def test_light_modules_stay_light(module: str, forbidden: set[str]) -> None:
    code = (f"import sys, {module}\n"
            "print(','.join(sorted({m.split('.')[0] for m in sys.modules})))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.strip().split(","))
    assert not loaded & forbidden, f"importing {module} loads {sorted(loaded & forbidden)}"


def test_modules_and_functions_stay_small() -> None:
    too_long = []
    for name, path in MODULES.items():
        source = path.read_text(encoding="utf-8")
        lines = len(source.splitlines())
        if lines >= 400:
            too_long.append(f"module {name}: {lines} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length >= 60:
                    too_long.append(f"function {name}.{node.name}: {length} lines")
    assert not too_long, "split these: " + "; ".join(too_long)
