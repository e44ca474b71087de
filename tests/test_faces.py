"""The package faces (each ``__init__.py`` with lazy names): what ``__all__`` lists, what the
``TYPE_CHECKING`` block shows type checkers and what the lazy ``__getattr__`` loads are one list,
every name resolves, each thing has one name, and the top-level face carries no test helper."""

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hf_dpsynth"


def _faces() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("__init__.py") if "_LAZY" in p.read_text(encoding="utf-8"))


def _name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).parent.parts)


def _read(path: Path) -> tuple[dict[str, str], list[str], dict[str, str]]:
    """(_LAZY, __all__, {name: module} imported under ``if TYPE_CHECKING:``) of a face, read off its source."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lazy, names, typed = None, None, {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id == "_LAZY":
                lazy = ast.literal_eval(node.value)
            elif node.targets[0].id == "__all__":
                names = ast.literal_eval(node.value)  # a literal list, so that type checkers and linters read it
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom) and not imp.level, ast.unparse(imp)
                typed.update({a.asname or a.name: imp.module for a in imp.names})
    assert lazy is not None and names is not None, path
    return lazy, names, typed


def test_every_package_with_lazy_names_has_a_face():
    names = {_name(p) for p in _faces()}
    assert {"hf_dpsynth", "hf_dpsynth.data", "hf_dpsynth.training", "hf_dpsynth.generation", "hf_dpsynth.evaluation",
            "hf_dpsynth.audit", "hf_dpsynth.hub", "hf_dpsynth.pipeline"} <= names


@pytest.mark.parametrize("path", _faces(), ids=_name)
def test_all_type_checking_and_lazy_names_are_one_list(path):
    lazy, names, typed = _read(path)
    assert len(names) == len(set(names)), f"{path}: __all__ lists a name twice"
    assert set(names) - {"__version__"} == set(lazy), f"{path}: __all__ and _LAZY differ"
    assert typed == lazy, f"{path}: the TYPE_CHECKING block and _LAZY differ: {sorted(set(typed.items()) ^ set(lazy.items()))}"


@pytest.mark.parametrize("path", _faces(), ids=_name)
def test_every_name_resolves_and_each_thing_has_one_name(path):
    lazy, _, _ = _read(path)
    face = importlib.import_module(_name(path))
    assert sorted(lazy) == [n for n in dir(face) if n in lazy]
    things: dict[int, str] = {}
    for name, module in lazy.items():
        thing = getattr(face, name)
        assert thing is getattr(importlib.import_module(module), name)
        if callable(thing):
            assert id(thing) not in things, f"{_name(path)} names one thing twice: {things.get(id(thing))} and {name}"
            things[id(thing)] = name


def test_the_top_level_face_carries_no_test_helper():
    import hf_dpsynth

    assert "tiny_causal_lm" not in hf_dpsynth.__all__ and "tiny_causal_lm" not in dir(hf_dpsynth)
    with pytest.raises(AttributeError):
        hf_dpsynth.tiny_causal_lm  # noqa: B018 - the helper lives in hf_dpsynth.models
