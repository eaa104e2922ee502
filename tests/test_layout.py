"""The package's structure: no import cycle (counting imports inside functions), layers import downward.

Read from the source with ``ast``, so an import hidden in a function counts like one at the top:
``workflow`` may import the integration layer (the top-level modules, ``data``), which may import
models and layers, never the other way round.
"""
import ast
import os

PACKAGE = "recbole_linear"
ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), PACKAGE)


def package_modules():
    """{module name: path} of every module of the package."""
    modules = {}
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, os.path.dirname(ROOT))[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                modules[".".join(parts)] = path
    return modules


def imports_of(path, modules):
    """The package's modules imported anywhere in the file (a name imported from a package that
    is a module of its own counts as that module)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                     for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in modules}
    return found


def import_graph():
    modules = package_modules()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def cycles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


# the two ways a model reaches up, both so that RecBole's own entry points work for it: its
# ``__init__`` fills the plugin's defaults into a config RecBole built (config.fill_model_defaults),
# and the model package registers its classes with RecBole's name lookup (registry.register_model)
ALLOWED_UPWARD = {"recbole_linear.config": "recbole_linear.model.", "recbole_linear.registry": "recbole_linear.model"}


def layer(module):
    parts = module.split(".")
    if module == "recbole_linear.errors":
        return 0  # every layer raises the plugin's one-line errors
    if len(parts) > 1 and parts[1] == "workflow":
        return 3
    if len(parts) > 1 and parts[1] in ("model", "layers"):
        return 1
    return 2  # the integration layer: top-level modules and data/


def test_no_import_cycle_counting_imports_inside_functions():
    assert cycles(import_graph()) == []


def test_the_checker_finds_a_cycle_hidden_in_a_function():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_layers_import_downward():
    upward = [
        (source, target)
        for source, targets in import_graph().items()
        for target in targets
        if layer(target) > layer(source) and source != PACKAGE
        and not source.startswith(ALLOWED_UPWARD.get(target, "\0"))
    ]
    assert upward == []


def test_no_module_is_over_400_lines():
    long = {name: n for name, path in package_modules().items() if (n := sum(1 for _ in open(path))) > 400}
    assert long == {}
