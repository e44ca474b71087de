"""The house rules of docs/ARCHITECTURE.md, read off the source: every import points down, no circle,
privacy is a leaf without torch, the library knows no command line, modules stay readable."""

import ast
import re
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hf_dpsynth"

#: The floor of each part (a top-level module or subpackage of hf_dpsynth). A module may import its own
#: part and parts on lower floors only; two parts on one floor never import each other.
FLOORS = {
    "_version": 0, "_compat": 0, "_io": 0, "_lazy": 0, "_markdown": 0, "errors": 0, "resources": 0,
    "privacy": 1,
    "data": 2, "models": 2,
    "training": 3, "generation": 3,
    "evaluation": 4,
    "audit": 5,
    "hub": 6,
    "pipeline": 7,
    "cli": 8,
    "__init__": 9,  # the package face: lazy names only
}

#: Modules over MAX_LINES that are still to be split (none left); the set may only shrink.
MAX_LINES = 500
OVERSIZE: set[str] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, *, type_only: bool = True) -> list[tuple[int, str]]:
    """(line, module) of every hf_dpsynth import in ``path``, at any depth (lazy imports included; those
    under ``if TYPE_CHECKING:`` unless ``type_only=False``)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_lines = {line for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                    for line in range(node.lineno, node.end_lineno + 1)}
    found = []
    for node in ast.walk(tree):
        if not type_only and getattr(node, "lineno", None) in typing_lines:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("hf_dpsynth"):
                found += [(node.lineno, _submodule(target, a.name)) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("hf_dpsynth")]
    return found


def _submodule(target: str, name: str) -> str:
    """``from target import name``: the module ``target.name`` when it is one, else ``target``."""
    folder = PACKAGE.parent.joinpath(*target.split("."))
    return f"{target}.{name}" if (folder / f"{name}.py").is_file() or (folder / name).is_dir() else target


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _top_level_imports(path: Path) -> set[str]:
    """Modules imported when ``path`` is imported (module body and its ``if`` blocks, not functions, not
    ``TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(body):
        for node in body:
            if isinstance(node, ast.If):
                if "TYPE_CHECKING" in ast.unparse(node.test):
                    continue
                visit(node.body), visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
            elif isinstance(node, ast.ImportFrom):
                target = node.module or ""
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                if target.startswith("hf_dpsynth"):
                    found.update(_submodule(target, a.name) for a in node.names)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("hf_dpsynth"))

    visit(tree.body)
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_part_has_a_floor():
    parts = {_part(_module_name(p)) for p in SOURCES}
    assert parts <= set(FLOORS), f"parts without a floor in docs/ARCHITECTURE.md: {sorted(parts - set(FLOORS))}"


def test_every_import_points_down():
    upward = []
    for path in SOURCES:
        mine = _part(_module_name(path))
        for line, target in _imports(path):
            theirs = _part(target)
            if theirs != mine and FLOORS.get(theirs, -1) >= FLOORS[mine]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({mine}, floor {FLOORS[mine]}) imports "
                              f"{target} ({theirs}, floor {FLOORS.get(theirs)})")
    assert not upward, "imports that do not point down:\n" + "\n".join(upward)


def test_no_import_circle_between_modules():
    modules = {_module_name(p): p for p in SOURCES}
    graph = {m: {t for t in _top_level_imports(p) if t in modules and t != m} for m, p in modules.items()}
    # A package's face imports its own modules; a module importing its package face is a circle through it.
    seen, stack, cycles = set(), [], []

    def walk(m):
        if m in stack:
            cycles.append(stack[stack.index(m):] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for t in sorted(graph[m]):
            walk(t)
        stack.pop()

    for m in sorted(graph):
        walk(m)
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_lazy_import_circle_between_modules_of_a_part():
    # Lazy (function-level) imports too: two modules of one part that import each other share one job.
    modules = {_module_name(p): p for p in SOURCES}
    edges = {(m, t) for m, p in modules.items() for _, t in _imports(p, type_only=False) if t in modules and t != m}
    both = sorted({tuple(sorted(e)) for e in edges if (e[1], e[0]) in edges})
    assert not both, f"modules that import each other: {both}"


def test_privacy_is_a_leaf_without_torch():
    code = ("import sys, hf_dpsynth.privacy, hf_dpsynth.privacy.ledger, hf_dpsynth.privacy.calibration; "
            "bad = [m for m in ('torch', 'transformers', 'datasets', 'numpy.random') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad and bad != ['numpy.random'] else 0)")
    import subprocess

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("part", ["privacy", "data", "models", "training", "generation", "evaluation", "audit", "hub",
                                  "pipeline"])
def test_the_library_knows_no_command_line(part):
    folder = PACKAGE / part if (PACKAGE / part).is_dir() else PACKAGE / f"{part}.py"
    for path in ([folder] if folder.is_file() else sorted(folder.rglob("*.py"))):
        text = path.read_text(encoding="utf-8")
        assert "import argparse" not in text and "sys.exit(" not in text, path


def test_modules_stay_small_enough_to_read():
    sizes = {str(p.relative_to(PACKAGE.parent)): len(p.read_text(encoding="utf-8").splitlines()) for p in SOURCES}
    over = {name for name, n in sizes.items() if n > MAX_LINES}
    assert over <= OVERSIZE, f"modules over {MAX_LINES} lines: {sorted((n, sizes[n]) for n in over - OVERSIZE)}"
    assert OVERSIZE <= over, f"now under {MAX_LINES} lines: drop them from OVERSIZE: {sorted(OVERSIZE - over)}"


def test_every_privacy_document_a_docstring_cites_is_in_the_repository():
    docs = PACKAGE.parent / "docs"
    rows = set(re.findall(r"^\| (\w+) \|", (docs / "DP_CORRECTNESS.md").read_text(encoding="utf-8"), re.M))
    sections = set(re.findall(r"^## (\d+)\.", (docs / "ALGORITHMS.md").read_text(encoding="utf-8"), re.M))
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        for name in re.findall(r"docs/(\w+\.md)", text):
            assert (docs / name).is_file(), f"{path} cites docs/{name}, which is not in the repository"
        for cited in re.findall(r"DP_CORRECTNESS\.md rows? ([0-9b, and]+)", text):
            for row in re.findall(r"\d+b?", cited):
                assert row in rows, f"{path} cites docs/DP_CORRECTNESS.md row {row}, which it does not have"
        for section in re.findall(r"ALGORITHMS\.md §(\d+)", text):
            assert section in sections, f"{path} cites docs/ALGORITHMS.md §{section}, which it does not have"
    assert (docs / "ARCHITECTURE.md").is_file()
