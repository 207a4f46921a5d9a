"""Architecture rules checked on the source text alone (fast; no processes, nothing imported from gnnpipe).

- Every ``DESIGN §n`` a module cites names a section of ``docs/DESIGN.md`` (headings ``## §n Title``).
- Every module under ``gnnpipe/`` has its line in the module map, DESIGN §8.
- The ``gnnpipe`` modules import each other without a cycle: module-level and function-local imports alike
  (a local import hides a cycle from Python at import time, not from the reader).
- No module is longer than 350 lines (STYLE.md: small modules, one job each).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "gnnpipe"
DESIGN = REPO / "docs" / "DESIGN.md"
MAX_LINES = 350

_HEADING = re.compile(r"^## §(\d+) \S", re.MULTILINE)
_REF = re.compile(r"§(\d+)")


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under gnnpipe/ (a package is its ``__init__``)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _design_sections() -> dict[int, str]:
    """Section number -> the text of that section of docs/DESIGN.md."""
    text = DESIGN.read_text(encoding="utf-8")
    heads = list(_HEADING.finditer(text))
    return {
        int(m.group(1)): text[m.start() : heads[i + 1].start() if i + 1 < len(heads) else len(text)]
        for i, m in enumerate(heads)
    }


# ---------------------------------------------------------------------------------------------- the design doc
def test_design_sections_are_numbered_one_to_n():
    numbers = [int(m.group(1)) for m in _HEADING.finditer(DESIGN.read_text(encoding="utf-8"))]
    assert numbers == list(range(1, len(numbers) + 1)), f"docs/DESIGN.md headings '## §n' run {numbers}"


def test_every_section_reference_in_the_code_exists():
    sections = _design_sections()
    missing = []
    for path in _modules().values():
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            missing += [
                f"{path.relative_to(REPO)}:{lineno} cites §{n}" for n in _REF.findall(line) if int(n) not in sections
            ]
    assert not missing, f"sections not in docs/DESIGN.md (it has §{min(sections)}-§{max(sections)}):\n  " + "\n  ".join(
        missing
    )


def test_module_map_names_every_module():
    module_map = _design_sections()[8]
    absent = [
        str(path.relative_to(PACKAGE))
        for path in _modules().values()
        if path.name != "__init__.py" and str(path.relative_to(PACKAGE)) not in module_map
    ]
    assert not absent, "modules without a line in the module map (docs/DESIGN.md §8): " + ", ".join(absent)


# ---------------------------------------------------------------------------------------------- imports
def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of dotted ``name`` that is a gnnpipe module (None: not ours)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The gnnpipe modules ``module`` imports, anywhere in its body.

    ``from P import x`` names module ``P.x`` when there is one, else ``P`` itself. Importing a module also runs
    the ``__init__`` of every package above it; that counts as an edge to the package unless the importer is
    inside it (a package importing its own submodules is the normal pattern, not a cycle).
    """
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = _package_of(module, path).split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names] or [base]
        else:
            continue
        for name in names:
            target = _resolve(name, modules)
            if target is None or target == module:
                continue
            targets.add(target)
            parts = target.split(".")
            for i in range(1, len(parts)):
                package = ".".join(parts[:i])
                if package in modules and not module.startswith(package + "."):
                    targets.add(package)
    targets.discard(module)
    return targets


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle ``[a, b, ..., a]`` of ``graph`` (depth-first, deterministic), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_find_cycle_reports_the_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"b"}}) == ["b", "c", "b"]


def test_no_import_cycle_among_gnnpipe_modules():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert sum(map(len, graph.values())) > len(modules) // 2, "the import graph is implausibly sparse"
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# ---------------------------------------------------------------------------------------------- size
def test_no_module_above_max_lines():
    long = {
        str(path.relative_to(REPO)): n
        for path in _modules().values()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules above {MAX_LINES} lines (split them by responsibility): " + ", ".join(
        f"{p} ({n} lines)" for p, n in sorted(long.items(), key=lambda kv: -kv[1])
    )
