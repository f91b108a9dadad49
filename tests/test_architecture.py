"""The package layout's rules, checked on the source: no import circles, the engine stands alone,
no private names across sub-packages, the library imports without Hydra, and every module has its
test file."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.support.configs import ROOT

PACKAGE = ROOT / "gpuksvd"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, top_level_only: bool = True) -> list[tuple[str, list[str]]]:
    """(imported module, imported names) of a file; relative imports made absolute."""
    tree = ast.parse(path.read_text())
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.append((base, [alias.name for alias in node.names]))
    return found


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def resolve(target: str, names: list[str]) -> list[str]:
    """The gpuksvd modules an import statement loads (``from pkg import module`` included)."""
    hit = [target] if target in MODULES else []
    hit += [f"{target}.{name}" for name in names if f"{target}.{name}" in MODULES]
    return hit


def test_no_import_circles_between_modules():
    graph = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for target, names in imports(path):
            graph[name].update(other for other in resolve(target, names) if other != name)
    # A package imports its modules (its __init__) and a module imports its package's siblings:
    # only circles through module bodies count, so drop the edges into a package's own __init__.
    for name in graph:
        graph[name] = {other for other in graph[name] if not name.startswith(other + ".")}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for other in sorted(graph[node]):
            if state.get(other) == 1:
                raise AssertionError(f"import circle: {' -> '.join(trail[trail.index(other):] + [other])}")
            if other not in state:
                visit(other, trail + [other])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_the_engine_imports_nothing_of_the_other_sub_packages():
    # Except the leaf module gpuksvd.files: the native kernel is built into its cache folder.
    for name, path in MODULES.items():
        if not name.startswith("gpuksvd.sparse"):
            continue
        for target, names in imports(path, top_level_only=False):
            if target == "gpuksvd.files" or (target == "gpuksvd" and names == ["files"]):
                continue
            assert not target.startswith("gpuksvd.") or target.startswith("gpuksvd.sparse"), (name, target)
            assert target.split(".")[0] not in ("timm", "hydra", "omegaconf", "PIL", "torchvision"), (name, target)


def test_no_private_names_across_sub_packages():
    for name, path in MODULES.items():
        own = ".".join(name.split(".")[:2])  # gpuksvd.<sub-package>
        for target, names in imports(path, top_level_only=False):
            if not target.startswith("gpuksvd") or target.startswith(own):
                continue
            private = [n for n in names if n.startswith("_")] + [p for p in target.split(".") if p.startswith("_")]
            assert not private, f"{name} imports private {private} from {target}"


def test_the_tests_and_benchmarks_import_no_private_names():
    for path in [*(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]:
        for target, names in imports(path, top_level_only=False):
            if target.startswith("gpuksvd"):
                private = [n for n in names if n.startswith("_")] + [p for p in target.split(".") if p.startswith("_")]
                assert not private, f"{path.relative_to(ROOT)} imports private {private} from {target}"


def test_every_module_has_its_test_file():
    # The project promises one test file per module at the mirrored path (gpuksvd/<sub>/<name>.py is
    # tested in tests/<sub>/test_<name>.py): a new module without one fails here, by name.
    missing = []
    for path in sorted(MODULES.values()):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        relative = path.relative_to(PACKAGE)
        test_file = ROOT / "tests" / relative.with_name(f"test_{relative.name}")
        if not test_file.is_file():
            missing.append(f"{test_file.relative_to(ROOT)} (for {path.relative_to(ROOT)})")
    assert not missing, "modules without their test file:\n" + "\n".join(missing)


def test_only_the_run_glue_imports_hydra():
    for name, path in MODULES.items():
        for target, _ in imports(path, top_level_only=False):
            if target.split(".")[0] in ("hydra", "omegaconf"):
                assert name == "gpuksvd.runs.hydra_support", (name, target)


def test_the_library_imports_without_hydra():
    modules = sorted(name for name in MODULES  # __main__ modules run their command when imported
                     if name != "gpuksvd.runs.hydra_support" and not name.endswith("__main__"))
    code = ("import sys\nsys.modules['hydra'] = None\nsys.modules['omegaconf'] = None\n"
            + "".join(f"import {name}\n" for name in modules))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
