"""The house rules, checked on the source: layers, who may know Slurm and Horovod, function size."""

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import REPO

PKG = REPO / "oasis_dcgan"


# Lower layers never import higher ones: base < prep < training < post < launch < cli/demo.
LAYERS = {"prep": 1, "training": 2, "post": 3, "launch": 4, "cli": 5, "demo": 5}


MAX_FUNCTION_LINES = 80


MAX_METHODS = 20          # a class with more does several things: split it by concern


MAX_TRAINER_LINES = 300   # the Trainer keeps the training; set-up, outputs, saving and resume sit beside it


# Where an import inside a function defers something: the launch layer imports World from
# distributed.py and must not pay for TensorFlow or Horovod.
DEFERRED_IMPORTS = {"distributed.py"}


# What the config's declarations offer as choices: the registries of layouts and executors
# (data.layout, cluster.executor) and the dataset format's splits (metrics.split). config.py, at
# the base, may import these, so they never import the config (the cycle check holds them to it).
REGISTRIES = {"oasis_dcgan.prep.layouts", "oasis_dcgan.launch.executors", "oasis_dcgan.prep.manifest"}


def modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def imports(module: str, path: Path) -> set[str]:
    """Every oasis_dcgan module this one imports, at module level or inside functions."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    known = modules()
    return {m for m in found if m in known and m != module}


def test_no_module_imports_a_layer_above_it():
    bad = [f"{m} imports {i}" for m, p in modules().items() for i in imports(m, p) if layer(i) > layer(m)
           and not (m == "oasis_dcgan.config" and i in REGISTRIES)]
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    graph = {m: imports(m, p) for m, p in modules().items()}
    state: dict = {}

    def visit(m, stack):
        state[m] = "open"
        for n in graph[m]:
            if n.startswith(m + "."):
                continue  # a package importing its own submodule is not a cycle
            if state.get(n) == "open":
                pytest.fail("import cycle: " + " -> ".join(stack + [m, n]))
            if n not in state:
                visit(n, stack + [m])
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m, [])


@pytest.mark.parametrize("pattern, allowed", [
    (r"SLURM_|import submitit|from submitit", "oasis_dcgan/launch/"),
    (r"import horovod|from horovod", "oasis_dcgan/training/distributed.py"),
])
def test_only_one_place_knows_the_scheduler_and_horovod(pattern, allowed):
    hits = [f"{p.relative_to(PKG.parent)}:{i}" for p in PKG.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(pattern, line)]
    assert hits, f"nothing matches {pattern!r}: the check has gone stale"
    assert all(h.startswith(allowed) for h in hits), hits


def test_no_function_is_longer_than_a_screen():
    long = []
    for p in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{p.relative_to(PKG.parent)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long


def test_the_code_cites_nothing_outside_the_repository():
    hits = [str(p.relative_to(PKG.parent)) for p in PKG.rglob("*.py") if "../shared" in p.read_text()]
    assert not hits, hits


def _run_dir_names() -> tuple[set[str], set[str]]:
    """rundir's file names (with a dot) and folder names, read from its module-level constants."""
    from oasis_dcgan import rundir

    names = {v for k, v in vars(rundir).items() if k.isupper() and isinstance(v, str) and k != "NEW"}
    names -= {rundir.TRAINING, rundir.STOPPED, rundir.FAILED, rundir.FINISHED}
    return {n for n in names if "." in n}, {n for n in names if "." not in n}


def test_only_rundir_spells_a_run_directory_name():
    """A file name of the run directory as a literal anywhere but rundir.py, or a folder name
    joined onto a path (`x / "samples"`), is a second owner of it."""
    files, folders = _run_dir_names()
    assert {"stats.jsonl", "options.json", "generator.keras", "state.json"} <= files and "samples" in folders
    bad = []
    for module, path in modules().items():
        if module == "oasis_dcgan.rundir":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in files:
                bad.append(f"{path.name}:{node.lineno} {node.value!r}")
            elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) \
                    and isinstance(node.right, ast.Constant) and node.right.value in folders \
                    and ".parents[" not in ast.unparse(node.left):  # the repository's own slurm/, not a run's
                bad.append(f"{path.name}:{node.lineno} / {node.right.value!r}")
    assert not bad, "\n".join(bad)


def test_the_training_package_is_split_by_concern():
    training = PKG / "training"
    assert len((training / "trainer.py").read_text().splitlines()) <= MAX_TRAINER_LINES
    crowded, late = [], []
    for path in sorted(training.glob("*.py")):
        tree = ast.parse(path.read_text())
        crowded += [f"{path.name}:{c.name}" for c in tree.body if isinstance(c, ast.ClassDef)
                    and sum(isinstance(b, ast.FunctionDef) for b in c.body) > MAX_METHODS]
        if path.name in DEFERRED_IMPORTS:
            continue
        late += [f"{path.name}:{f.name}" for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)
                 and any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(f))]
    assert not crowded, f"classes of more than {MAX_METHODS} methods: {crowded}"
    assert not late, f"imports inside functions that defer nothing (the module imports TensorFlow anyway): {late}"
