"""The package's structure: its floors, no import cycle, gin only at the edge (lgd_tf/cli)."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "lgd_tf"
LIBRARY = ("layers", "models", "data", "runs", "training", "serving", "inference", "analysis")
COMMANDS = ("lgd_tf.train", "lgd_tf.evaluate", "lgd_tf.export", "lgd_tf.predict",
            "lgd_tf.explain", "lgd_tf.build_tfrecords")
# From the top: a module imports only modules of its own floor or of the floors below it
# (docs/architecture.md). The package itself (lgd_tf/__init__.py, which registers the Keras
# classes of layers and models) stands outside the floors.
FLOORS = (
    ("commands", COMMANDS),
    ("cli", ("lgd_tf.cli",)),
    ("inference / analysis / export", ("lgd_tf.inference", "lgd_tf.analysis", "lgd_tf.serving")),
    ("training", ("lgd_tf.training",)),
    ("run folder / models / data", ("lgd_tf.runs", "lgd_tf.models", "lgd_tf.data")),
    ("layers", ("lgd_tf.layers",)),
)


def _modules():
    """{dotted module name: path} of every lgd_tf module (packages as their __init__)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(path, modules):
    """Every lgd_tf module imported anywhere in the file (module and function level)."""
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from a import b`: b is a module, or a name defined in module a.
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules
                     else node.module for alias in node.names]
        else:
            continue
        targets.update(n for n in names if n in modules)
    return targets


def _graph():
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def _cycle(graph):
    """One import cycle as a list of modules, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_cycle_finder_finds_a_planted_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_in_lgd_tf():
    graph = _graph()
    assert "lgd_tf.training.loop" in graph and "lgd_tf.cli.configs" in graph
    assert "lgd_tf.training.loop" in graph["lgd_tf.training.two_stage"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def _floor(module):
    """The floor's index (0: the top) of a module, None for the package itself."""
    for index, (_, prefixes) in enumerate(FLOORS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    return None


def _upward_imports(graph):
    """"a (floor) imports b (higher floor)" for every import of a module on a higher floor."""
    found = []
    for name, targets in sorted(graph.items()):
        for target in sorted(targets):
            if None not in (_floor(name), _floor(target)) and _floor(target) < _floor(name):
                found.append(f"{name} ({FLOORS[_floor(name)][0]}) imports {target} "
                             f"({FLOORS[_floor(target)][0]})")
    return found


def test_every_module_stands_on_a_floor():
    assert [name for name in _modules() if _floor(name) is None] == ["lgd_tf"]


def test_imports_only_go_down_the_floors():
    """Imports inside functions count (`_imports` walks the whole tree)."""
    graph = _graph()
    assert _upward_imports(graph) == []
    # Training imports neither inference nor analysis (nor export).
    training = {t for n, ts in graph.items() if n.startswith("lgd_tf.training") for t in ts}
    assert not {t for t in training if t.split(".")[1] in ("inference", "analysis", "serving")}
    # The check sees a planted import up the floors, and allows one on the same floor.
    planted = {"lgd_tf.training.loop": {"lgd_tf.inference.predict", "lgd_tf.training.metrics"},
               "lgd_tf.layers.heads": {"lgd_tf.layers.lgd_block"}}
    assert _upward_imports(planted) == [
        "lgd_tf.training.loop (training) imports lgd_tf.inference.predict "
        "(inference / analysis / export)"]
    # A function-level import is an import.
    assert "lgd_tf.serving.spec" in _imports(
        PACKAGE / "analysis" / "explain.py", _modules())


def test_library_imports_neither_gin_nor_the_edge_nor_a_command():
    commands = set(COMMANDS)
    graph = _graph()
    offenders = []
    for name, path in _modules().items():
        if name.split(".")[1:2] and name.split(".")[1] in LIBRARY:
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import) and any(
                        a.name.split(".")[0] == "gin" for a in node.names):
                    offenders.append(f"{name} imports gin")
                if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == (
                        "gin"):
                    offenders.append(f"{name} imports from gin")
            bad = {t for t in graph[name] if t in commands or t.startswith("lgd_tf.cli")}
            offenders += [f"{name} imports {t}" for t in sorted(bad)]
    assert not offenders, offenders
    # The edge does import gin (the check above would see it).
    assert "import gin" in (PACKAGE / "cli" / "configs.py").read_text()


def _gin_imports(tree):
    """Lines of every import of gin in a parsed module, at any level (inside functions too)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [node.lineno for a in node.names if a.name.split(".")[0] == "gin"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (
                node.module or "").split(".")[0] == "gin":
            found.append(node.lineno)
    return found


def test_no_module_outside_the_edge_imports_gin():
    """Every module of lgd_tf outside lgd_tf/cli, the command modules included, and imports
    inside functions too: the configuration stays at the edge."""
    offenders = []
    for name, path in _modules().items():
        if name == "lgd_tf.cli" or name.startswith("lgd_tf.cli."):
            continue
        offenders += [f"{name}:{line}" for line in _gin_imports(ast.parse(path.read_text()))]
    assert not offenders, offenders
    # The finder sees an import inside a function.
    planted = ast.parse("def f():\n    import gin.config\n    from gin import bind\n")
    assert _gin_imports(planted) == [2, 3]


# The run folder's file names: written as literals in lgd_tf.runs.run_folder only, but for
# the class names file, which data folders and exports hold too: its name and its one reader
# live in the TF-free lgd_io.class_names (the data build's driver writes it). Every other module
# takes them from there (run_folder.RUN_RECORD, stage_file(), class_names.path_in(), ...).
RUN_FILES = ("run.json", "class_names.txt", "operative_config.gin", "eval_results.json",
             "confusion_matrix.csv", "confusion_matrix.png", "eval_predictions.csv",
             "eval_scores.npz", "stage1.keras", "stage2.keras")
RUN_FILES_OWNER = "lgd_tf.runs.run_folder"
CLASS_NAMES_OWNER = "lgd_io.class_names"
LEAN = PACKAGE.parent / "lgd_io"


def _lean_modules():
    """{dotted module name: path} of every lgd_io module."""
    return {".".join(p.relative_to(LEAN.parent).with_suffix("").parts): p
            for p in LEAN.rglob("*.py")}


def _docstrings(tree):
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(
        n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    return {id(n.body[0].value) for n in nodes if n.body and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)}


def _file_name_literals(tree):
    """The run-folder file names found in the module's string literals (f-string parts
    included; docstrings, which only document, left out), and ".lock" as a whole literal."""
    docs = _docstrings(tree)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                id(node) not in docs):
            found |= {name for name in RUN_FILES if name in node.value}
            if node.value == ".lock":
                found.add(".lock")
    return found


def test_the_run_folder_file_names_are_spelled_in_one_module():
    holders = {}
    for name, path in {**_modules(), **_lean_modules()}.items():
        found = _file_name_literals(ast.parse(path.read_text()))
        if found:
            holders[name] = found
    # The owner spells every name but the stage files (`stage_file(stage)` builds those) and
    # the class names file.
    assert holders.pop(RUN_FILES_OWNER) == set(RUN_FILES) - {
        "stage1.keras", "stage2.keras", "class_names.txt"} | {".lock"}
    assert holders.pop(CLASS_NAMES_OWNER) == {"class_names.txt"}
    # lgd_io.files' folder lock takes the lock's name as an argument, default ".lock".
    assert holders.pop("lgd_io.files", {".lock"}) == {".lock"}
    assert not holders, holders
    # The finder sees a name inside a message and an f-string, not in a docstring.
    planted = ast.parse('"""Writes run.json."""\nx = f"{d}/eval_scores.npz"\n'
                        'def f():\n    raise ValueError("no class_names.txt here")\n')
    assert _file_name_literals(planted) == {"eval_scores.npz", "class_names.txt"}


def test_every_folder_of_modules_is_a_regular_package():
    """setuptools.find_packages ships only folders with an __init__.py: a folder of modules
    without one imports from a checkout (as a namespace package) but is missing from the
    wheel."""
    folders = {p.parent for root in (PACKAGE, LEAN) for p in root.rglob("*.py")
               if "__pycache__" not in p.parts}
    assert PACKAGE / "runs" in folders
    assert sorted(str(f) for f in folders if not (f / "__init__.py").is_file()) == []
