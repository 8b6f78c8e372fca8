"""The library's import graph, read with ``ast`` (issue 23): no cycle, no cross-module import of an
underscore name, no module over 800 lines, and the layers in the right order.

Every ``.py`` under ``smu_explain/`` (``study/`` included) is a node. An edge A -> B is any import
statement of A that names B, wherever it is: at module level, inside a function (a lazy import
counts: it runs whenever the function does), under ``if TYPE_CHECKING:``; absolute
(``import smu_explain.x``, ``from smu_explain.x import y``) or relative (``from .x import y``,
``from ..x import y``, ``from . import x``, where ``x`` is the submodule when there is one).
The import of a package's ``__init__`` that Python does before each of its submodules is not
an edge (else every module would sit in a cycle with its package).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "smu_explain"
MAX_LINES = 800

# The layers of docs/ARCHITECTURE.md, bottom to top. A module imports only from its own layer or
# the layers below it (inside a layer: no cycle). Every module of the package is in exactly one
# layer: a new file is placed here (and in the doc's table) or this test fails.
LAYERS: dict[str, tuple[str, ...]] = {
    # plumbing and vocabulary every layer may use (no other module of the package; torch only in precision, seeding)
    "base": ("errors", "io", "names", "limits", "markup", "readable", "palette", "precision", "seeding", "procs", "picking"),
    # music without a model: files -> Piece -> tokens, note classes, datasets of tokens
    "music": ("piece", "musicfile", "scores", "reading", "retiming", "tokenizer_config", "tokenizer", "octuple",
              "noteclasses", "harmony", "counterfactual", "sandbox", "audio", "notation", "corpora", "datasets"),
    # the networks and their folders (a model knows nothing of files; checkpoint.py saves and loads)
    "model": ("relattn", "model", "heads", "weights", "checkpoint", "published"),
    # masking strategies and the training loops
    "training": ("masks", "freeze_book", "masker", "callbacks", "resume", "train_config", "distributed", "trainer",
                 "finetune", "probe"),
    # what a trained model says about a piece, and the no-model rules it is judged against
    "explain": ("windows", "encoder_inputs", "explain", "attribution", "attention", "masker_note", "stored_scores",
                "baselines", "picks", "picks_draw", "picks_null", "verdict"),
    # Plotly figure builders: tables in, figures out
    "figures": ("rollaxes", "pianoroll", "valueroll", "charts"),
    # the reproduction study (smu study)
    "study": ("study",),
    # what people call: the notebook API, the CLI, the run registry, the HTML report, the app's modules
    "front": ("__init__", "notebook", "cli", "cli_setup", "runs", "report", "appstate", "appwidgets", "appwarmup"),
}
LAYER_ORDER = list(LAYERS)
# figure builders compute nothing: they import no model, training or explain module
FIGURES_MAY_NOT_IMPORT = ("model", "training", "explain")
# checkpoint.py may import the model layer (it rebuilds MidiBert and FineTuneModel), not what uses models.
ABOVE_THE_CHECKPOINT = ("notebook", "explain", "baselines", "masker", "trainer", "finetune", "probe", "cli",
                        "study", "app")


def layer_of(module: str) -> str | None:
    """The layer of ``smu_explain.<module>`` (``study.*`` is the study's; the package is ``__init__``)."""
    short = _short(module) if module != "smu_explain" else "__init__"
    head = short.split(".", 1)[0]
    for name, members in LAYERS.items():
        if short in members or head in members:
            return name
    return None


def _short(module: str) -> str:
    return module.split(".", 1)[1] if "." in module else module


def _in(module: str, prefixes: tuple[str, ...]) -> bool:
    """Whether ``smu_explain.<module>`` is one of ``prefixes`` (``study`` covers ``study.*``,
    ``app`` every ``app*`` module: appstate and its splits)."""
    short = _short(module)
    return any(short == p or short.startswith(p + ".") or (p == "app" and short.startswith("app"))
               for p in prefixes)


# ----------------------------------------------------------------------------- the graph builder

@dataclass
class ImportGraph:
    package: str
    modules: dict[str, Path]
    # edges[a][b] = the lines of a that import b
    edges: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    # (importer, owner, name, line) for each `from owner import name` where name is not a submodule
    names: list[tuple[str, str, str, int]] = field(default_factory=list)
    # (importer, owner, name, line) for each `alias._name` where alias is a module of the package
    attributes: list[tuple[str, str, str, int]] = field(default_factory=list)
    # external[a] = the top-level names of the other packages a imports (torch, streamlit, ...)
    external: dict[str, set[str]] = field(default_factory=dict)

    def rel(self, module: str) -> Path:
        """The file of ``module``, relative to the folder that holds the package."""
        return self.modules[module].relative_to(self.modules[self.package].parent.parent)

    def where(self, a: str, b: str) -> str:
        """Where ``a`` first imports ``b``: ``file:line``."""
        return f"{self.rel(a)}:{self.edges[a][b][0]}"


def build_graph(package_dir: Path) -> ImportGraph:
    """The import graph of the package in ``package_dir`` (module docstring)."""
    package_dir = Path(package_dir)
    package = package_dir.name
    modules: dict[str, Path] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    g = ImportGraph(package, modules, {m: {} for m in modules}, external={m: set() for m in modules})

    for m, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        aliases: dict[str, str] = {}  # local name -> module of the package it is bound to

        def edge(target: str, line: int, m: str = m) -> None:
            if target != m:
                g.edges[m].setdefault(target, []).append(line)

        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name == package or a.name.startswith(package + "."):
                        target = a.name
                        while target not in modules:  # a name that is no module: its owner
                            target = target.rsplit(".", 1)[0]
                        edge(target, node.lineno)
                        if a.asname:
                            aliases[a.asname] = target
                    else:
                        g.external[m].add(a.name.split(".")[0])
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = m.split(".") if path.name == "__init__.py" else m.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    base_name = ".".join(base + ([node.module] if node.module else []))
                else:
                    base_name = node.module or ""
                    if base_name != package and not base_name.startswith(package + "."):
                        g.external[m].add(base_name.split(".")[0])
                        continue
                for a in node.names:
                    sub = f"{base_name}.{a.name}"
                    if sub in modules:  # `from . import x`: the submodule x
                        edge(sub, node.lineno)
                        aliases[a.asname or a.name] = sub
                        continue
                    owner = base_name
                    while owner not in modules and "." in owner:
                        owner = owner.rsplit(".", 1)[0]
                    if owner in modules:
                        edge(owner, node.lineno)
                        g.names.append((m, owner, a.name, node.lineno))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases):
                g.attributes.append((m, aliases[node.value.id], node.attr, node.lineno))
    return g


def import_cycles(edges: dict[str, dict[str, list[int]]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted: every module of
    one imports every other, directly or through others, so each is one or more import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, {})):
            if w not in edges:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(components)


def shortest_cycle(edges: dict[str, dict[str, list[int]]], component: list[str]) -> list[str]:
    """A shortest cycle through the first module of ``component`` (breadth-first inside it),
    as [start, ..., start]."""
    start, inside = component[0], set(component)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier and start not in came_from:
        nxt = []
        for v in frontier:
            for w in sorted(edges[v]):
                if w in inside and w not in came_from:
                    came_from[w] = v
                    nxt.append(w)
        frontier = nxt
    path, v = [start], came_from[start]
    while v != start:
        path.append(v)
        v = came_from[v]
    return [start] + path[:0:-1] + [start]


def underscore_imports(g: ImportGraph) -> list[str]:
    """``from m import _x`` and ``m._x`` (``m`` a module of the package) in another module than m."""
    found = []
    for m, owner, name, line in g.names + g.attributes:
        if owner != m and name.startswith("_") and not name.startswith("__"):
            found.append(f"{g.rel(m)}:{line} uses {owner}.{name}")
    return sorted(set(found))


def closure(g: ImportGraph, start: str) -> dict[str, str]:
    """Every module ``start`` imports, directly or through others: {module: the module importing it}."""
    seen: dict[str, str] = {}
    todo = [start]
    while todo:
        v = todo.pop()
        for w in g.edges[v]:
            if w not in seen and w != start:
                seen[w] = v
                todo.append(w)
    return seen


def _chain(g: ImportGraph, start: str, target: str, via: dict[str, str]) -> str:
    path = [target]
    while path[-1] != start:
        path.append(via.get(path[-1], start))
    path.reverse()
    return " -> ".join(f"{_short(a)} ({g.where(a, b)})" for a, b in zip(path, path[1:], strict=False)) + f" -> {_short(target)}"


@pytest.fixture(scope="module")
def graph() -> ImportGraph:
    return build_graph(PACKAGE)


# ----------------------------------------------------------------------------- the rules

def test_no_import_cycle(graph):
    components = import_cycles(graph.edges)
    report = []
    for comp in components:
        inside = set(comp)
        report.append(f"{len(comp)} modules import each other: {', '.join(_short(v) for v in comp)}")
        report.append("  e.g. " + " -> ".join(_short(v) for v in shortest_cycle(graph.edges, comp)))
        report += [f"    {_short(a)} -> {_short(b)}  ({graph.where(a, b)})"
                   for a in comp for b in sorted(graph.edges[a]) if b in inside]
    assert not components, "import cycles among smu_explain's modules (imports inside functions count):\n" \
                           + "\n".join(report)


def test_no_cross_module_import_of_an_underscore_name(graph):
    found = underscore_imports(graph)
    assert not found, ("names starting with _ are private to their module; make them public (and update "
                       "their users) or keep them where they are used:\n" + "\n".join(found))


def test_no_module_over_800_lines(graph):
    long = sorted(f"{p.relative_to(ROOT)}: {n} lines" for p in graph.modules.values()
                  if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES)
    assert not long, f"modules over {MAX_LINES} lines (split them, one concept each):\n" + "\n".join(long)


def test_every_module_has_a_layer(graph):
    missing = sorted(_short(m) for m in graph.modules if layer_of(m) is None)
    assert not missing, ("modules in no layer: place each in LAYERS (tests/test_architecture.py) and in "
                         f"docs/ARCHITECTURE.md's table: {missing}")
    listed = [m for members in LAYERS.values() for m in members]
    assert len(listed) == len(set(listed)), "a module is listed in two layers"
    short = {_short(m) if m != "smu_explain" else "__init__" for m in graph.modules}
    gone = sorted(m for m in listed if m not in short and not any(s.startswith(m + ".") for s in short))
    assert not gone, f"LAYERS lists modules that do not exist: {gone}"


def test_imports_point_down_the_layers(graph):
    bad = []
    for a in graph.modules:
        for b in graph.edges[a]:
            la, lb = layer_of(a), layer_of(b)
            if LAYER_ORDER.index(lb) > LAYER_ORDER.index(la):
                bad.append(f"{_short(a)} ({la}) -> {_short(b)} ({lb})  [{graph.where(a, b)}]")
    assert not bad, "imports go to the same layer or a lower one (docs/ARCHITECTURE.md):\n" + "\n".join(sorted(bad))


def test_figures_compute_nothing(graph):
    bad = sorted(f"{_short(a)} -> {_short(b)}  [{graph.where(a, b)}]" for a in graph.modules
                 if layer_of(a) == "figures" for b in graph.edges[a] if layer_of(b) in FIGURES_MAY_NOT_IMPORT)
    assert not bad, "figure builders take tables; they import no model, training or explain module:\n" + \
        "\n".join(bad)


def test_the_layer_check_can_fail():
    """layer_of places modules as the table says (a table that placed everything in one layer
    would pass test_imports_point_down_the_layers whatever the imports)."""
    assert layer_of("smu_explain.model") == "model" and layer_of("smu_explain.cli") == "front"
    assert layer_of("smu_explain.study.runner") == "study" and layer_of("smu_explain") == "front"
    assert LAYER_ORDER.index("model") < LAYER_ORDER.index("explain") < LAYER_ORDER.index("front")
    assert layer_of("smu_explain.no_such_module") is None


def test_checkpoint_imports_the_model_layer_only(graph):
    start = "smu_explain.checkpoint"
    via = closure(graph, start)
    bad = [_chain(graph, start, t, via) for t in sorted(via) if _in(t, ABOVE_THE_CHECKPOINT)]
    assert not bad, "checkpoint.py may import the model and the fine-tuning heads, not explain, training, " \
                    "the CLI or the app (the notebook API is notebook.py's):\n" + "\n".join(bad)
    assert {"smu_explain.model", "smu_explain.heads"} <= set(via)  # it rebuilds both kinds of model


def test_only_app_modules_import_streamlit(graph):
    bad = sorted(_short(m) for m, ext in graph.external.items() if "streamlit" in ext and not _in(m, ("app",)))
    assert not bad, f"the library never imports streamlit (only appstate and its app* siblings): {bad}"
    bad = sorted(f"{_short(m)} -> {_short(t)} ({graph.where(m, t)})" for m in graph.modules for t in graph.edges[m]
                 if _in(t, ("app",)) and not _in(m, ("app",)))
    assert not bad, "the library never imports the app layer:\n" + "\n".join(bad)


def test_nothing_imports_the_cli(graph):
    bad = sorted(f"{_short(m)} ({graph.where(m, 'smu_explain.cli')})" for m in graph.modules
                 if "smu_explain.cli" in graph.edges[m] and m != "smu_explain.__main__")
    assert not bad, "cli.py is the top of the library; nothing but __main__ imports it:\n" + "\n".join(bad)


def test_notebook_api_is_the_top(graph):
    users = sorted(_short(m) for m in graph.modules if "smu_explain.notebook" in graph.edges[m])
    assert users == ["smu_explain"], f"only the package's load/piano_roll call notebook.py, not {users}"


# ----------------------------------------------------------------------------- the builder itself

def test_the_graph_sees_lazy_relative_and_package_imports(graph):
    """The builder finds the edges the rules depend on (a builder that found none would pass them all)."""
    e = graph.edges
    assert "smu_explain.relattn" in e["smu_explain.model"]  # `from . import relattn`, module level
    assert "smu_explain.heads" in e["smu_explain.checkpoint"]  # inside a function
    assert "smu_explain.notebook" in e["smu_explain"]  # the package's __init__, inside a function
    assert any(t.startswith("smu_explain.study.") for t in e["smu_explain.study"])  # a sub-package's __init__
    assert any("smu_explain.model" in e[m] for m in e if m.startswith("smu_explain.study."))  # `from ..model`
    assert {"torch"} <= graph.external["smu_explain.model"]
    assert len(graph.modules) > 30 and sum(map(len, e.values())) > 100


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root / "pkg"


def test_a_two_module_cycle_is_found(tmp_path):
    pkg = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from . import b\n",
        "pkg/b.py": "def f():\n    from .a import g  # lazy: still a cycle\n    return g\n",
        "pkg/c.py": "from pkg.a import b\n",  # imports a: not part of the cycle
    })
    g = build_graph(pkg)
    assert import_cycles(g.edges) == [["pkg.a", "pkg.b"]]
    assert shortest_cycle(g.edges, ["pkg.a", "pkg.b"]) == ["pkg.a", "pkg.b", "pkg.a"]
    assert g.edges["pkg.b"] == {"pkg.a": [2]} and set(g.edges["pkg.c"]) == {"pkg.a"}
    (pkg / "b.py").write_text("def f():\n    return 1\n")
    assert import_cycles(build_graph(pkg).edges) == []


def test_a_longer_cycle_through_a_subpackage_is_found(tmp_path):
    pkg = _write(tmp_path, {
        "pkg/__init__.py": "from .sub import d\n",
        "pkg/a.py": "import pkg.sub.d as D\n\nX = D._hidden\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/d.py": "_hidden = 1\n\ndef f():\n    from ..e import y\n",
        "pkg/e.py": "from pkg import a\ny = 2\nfrom .sub.d import _hidden, f\n",
    })
    g = build_graph(pkg)
    assert import_cycles(g.edges) == [["pkg.a", "pkg.e", "pkg.sub.d"]]
    assert shortest_cycle(g.edges, ["pkg.a", "pkg.e", "pkg.sub.d"]) == ["pkg.a", "pkg.sub.d", "pkg.e", "pkg.a"]
    assert set(g.edges["pkg"]) == {"pkg.sub.d"}
    names = {(m, owner, name) for m, owner, name, _ in g.names + g.attributes}
    assert {("pkg.a", "pkg.sub.d", "_hidden"), ("pkg.e", "pkg.sub.d", "_hidden")} <= names
    assert len(underscore_imports(g)) == 2


def test_the_doc_lists_the_same_layers():
    """docs/ARCHITECTURE.md's table per layer names exactly LAYERS' modules (the doc cannot drift)."""
    import re

    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    doc: dict[str, set[str]] = {}
    layer = None
    for line in text.splitlines():
        if m := re.match(r"### (\w+): ", line):
            layer = m.group(1) if m.group(1) in LAYERS else None
            if layer:
                doc[layer] = set()
        elif line.startswith("## "):
            layer = None
        elif layer and (m := re.match(r"\| `smu_explain/(\w+)\.py` \|", line)):
            doc[layer].add(m.group(1))
    assert set(doc) == set(LAYERS), f"layers in the doc {sorted(doc)} vs the test {list(LAYERS)}"
    for name, members in LAYERS.items():
        if name == "study":  # its own table of the package's modules
            continue
        assert doc[name] == set(members), (name, sorted(doc[name] ^ set(members)))


def test_the_base_layer_imports_nothing_of_the_package(graph):
    bad = sorted(f"{_short(a)} -> {_short(b)}  [{graph.where(a, b)}]" for a in graph.modules
                 if layer_of(a) == "base" for b in graph.edges[a])
    assert not bad, "base modules are what every layer may import; they import no module of the package:\n" + \
        "\n".join(bad)


def test_no_test_imports_a_page():
    """A page of the app is a script: importing it runs it outside a session, and what it leaves
    open there (a form) leaks into every AppTest after it. Tests drive pages with AppTest only."""
    import re

    tests = Path(__file__).resolve().parent
    found = [f.name for f in sorted(tests.glob("*.py"))
             if re.search(r"^\s*(from\s+app_pages\b|import\s+app_pages\b)", f.read_text(), re.M)]
    assert found == []
