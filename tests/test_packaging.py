"""The source distribution builds on its own (issue 16, section 3): it carries the C++/CUDA sources
and CMake files setup.py drives, the license and the type marker. `make sdist-check` goes further
and builds a wheel from it (a full compile, so not part of `make test`)."""

import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_sdist_carries_what_the_build_needs(tmp_path):
    # From a clean copy: setuptools also lists what an earlier build's *.egg-info recorded.
    source = tmp_path / "src"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv",
            "build",
            "dist",
            "*.egg-info",
            "__pycache__",
            "*.so",
            "demo_out",
            ".hypothesis",
            ".pytest_cache",
            ".benchmarks",
        ),
    )
    # setuptools' PEP 517 hook, as pip and `python -m build` call it (no network, no compile)
    proc = subprocess.run(
        [sys.executable, "-c", "import sys, setuptools.build_meta as b; b.build_sdist(sys.argv[1])", str(tmp_path)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (sdist,) = tmp_path.glob("pysparse24-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    sources = {str(p.relative_to(REPO)) for p in (REPO / "csrc").rglob("*") if p.is_file()}
    assert sources and sources <= names, sorted(sources - names)
    for needed in (
        "CMakeLists.txt",
        "setup.py",
        "pyproject.toml",
        "LICENSE",
        "README.md",
        "pysparse24/py.typed",
        "profiler/py.typed",
        "profiler/nas/spaces/demo.json",
        "csrc/cuda/cuda.cmake",
    ):
        assert needed in names, needed
    assert not [n for n in names if n.endswith((".so", ".pyc"))]


def test_metadata_is_true_to_the_code():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["requires-python"] == ">=3.11"  # tomllib is imported for .toml spaces
    extras = project["project"]["optional-dependencies"]
    assert not any(dep.startswith("cuda-python") for deps in extras.values() for dep in deps)  # never imported
    # `make test` (CI) runs the --ray paths: Ray comes with the test extra (tests/conftest.py local_ray)
    assert any(dep.startswith("pysparse24[") and "ray" in dep.split("[")[1] for dep in extras["test"])
    assert any(req.startswith("cmake") for req in project["build-system"]["requires"])
    scripts = project["project"]["scripts"]
    assert scripts == {
        "pysparse24": "pysparse24.cli:main",
        "profiler": "profiler.cli:main",
        "nas": "profiler.nas.cli:main",
    }
    license_text = (REPO / "LICENSE").read_text()
    assert license_text.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in license_text
    assert "## Install" in (REPO / "README.md").read_text()
