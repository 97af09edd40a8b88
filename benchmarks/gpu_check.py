"""`make gpu-check`: the whole first-contact GPU run in one command (< 8 minutes on an H100/H200).

    python3 benchmarks/gpu_check.py              # on a machine with an NVIDIA GPU (what `make gpu-check` runs)
    python3 benchmarks/gpu_check.py --dry-run    # anywhere: every step that needs no GPU, the rest marked skipped

Steps, each with its own timeout, in order:
  device      nvidia-smi (name, driver, compute capability), torch / cuSPARSELt wheel / nvcc versions
  build       PYSPARSE24_CUDA_ARCHS=90 python3 setup.py build_ext --inplace, in its own build folder,
              with the Python that runs this script; no network, no pip
  build-info  stops everything when the build lacks the CUDA kernels or the cuSPARSELt wrapper
  tests       tests/test_cuda_host.py and tests/test_cuda_gpu.py
  bench       benchmarks/bench_cuda.py --llm (square GEMMs, compress GB/s vs copy, LLM layer shapes)
  memcheck    compute-sanitizer --tool memcheck on the kernel tests, if time remains
Writes gpu_check.json (every step: status, seconds, summary) and gpu_check.log (all output) into
$OUT when set (the device tool brings that folder back), else --out (default gpu_check_out/), with
the benchmark's cuda_bench.json beside them. Exit status: 0 when every step that ran passed, 1
when one failed, 2 when it stopped before the GPU steps (no GPU, or an unusable build).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 470  # the whole run, under the 8 minutes the issue allows
TIMEOUTS_S = {"device": 60, "build": 300, "build-info": 60, "tests": 180, "bench": 200, "memcheck": 150}
MEMCHECK_TESTS = "every_output or caller_owned or callers_stream or matches_cpu_and_roundtrips"
STEPS = list(TIMEOUTS_S)


def build_problem(info: dict) -> str:
    """Why a build cannot run the GPU steps ('' when it can): both the kernels and the wrapper."""
    if not info.get("cuda_kernels"):
        return f"the build has no CUDA kernels: {info.get('reason', '?')}"
    if not info.get("cusparselt_wrapper"):
        return f"the build has no cuSPARSELt wrapper: {info.get('reason', '?')}"
    return ""


class Run:
    def __init__(self, out: Path, dry_run: bool):
        self.out, self.dry_run, self.start = out, dry_run, time.monotonic()
        out.mkdir(parents=True, exist_ok=True)
        self.log = open(out / "gpu_check.log", "w")
        self.report = {"dry_run": dry_run, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "steps": {}}
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep),
        }

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.log.write(text + "\n")
        self.log.flush()

    def command(self, name: str, cmd: list[str], timeout: float, env: dict | None = None) -> tuple[int, str]:
        """Runs cmd, its output into the log and onto the screen; (exit status, output). 124: timed out."""
        self.say(f"$ {' '.join(cmd)}   (timeout {timeout:.0f} s)")
        lines = []
        try:
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env or self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        except OSError as e:
            self.say(f"{name}: cannot run {cmd[0]}: {e}")
            return 127, str(e)
        # A reader thread copies the output line by line, so a silent hang still times out and a
        # timed-out step still leaves what it printed.
        reader = threading.Thread(
            target=lambda: [(lines.append(line), self.say(line.rstrip("\n"))) for line in proc.stdout], daemon=True
        )
        reader.start()
        try:
            status = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # the step's whole process group (a pytest's workers, a sanitizer's child)
            proc.wait()
            status = 124
        reader.join(timeout=5)
        if status == 124:
            self.say(f"{name}: timed out after {timeout:.0f} s")
        return status, "".join(lines)

    def record(self, name: str, status: str, seconds: float, **details) -> None:
        self.report["steps"][name] = {"status": status, "seconds": round(seconds, 1), **details}
        self.say(
            f"=== {name}: {status} ({seconds:.0f} s)" + (f": {details['summary']}" if "summary" in details else "")
        )
        self.save()

    def save(self) -> None:
        self.report["elapsed_s"] = round(self.elapsed(), 1)
        (self.out / "gpu_check.json").write_text(json.dumps(self.report, indent=1))


def step_device(run: Run) -> str:
    """The device line; returns why there is no usable GPU ('' when there is one)."""
    t0 = time.monotonic()
    smi = shutil.which("nvidia-smi")
    device = {}
    if smi:
        status, text = run.command(
            "device",
            [smi, "--query-gpu=name,driver_version,compute_cap,memory.total", "--format=csv,noheader"],
            TIMEOUTS_S["device"],
        )
        if status == 0 and text.strip():
            device["gpus"] = [line.strip() for line in text.strip().splitlines()]
    versions = {"python": sys.version.split()[0]}
    for dist in ("torch", "nvidia-cusparselt-cu13", "nvidia-cusparse", "cupy-cuda13x", "pybind11", "setuptools"):
        try:
            from importlib import metadata

            versions[dist] = metadata.version(dist)
        except Exception:
            versions[dist] = None
    for tool in ("nvcc", "cmake", "ninja", "make", "compute-sanitizer"):
        versions[tool] = shutil.which(tool) or (str(p) if (p := Path("/usr/local/cuda/bin") / tool).exists() else None)
    device["versions"] = versions
    why = (
        ""
        if device.get("gpus")
        else ("no NVIDIA GPU: nvidia-smi is not installed" if not smi else "no NVIDIA GPU: nvidia-smi lists none")
    )
    line = (
        "; ".join(device.get("gpus", [why]))
        + " | "
        + ", ".join(f"{k} {v}" for k, v in versions.items() if k in ("torch", "nvidia-cusparselt-cu13"))
    )
    run.report["device"] = device
    run.record("device", "ok" if not why else "no-gpu", time.monotonic() - t0, summary=line)
    return why


def step_build(run: Run) -> bool:
    t0 = time.monotonic()
    build_dir = ROOT / "build" / "gpu-check-sm90"
    env = {
        **run.env,
        "PYSPARSE24_CUDA_ARCHS": "90",
        "PYSPARSE24_BUILD_DIR": str(build_dir),
        "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2),
        "PIP_NO_INDEX": "1",
    }
    status, _ = run.command(
        "build", [sys.executable, "setup.py", "-q", "build_ext", "--inplace"], TIMEOUTS_S["build"], env=env
    )
    run.record(
        "build",
        "ok" if status == 0 else "failed",
        time.monotonic() - t0,
        summary=f"exit {status}, sm_90 only, build folder {build_dir.relative_to(ROOT)}",
    )
    return status == 0


def step_build_info(run: Run) -> str:
    """A fresh interpreter reads the new build's build_info; returns why it is unusable ('' if usable)."""
    t0 = time.monotonic()
    code = (
        "import json, pysparse24.cuda as c\ninfo = c.build_info()\ninfo['unavailable_reason'] = c.unavailable_reason()\n"
        "try:\n    from pysparse24.cuda import cusparselt as l\n    info['cusparselt_loaded'] = l.load()\n"
        "    info['cusparselt_version'] = '.'.join(map(str, l.version()))\n"
        "except Exception as e:\n    info['cusparselt_loaded'] = 'not loaded: ' + str(e)\n"
        "print('BUILD_INFO ' + json.dumps(info))\n"
    )
    status, text = run.command("build-info", [sys.executable, "-c", code], TIMEOUTS_S["build-info"])
    info = {}
    for line in text.splitlines():
        if line.startswith("BUILD_INFO "):
            info = json.loads(line[len("BUILD_INFO ") :])
    problem = build_problem(info) if info else f"cannot import the build (exit {status})"
    run.report["build_info"] = info
    run.record(
        "build-info",
        "ok" if not problem else "unusable",
        time.monotonic() - t0,
        summary=problem
        or f"kernels + wrapper, cuSPARSELt header {info.get('cusparselt_header')}, "
        f"library {info.get('cusparselt_version', '?')}",
    )
    return problem


def step_tests(run: Run) -> bool:
    t0 = time.monotonic()
    status, text = run.command(
        "tests",
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "tests/test_cuda_host.py",
            "tests/test_cuda_gpu.py",
        ],
        TIMEOUTS_S["tests"],
    )
    tail = [line for line in text.splitlines() if " passed" in line or " failed" in line or " error" in line]
    skipped_gpu = re.search(r"SKIPPED \[\d+\] tests/test_cuda_gpu\.py", text) is not None
    ok = status == 0 and (run.dry_run or not skipped_gpu)  # on a GPU, a skipped GPU test is a failure to look at
    run.record(
        "tests",
        "ok" if ok else "failed",
        time.monotonic() - t0,
        summary=(tail[-1].strip("= ") if tail else f"exit {status}") + ("; GPU tests skipped" if skipped_gpu else ""),
    )
    return ok


def step_bench(run: Run) -> bool:
    t0 = time.monotonic()
    timeout = min(TIMEOUTS_S["bench"], max(30.0, BUDGET_S - run.elapsed() - 60))
    status, _ = run.command(
        "bench",
        [
            sys.executable,
            "benchmarks/bench_cuda.py",
            "--llm",
            "--warmup",
            "5",
            "--repeats",
            "20",
            "--out",
            str(run.out / "cuda_bench.json"),
        ],
        timeout,
    )
    results = json.loads((run.out / "cuda_bench.json").read_text()) if (run.out / "cuda_bench.json").exists() else {}
    summary = results.get("skipped") or (
        f"{len(results.get('gemm', []))} GEMM and {len(results.get('compress', []))} compress cases in cuda_bench.json"
    )
    run.record(
        "bench",
        "ok" if status == 0 else "timed-out" if status == 124 else "failed",
        time.monotonic() - t0,
        summary=summary,
    )
    return status in (0, 124)  # a timeout keeps every case finished so far


def step_memcheck(run: Run, have_gpu: bool) -> bool:
    t0 = time.monotonic()
    left = BUDGET_S - run.elapsed()
    sanitizer = shutil.which("compute-sanitizer") or "/usr/local/cuda/bin/compute-sanitizer"
    if not have_gpu or left < 45 or not Path(sanitizer).exists():
        why = "no GPU" if not have_gpu else f"{left:.0f} s left" if left < 45 else "no compute-sanitizer"
        run.record("memcheck", "skipped", 0.0, summary=why)
        return True
    status, text = run.command(
        "memcheck",
        [
            sanitizer,
            "--tool",
            "memcheck",
            "--print-limit",
            "20",
            "--error-exitcode",
            "3",
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-x",
            "-p",
            "no:cacheprovider",
            "tests/test_cuda_gpu.py",
            "-k",
            MEMCHECK_TESTS,
        ],
        min(TIMEOUTS_S["memcheck"], left),
    )
    errors = [line for line in text.splitlines() if "ERROR SUMMARY" in line]
    run.record(
        "memcheck",
        "ok" if status == 0 else "timed-out" if status == 124 else "failed",
        time.monotonic() - t0,
        summary=errors[-1] if errors else f"exit {status}",
    )
    return status in (0, 124)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="run every step that needs no GPU; mark the rest skipped")
    p.add_argument("--out", default=str(ROOT / "gpu_check_out"), help="results folder when $OUT is unset")
    p.add_argument("--steps", default=",".join(STEPS), help=f"a subset of {','.join(STEPS)} (for dry runs)")
    args = p.parse_args(argv)
    steps = args.steps.split(",")
    unknown = set(steps) - set(STEPS)
    if unknown:
        print(f"error: unknown steps {sorted(unknown)} (known: {', '.join(STEPS)})", file=sys.stderr)
        return 2
    run = Run(Path(os.environ.get("OUT") or args.out), args.dry_run)
    run.say(f"gpu-check in {ROOT} -> {run.out}{' (dry run)' if args.dry_run else ''}")

    def stop(why: str) -> int:
        run.report["stopped"] = why
        run.save()
        print(f"error: gpu-check stopped: {why}", file=sys.stderr)
        run.log.write(f"error: gpu-check stopped: {why}\n")
        return 2

    no_gpu = step_device(run) if "device" in steps else ""
    if no_gpu and not args.dry_run:
        return stop(no_gpu)
    if "build" in steps and not step_build(run):
        return stop("the build failed (see gpu_check.log)")
    if "build-info" in steps:
        problem = step_build_info(run)
        if problem:
            return stop(problem)
    ok = True
    if "tests" in steps:
        ok &= step_tests(run)
    if "bench" in steps:
        ok &= step_bench(run)
    if "memcheck" in steps:
        ok &= step_memcheck(run, have_gpu=not no_gpu)
    run.report["result"] = "passed" if ok else "failed"
    run.save()
    run.say(f"gpu-check {run.report['result']} in {run.elapsed():.0f} s; {run.out / 'gpu_check.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
