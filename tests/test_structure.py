"""The shape of the code: no import circle, every package imports on its own in any order, and only the
run-folder module knows the files of a run or a study."""

from __future__ import annotations

import ast
import random
import re
import subprocess
import sys
from pathlib import Path

import fmlab
from fmlab.runs import ComparisonDir, EvalDir, RunDir, StudyDir

SRC = Path(fmlab.__file__).parent
OWNER = SRC / "runs" / "rundir.py"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}
PACKAGES = sorted(name for name, p in MODULES.items() if p.name == "__init__.py")


def imports(path: Path) -> set[str]:
    """fmlab modules `path` imports, at the top or inside functions (a lazy import is still a dependency)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("fmlab")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fmlab"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return found & set(MODULES)


def test_the_import_graph_has_no_circle():
    graph = {name: imports(path) - {name} for name, path in MODULES.items()}
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != "open", "import circle: " + " -> ".join([*trail, node, nxt])
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = "done"

    for name in MODULES:
        if name not in state:
            visit(name, [])


def test_a_circle_would_be_found(tmp_path):
    """The check above can fail: the old study/run.py <-> study/summary.py pair is a circle."""
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("def f():\n    from fmlab.study.summary import summarise\n")
    b.write_text("from fmlab.study.run import run_study\n")
    assert imports(a) == {"fmlab.study.summary"} and imports(b) == {"fmlab.study.run"}


def test_every_package_imports_on_its_own_and_in_any_order():
    rng = random.Random(0)
    orders = [[p] for p in PACKAGES] + [rng.sample(sorted(MODULES), len(MODULES)) for _ in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", "; ".join(f"import {m}" for m in order)],
                              stderr=subprocess.PIPE, text=True) for order in orders]
    for order, proc in zip(orders, procs, strict=True):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{order[:3]}...: {err[-2000:]}"


FILE_NAMES = sorted({
    *(n for n in (*RunDir.FILES, EvalDir.METRICS) if "." in n),
    *(getattr(StudyDir, k) for k in ("STUDY", "SUMMARY", "SUMMARY_CSV", "TIMINGS", "REPORT_HTML", "REPORT_MD")),
    ComparisonDir.FIGURE, ComparisonDir.SUMMARY,
})


def test_only_the_run_folder_module_names_run_and_study_files():
    assert {"config.json", "checkpoint.pt", "last.pt", "predictions.npz", "done.json", "report.html"} <= set(FILE_NAMES)
    pattern = re.compile(r"(?<![\w.-])(" + "|".join(map(re.escape, FILE_NAMES)) + r")(?![\w.])")
    offenders = {str(p.relative_to(SRC)): sorted(set(pattern.findall(p.read_text())))
                 for p in MODULES.values() if p != OWNER and pattern.search(p.read_text())}
    templates = {str(p.relative_to(SRC)): sorted(set(pattern.findall(p.read_text())))
                 for p in (SRC / "study" / "templates").iterdir() if pattern.search(p.read_text())}
    assert offenders == {} and templates == {}
    assert pattern.search(OWNER.read_text())  # the owner does name them: the pattern can match


def test_the_code_version_covers_the_code_a_runs_numbers_depend_on():
    from fmlab.runs.spec import code_files

    files = {p.relative_to(SRC).as_posix() for p in code_files()}
    assert {"config.py", "data/split.py", "models/cnn.py", "training/loop.py", "training/learners.py",
            "runs/predictor.py"} <= files
