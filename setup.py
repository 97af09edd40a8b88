"""Builds the one extension, pysparse24._C, by driving CMake (after pybind11's cmake_example).

The CMake build directory is kept under build/ so that rebuilding after a C++ edit is incremental.
"""
import os
import subprocess
import sys
from pathlib import Path

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
        build_dir = ROOT / "build" / f"cmake-py{sys.version_info.major}{sys.version_info.minor}-{build_type}"
        build_dir.mkdir(parents=True, exist_ok=True)
        configure = [
            "cmake", str(ROOT),
            f"-DCMAKE_BUILD_TYPE={build_type}",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
        ]
        # PYSPARSE24_CUDA=OFF forces a CPU-only build even where nvcc is installed.
        if os.environ.get("PYSPARSE24_CUDA"):
            configure.append(f"-DPYSPARSE24_CUDA={os.environ['PYSPARSE24_CUDA']}")
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        subprocess.run(configure, cwd=build_dir, check=True)
        subprocess.run(["cmake", "--build", ".", "-j", jobs], cwd=build_dir, check=True)


setup(ext_modules=[CMakeExtension("pysparse24._C")], cmdclass={"build_ext": CMakeBuild})
