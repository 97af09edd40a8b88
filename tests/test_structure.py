"""How the code is organised, checked: library code leaves matplotlib's global backend alone, and
library errors name parameters (command lines map them to their flags)."""
import ast
import re
import subprocess
import sys
from pathlib import Path

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
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
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
