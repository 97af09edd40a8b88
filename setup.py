"""Builds the one extension, pysparse24._C, by driving CMake (after pybind11's cmake_example).

The CMake build directory is kept under build/ so that rebuilding after a C++ edit is incremental.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import setuptools
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        import pybind11

        out_dir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        build_type = os.environ.get("PYSPARSE24_BUILD_TYPE", "Release")
        # PYSPARSE24_BUILD_DIR: another CMake build folder (make gpu-check's sm_90-only build uses one).
        build_dir = Path(
            os.environ.get("PYSPARSE24_BUILD_DIR")
            or ROOT / "build" / f"cmake-py{sys.version_info.major}{sys.version_info.minor}-{build_type}"
        )
        build_dir.mkdir(parents=True, exist_ok=True)
        configure = [
            "cmake",
            str(ROOT),
            f"-DCMAKE_BUILD_TYPE={build_type}",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
        ]
        configure += _generator(build_dir)
        # PYSPARSE24_CUDA=OFF forces a CPU-only build even where nvcc is installed.
        if os.environ.get("PYSPARSE24_CUDA"):
            configure.append(f"-DPYSPARSE24_CUDA={os.environ['PYSPARSE24_CUDA']}")
        # The environment decides the GPU architectures on every build, not only a build folder's first.
        archs = os.environ.get("PYSPARSE24_CUDA_ARCHS")
        configure.append(f"-DPYSPARSE24_CUDA_ARCHS={archs}" if archs else "-UPYSPARSE24_CUDA_ARCHS")
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        subprocess.run(configure, cwd=build_dir, check=True)
        subprocess.run(["cmake", "--build", ".", "-j", jobs], cwd=build_dir, check=True)


def _generator(build_dir: Path) -> list[str]:
    """Ninja where it is installed (the GPU image has ninja and maybe no make), else CMake's default.
    A configured build folder keeps its generator (CMake refuses to switch); CMAKE_GENERATOR wins."""
    cache = build_dir / "CMakeCache.txt"
    if (
        os.environ.get("CMAKE_GENERATOR")
        or cache.exists()
        and re.search(r"^CMAKE_GENERATOR:INTERNAL=", cache.read_text(), re.M)
    ):
        return []
    ninja = shutil.which("ninja")
    return ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"] if ninja else []


# The license as an SPDX expression (PEP 639) where setuptools knows one (>= 77); older setuptools,
# as on some GPU images, reads the same string as the classic License field. pyproject.toml lists
# `license` as dynamic so that both read it from here.
_LICENSE = "Apache-2.0"
_license = (
    {"license_expression": _LICENSE} if int(setuptools.__version__.split(".")[0]) >= 77 else {"license": _LICENSE}
)

setup(ext_modules=[CMakeExtension("pysparse24._C")], cmdclass={"build_ext": CMakeBuild}, **_license)
