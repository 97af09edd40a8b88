"""How the code is organised, checked: library code leaves matplotlib's global backend alone, library
errors name parameters (command lines map them to their flags), the import graph has no cycle and
never points from pysparse24 to profiler, and `ruff check` passes."""

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = sorted(p for pkg in ("pysparse24", "profiler") for p in (ROOT / pkg).rglob("*.py"))


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def test_library_never_switches_the_matplotlib_backend():
    offenders = []
    for path in LIBRARY:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(n.startswith("matplotlib.pyplot") for n in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports pyplot")
        for call in _calls(tree):
            f = call.func
            if isinstance(f, ast.Attribute) and f.attr == "use" and ast.unparse(f.value) == "matplotlib":
                offenders.append(f"{path.relative_to(ROOT)}:{call.lineno} calls matplotlib.use")
    assert offenders == []


def test_a_plot_keeps_the_callers_backend(tmp_path):
    code = f"""
import sys, matplotlib
matplotlib.use("svg")
from pysparse24.bench import GemmCase, report
from pysparse24.bench.gemm import GemmResult
r = GemmResult.from_samples(GemmCase(64, 8, 128), "cpu", 1, True, {{"sparse_ms": [1.0, 2.0], "dense_ms": [2.0, 3.0]}})
report.plot_speedup([r], {str(tmp_path / "s.png")!r})
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
assert "matplotlib.pyplot" not in sys.modules
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _is_cli_module(path: Path) -> bool:
    return path.name in ("cli.py", "_cli.py", "__main__.py")


def test_library_errors_name_parameters_not_flags():
    """A raise outside the command-line modules quotes no `--flag` (a library caller has none); the
    advise/validate command-line functions that take parsed `args` are exempt by name."""
    cli_functions = {"run", "parse_shape", "load_model", "main"}
    offenders = []
    for path in LIBRARY:
        if _is_cli_module(path):
            continue
        tree = ast.parse(path.read_text(), str(path))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or fn.name in cli_functions:
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Raise) and node.exc is not None:
                    text = ast.unparse(node.exc)
                    if re.search(r"--[a-z][a-z-]+", text):
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text[:80]}")
    assert offenders == []


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports, at module level, inside functions or by name through
    importlib (a lazy import hides a cycle from Python, not from a reader). `from package import name`
    counts as an import of package.name when that is a module."""
    modules = {_module_name(p): p for p in LIBRARY}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value:
                targets = [node.value]  # a module named for importlib (lazy subcommands)
            else:
                continue
            # An edge into one's own package is no design cycle: Python has the package loaded first.
            edges |= {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    graph = import_graph()
    assert "pysparse24.cuda.ops" in graph["pysparse24.masks"]  # the graph sees lazy imports ...
    assert "profiler.validate" in graph["profiler.cli"]  # ... and importlib's by name
    assert _cycles(graph) == []


def test_profiler_never_imported_by_pysparse24():
    """profiler builds on pysparse24. The one exception is the `pysparse24` command, which forwards
    `pysparse24 lut|nas ...` to profiler's command lines by module name."""
    graph = import_graph()
    assert [
        (m, t)
        for m, ts in graph.items()
        if m.startswith("pysparse24") and m != "pysparse24.cli"
        for t in ts
        if t.split(".")[0] == "profiler"
    ] == []


def test_ruff_check_and_format_pass():
    """`make test` runs `ruff check .` and `ruff format --check .` too; here so that every branch's
    test run sees a finding first."""
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]' brings it)")
    for command in (["check", "--no-cache", "."], ["format", "--check", "--no-cache", "."]):
        done = subprocess.run([ruff, *command], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def test_shape_rules_live_in_groups():
    """The sparse kernels' shape rules (whole groups along the reduction dimension, K a multiple of
    8 for the packed format, output channels a multiple of 8, cuSPARSELt's multiples) have one home,
    pysparse24/groups.py: no other module takes a value modulo 4 or 8, states "multiple of 8" in a
    message or defines its own multiple constant."""
    home = ROOT / "pysparse24" / "groups.py"
    constants = {"PACKED_K_MULTIPLE", "OUT_CHANNEL_MULTIPLE", "CUSPARSELT_SPARSE_BYTES", "CUSPARSELT_DENSE_BYTES"}
    offenders = []
    for path in LIBRARY + sorted((ROOT / "benchmarks").glob("*.py")):
        if path == home:
            continue
        tree = ast.parse(path.read_text(), str(path))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
            if (
                isinstance(node, ast.BinOp)
                and isinstance(node.op, ast.Mod)
                and isinstance(node.right, ast.Constant)
                and node.right.value in (4, 8)
            ):
                offenders.append(f"{where}: {ast.unparse(node)}")
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and re.search(r"(multiple of|divisible by) 8\b", node.value)
            ):
                offenders.append(f"{where}: {node.value!r}")
            elif isinstance(node, ast.Assign) and {getattr(t, "id", None) for t in node.targets} & constants:
                offenders.append(f"{where}: {ast.unparse(node)}")
    assert offenders == []


def test_dtype_names_live_in_dtypes():
    """Every dtype spelling is mapped by pysparse24/dtypes.py: no other module strips torch's prefix
    itself or keeps a name -> torch dtype table."""
    home = ROOT / "pysparse24" / "dtypes.py"
    torch_dtypes = {"float32", "float", "float16", "half", "bfloat16", "float64", "int8", "int32", "uint8"}
    torch_dtypes |= {"float8_e4m3fn", "float8_e5m2"}
    offenders = []
    for path in LIBRARY + sorted((ROOT / "benchmarks").glob("*.py")):
        if path == home:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "removeprefix":
                if any(isinstance(a, ast.Constant) and a.value == "torch." for a in node.args):
                    offenders.append(f"{where}: {ast.unparse(node)}")
            elif isinstance(node, ast.Dict) and any(
                isinstance(k, ast.Constant)
                and isinstance(k.value, str)
                and isinstance(v, ast.Attribute)
                and ast.unparse(v.value) == "torch"
                and v.attr in torch_dtypes
                for k, v in zip(node.keys, node.values)
            ):
                offenders.append(f"{where}: {ast.unparse(node)[:80]}")
    assert offenders == []


def test_worker_pools_live_in_profiler_pool():
    """Crash-isolating workers (local processes and Ray actors) have one home, profiler/pool.py:
    no other library module imports multiprocessing, concurrent.futures or ray."""
    home = ROOT / "profiler" / "pool.py"
    offenders = []
    for path in LIBRARY:
        if path == home:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                if name.split(".")[0] in ("multiprocessing", "ray") or name.startswith("concurrent.futures"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert offenders == []
