"""`make gpu-check` and the GPU benchmark, as far as a machine without a GPU runs them: the steps
that need no GPU run for real (dry run), the rest must stop or skip with a clear reason."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pysparse24.cuda as pcuda

ROOT = Path(__file__).resolve().parents[1]
needs_no_gpu = pytest.mark.skipif(pcuda.is_available(), reason="a CUDA device is present")

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402


def run_script(args, tmp_path, **env):
    """The script as a user runs it: another working directory, no PYTHONPATH."""
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OUT")}
    return subprocess.run(
        [sys.executable, *args], cwd=tmp_path, env={**clean, **env}, capture_output=True, text=True, timeout=120
    )


@needs_no_gpu
def test_bench_cuda_imports_its_checkout_and_writes_json_without_a_gpu(tmp_path):
    out = tmp_path / "bench.json"
    done = run_script([str(ROOT / "benchmarks" / "bench_cuda.py"), "--out", str(out)], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "bench_cuda: skipped: no CUDA device" in done.stdout
    result = json.loads(out.read_text())
    assert result["skipped"].startswith("no CUDA device")
    assert result["pysparse24"] == str(ROOT / "pysparse24")  # this checkout's package and build, not an install


def test_bench_results_are_rewritten_after_every_case(tmp_path):
    import bench_cuda

    path = tmp_path / "r.json"
    results = bench_cuda.Results(str(path), {"device": "x"})
    assert json.loads(path.read_text()) == {"device": "x", "gemm": [], "compress": []}
    results.add("gemm", {"shape": "1x2x3"})
    assert json.loads(path.read_text())["gemm"] == [{"shape": "1x2x3"}]  # on disk before the next case
    assert len(bench_cuda.llm_shapes()) == 36 and "14336x1x11008" in bench_cuda.llm_shapes()


def test_build_problem_stops_on_a_build_without_kernels_or_wrapper():
    assert gpu_check.build_problem({"cuda_kernels": True, "cusparselt_wrapper": True, "reason": ""}) == ""
    assert "no CUDA kernels: no nvcc" in gpu_check.build_problem({"cuda_kernels": False, "reason": "no nvcc"})
    why = "the cuSPARSELt wrapper was not built: cusparseLt.h includes cusparse.h, found neither beside it"
    assert gpu_check.build_problem({"cuda_kernels": True, "cusparselt_wrapper": False, "reason": why}).endswith(why)


@needs_no_gpu
def test_gpu_check_stops_at_once_without_a_gpu(tmp_path):
    done = run_script(
        [str(ROOT / "benchmarks" / "gpu_check.py"), "--steps", "device,build-info"], tmp_path, OUT=str(tmp_path / "out")
    )
    assert done.returncode == 2
    assert "error: gpu-check stopped: no NVIDIA GPU" in done.stderr
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["stopped"].startswith("no NVIDIA GPU") and list(report["steps"]) == ["device"]
    assert "versions" in report["device"] and (tmp_path / "out" / "gpu_check.log").exists()


@needs_no_gpu
def test_gpu_check_dry_run_does_every_step_that_needs_no_gpu(tmp_path):
    done = run_script(
        [
            str(ROOT / "benchmarks" / "gpu_check.py"),
            "--dry-run",
            "--out",
            str(tmp_path / "out"),
            "--steps",
            "device,build-info,bench,memcheck",
        ],
        tmp_path,
    )
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    info = pcuda.build_info()
    assert report["steps"]["device"]["status"] == "no-gpu"
    if not info["cusparselt_wrapper"]:  # the dry run stops where the GPU run would
        assert done.returncode == 2 and report["stopped"] == gpu_check.build_problem(info)
        return
    assert done.returncode == 0, done.stderr
    assert report["build_info"]["cusparselt_wrapper"] is True
    assert report["steps"]["bench"]["summary"].startswith("no CUDA device")
    assert report["steps"]["memcheck"] == {"status": "skipped", "seconds": 0.0, "summary": "no GPU"}
    assert report["result"] == "passed"


def test_gpu_check_rejects_unknown_steps(tmp_path):
    done = run_script([str(ROOT / "benchmarks" / "gpu_check.py"), "--steps", "device,warp"], tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("error: unknown steps ['warp']")


def test_sass_counts_finds_the_loop_and_its_common_path():
    """benchmarks/sass_counts.py on a hand-written disassembly (the real one needs cuobjdump)."""
    import sass_counts

    name = "_ZN4ps244cuda10run_chunksINS0_15CompressWordsOpILNS_4KindE3ELb1ELb1EEEEEvT_l"
    sass = f"""\tFunction : {name}
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   IADD3 R2, R2, 0x1, RZ ;
        /*0020*/              @P0 BRA 0x50 ;
        /*0030*/                   LOP3.LUT R3, R3, 0x1, RZ, 0xc0, !PT ;
        /*0040*/                   REDG.E.MIN.64.STRONG.GPU desc[UR4][R6.64], R2 ;
        /*0050*/                   ISETP.GE.AND P1, PT, R2, R5, PT ;
        /*0060*/             @!P1 BRA 0x10 ;
        /*0070*/                   EXIT ;
        /*0080*/                   NOP;
"""
    code = sass_counts.kernels(sass)[name]
    assert sass_counts.counts(code) == {"kernel": 8, "loop": 6, "common": 4, "loop_branches": 2}
    m = sass_counts.OP.search(name)
    assert sass_counts.KINDS[int(m.group(3))] == "int8" and m.group(4) == "1" and m.group(5) == "1"  # vector, cutlass
