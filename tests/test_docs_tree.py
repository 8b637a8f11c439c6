"""The documented run-directory tree names every entry the run directory's owner declares."""
import re
from pathlib import Path

from oasis_dcgan import rundir

README = Path(__file__).resolve().parent.parent / "README.md"


def tree_block() -> str:
    text = README.read_text()
    start = text.index("## The run directory")
    block = re.search(r"```\n(RUN_DIR/.*?)```", text[start:], re.S)
    assert block, "README: no RUN_DIR/ tree under 'The run directory'"
    return block.group(1)


def test_readme_tree_names_every_run_directory_entry():
    entries = {v for k, v in vars(rundir).items() if k.isupper() and isinstance(v, str)
               and not k.startswith("REPORT_") and v not in (rundir.NEW, rundir.TRAINING, rundir.STOPPED,
                                                             rundir.FAILED, rundir.FINISHED)}
    named = set(re.findall(r"^  ([.\w-]+)", tree_block(), re.M))
    missing = sorted(entries - named)
    assert not missing, f"README's run-directory tree misses {missing}"
    assert not sorted(named - entries), "the tree names an entry rundir.py does not declare"


def fault_tests() -> set[str]:
    """Every test that carries the `fault` mark, itself or through its module's pytestmark."""
    import ast

    names = set()
    for path in (README.parent / "tests").glob("test_*.py"):
        tree = ast.parse(path.read_text())
        whole = any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
                    and "mark.fault" in ast.unparse(n.value) for n in tree.body)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_") and (
                    whole or any("mark.fault" in ast.unparse(d) for d in node.decorator_list)):
                names.add(node.name)
    return names


def test_every_fault_test_has_its_row_in_the_fault_table():
    text = README.read_text()
    table = text[text.index("### Faults, and what is kept"):]
    table = table[:table.index("\n\n", table.index("| fault |"))]
    named = set(re.findall(r"`(test_\w+)`", table))
    faults = fault_tests()
    assert len(faults) >= 25
    assert not sorted(faults - named), f"fault tests without a row: {sorted(faults - named)}"
    assert not sorted(named - faults), f"rows naming no fault test: {sorted(named - faults)}"
