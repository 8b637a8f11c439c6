"""The docs stay true to the code: the README's tree names every module, docs/resume.md's tree
every run-directory entry and its fault table every fault test, and the README stays short."""

import ast
import re

from oasis_dcgan import rundir

from tests.conftest import REPO

README = REPO / "README.md"


DOCS = REPO / "docs"


def code_block(text: str, after: str, first_line: str) -> str:
    start = text.index(after)
    block = re.search(rf"```\n({re.escape(first_line)}.*?)```", text[start:], re.S)
    assert block, f"no code block starting {first_line!r} under {after!r}"
    return block.group(1)


def test_readme_is_short_and_opens_with_the_two_commands():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines"
    first_screen = "\n".join(lines[:40])
    assert "make demo" in first_screen and "make test" in first_screen


def test_readme_tree_names_every_module():
    tree = code_block(README.read_text(), "## Layout", "jobs/")
    # Each line of the tree: indent, a name, then its description. A folder line ends in "/".
    stack, named = [], set()
    for line in tree.splitlines():
        m = re.match(r"^( *)([\w.]+/?)\s", line + " ")
        if not m:
            continue
        depth = len(m.group(1)) // 2
        stack[depth:] = [m.group(2).rstrip("/")]
        if m.group(2).endswith(".py"):
            named.add("/".join(stack))
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "oasis_dcgan").rglob("*.py")
               if p.name != "__init__.py"}
    assert not sorted(modules - named), f"README's tree misses {sorted(modules - named)}"
    assert not sorted(named - modules), f"README's tree names modules that do not exist: {sorted(named - modules)}"


def test_readme_links_every_docs_page():
    text = README.read_text()
    pages = {p.name for p in DOCS.glob("*.md")}
    linked = set(re.findall(r"\(docs/([\w-]+\.md)\)", text))
    assert {"data.md", "cluster.md", "resume.md", "metrics.md", "recipes.md", "performance.md"} <= pages
    assert pages == linked, f"docs pages not linked from the README: {sorted(pages - linked)}; " \
                            f"links to missing pages: {sorted(linked - pages)}"


def test_run_directory_tree_names_every_entry():
    tree = code_block((DOCS / "resume.md").read_text(), "## The run directory", "RUN_DIR/")
    entries = {v for k, v in vars(rundir).items() if k.isupper() and isinstance(v, str)
               and not k.startswith(("REPORT_", "FIGURE_", "SWEEP_"))
               and v not in (rundir.NEW, rundir.TRAINING, rundir.STOPPED, rundir.FAILED, rundir.FINISHED)}
    named = set(re.findall(r"^  ([.\w-]+)", tree, re.M))
    missing = sorted(entries - named)
    assert not missing, f"docs/resume.md's run-directory tree misses {missing}"
    assert not sorted(named - entries), "the tree names an entry rundir.py does not declare"
    sweep = {v for k, v in vars(rundir).items() if k.startswith("SWEEP_")}
    assert not [v for v in sweep if v not in rundir.SweepDir.__doc__], "SweepDir's tree names every sweep entry"


def fault_tests() -> set[str]:
    """Every test that carries the `fault` mark, itself or through its module's pytestmark."""
    names = set()
    for path in (REPO / "tests").rglob("test_*.py"):
        tree = ast.parse(path.read_text())
        whole = any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
                    and "mark.fault" in ast.unparse(n.value) for n in tree.body)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_") and (
                    whole or any("mark.fault" in ast.unparse(d) for d in node.decorator_list)):
                names.add(node.name)
    return names


def test_every_fault_test_has_its_row_in_the_fault_table():
    text = (DOCS / "resume.md").read_text()
    section = text[text.index("### Faults, and what is kept"):]
    table = re.search(r"^\| fault \|.*?(?=\n\n|\Z)", section, re.S | re.M).group(0)
    named = set(re.findall(r"`(test_\w+)`", table))
    faults = fault_tests()
    assert len(faults) >= 25
    assert not sorted(faults - named), f"fault tests without a row: {sorted(faults - named)}"
    assert not sorted(named - faults), f"rows naming no fault test: {sorted(named - faults)}"


def test_performance_figures_are_rendered_from_the_bench_results():
    """docs/performance.md, RESULTS.md and the README's figures are what the result files render
    to: a figure edited by hand, or a result saved without rendering, fails here (`make docs`)."""
    from bench import run_all

    saved = run_all.results()
    assert set(saved) == set(run_all.SECTIONS), f"sections without a result file: {set(run_all.SECTIONS) - set(saved)}"
    body = run_all.render(saved)
    assert (DOCS / "performance.md").read_text() == run_all.performance_page(body)
    assert (REPO / "bench" / "results" / "RESULTS.md").read_text() == run_all.HEAD + body
    assert "<!-- bench:headline -->" in README.read_text()
    for page in run_all.quoting_pages():
        text = page.read_text()
        assert run_all.with_blocks(text, saved) == text, f"{page.name}: a bench block differs from its result file"


def test_the_metrics_page_states_the_margins_and_rules_in_force():
    from oasis_dcgan.post import copying, verdicts

    text = (DOCS / "metrics.md").read_text()
    phrases = [f"±{verdicts.CLOSENESS_MARGIN:g} SSIM", f"±{verdicts.DIVERSITY_MARGIN:g} around 1",
               f"at most {0.5 + verdicts.DISTRIBUTION_MARGIN:g}", f"at least {copying.DUPLICATE_SSIM:g}",
               f"{copying.TAIL * 100:.0f}th percentile", f"fewer than {copying.MIN_SUBJECTS} held-out subjects",
               f"at {copying.COMPARE_SIZE}x{copying.COMPARE_SIZE}", f"exceeds {copying.MAX_NULL_SHARE:g}",
               f"p < {copying.NULL_P:g}"]
    missing = [p for p in phrases if p not in text]
    assert not missing, f"docs/metrics.md does not state {missing}"


def test_every_choice_list_in_the_readmes_commands_is_the_clis():
    """The CLI's choices come from the registries (executors, layouts, sample-data's writers) and the keys'
    rules; the README's `--flag a|b|c` lists must say the same, so a new executor or layout shows there."""
    from oasis_dcgan import cli

    text = README.read_text()
    block = re.search(r"```bash\n(oasis-dcgan .*?)```", text[text.index("## Commands"):], re.S).group(1)
    commands = re.split(r"\n(?=oasis-dcgan )", block)
    parsers = cli.build_parser()._subparsers._group_actions[0].choices
    checked = 0
    for text in commands:
        name = text.split()[1]
        for flag, listed in re.findall(r"\[(--[\w-]+) ([^\s\]]+\|[^\s\]]+)\]", text):
            action = next(a for a in parsers[name]._actions if flag in a.option_strings)
            assert set(listed.split("|")) == {str(c) for c in action.choices}, f"README: {name} {flag} {listed}"
            checked += 1
    assert checked >= 5


def test_a_run_directory_is_built_only_where_it_enters_the_program():
    """Everything else takes the RunDir it is given, so a path is never rebuilt from a string."""
    entries = {"rundir.py",            # its home
               "cli.py", "demo.py",    # a command's argument
               "launch/jobs.py",       # a job's arguments, in the job's process
               "launch/retry.py",      # the batch script's argument to the retry step
               "launch/pipeline.py",   # a config's run_dir, where a pipeline or a single job starts
               "training/trainer.py"}  # a config's run_dir, where training starts in-process
    package = REPO / "oasis_dcgan"
    built = {p.relative_to(package).as_posix() for p in package.rglob("*.py") if "RunDir(" in p.read_text()}
    assert built <= entries, sorted(built - entries)
