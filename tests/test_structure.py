"""The package's structure: no import cycle, gin only at the edge (lgd_tf/cli)."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "lgd_tf"
LIBRARY = ("layers", "models", "data", "training", "serving")


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


def test_library_imports_neither_gin_nor_the_edge_nor_a_command():
    commands = {"lgd_tf.train", "lgd_tf.evaluate", "lgd_tf.export", "lgd_tf.predict",
                "lgd_tf.build_tfrecords"}
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
