"""The package's import graph: no cycle anywhere in salseg/, counting the imports inside
functions too (a function-level import is how a cycle hides), and no import that points up a
floor (docs/architecture.md, "Floors")."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "salseg"


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """``module -> salseg modules it imports`` (module level, functions, classes; not the
    ``if TYPE_CHECKING:`` blocks, which never run)."""
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        stack = [ast.parse(path.read_text(encoding="utf-8"))]
        while stack:
            node = stack.pop()
            for child in ast.iter_child_nodes(node):
                if (isinstance(child, ast.If) and isinstance(child.test, ast.Name)
                        and child.test.id == "TYPE_CHECKING"):
                    continue
                targets: list[str] = []
                if isinstance(child, ast.Import):
                    targets = [a.name for a in child.names]
                elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                    targets = [child.module, *(f"{child.module}.{a.name}" for a in child.names)]
                graph[name].update(t for t in targets if t in modules and t != name)
                stack.append(child)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_in_salseg():
    graph = import_graph()
    assert "salseg.evaluation.parallel" in graph["salseg.evaluation.model"]  # the graph is read
    assert cycles(graph) == []


# The floors of docs/architecture.md: a room imports rooms on its own floor or below, never above.
FLOORS = [
    {"salseg", "atomic", "config", "quiet"},        # the package's __init__, utilities
    {"models"},                                     # networks, cards, backbones
    {"losses", "metrics", "data"},                  # what training and scoring are made of
    {"zoo", "export"},                              # published weights; ONNX files and metadata
    {"weights"},                                    # one resolve() for whatever names weights
    {"predict"},                                    # the Predictor and its loop
    {"tasks", "training", "evaluation"},            # salseg-train and salseg-eval
    {"serve"},                                      # salseg-serve
    {"cli"},                                        # argument parsing only
]
FLOOR = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}

def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "salseg"


def upward_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(m, t) for m, targets in graph.items() for t in targets
            if FLOOR[_room(t)] > FLOOR[_room(m)]}


def test_every_room_has_a_floor():
    rooms = {_room(m) for m in import_graph()}
    assert rooms == set(FLOOR), "add the new room to FLOORS and to docs/architecture.md"


def test_the_floor_checker_finds_an_upward_import():
    graph = {"salseg.models.x": {"salseg.predict.y"}, "salseg.predict.y": {"salseg.models.x"}}
    assert upward_imports(graph) == {("salseg.models.x", "salseg.predict.y")}


def test_no_import_points_up_a_floor():
    graph = import_graph()
    # a function-level import is read (training -> evaluation inside run_test)
    assert "salseg.evaluation.model" in graph["salseg.training.pipeline"]
    assert upward_imports(graph) == set()
