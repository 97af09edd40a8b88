"""Static sm_90 SASS instruction counts of the compress kernels, per 32-byte chunk (one thread, one
loop iteration: one chunk), without a GPU: compiles csrc/cuda/compress_kernels.cu to a cubin with
nvcc and disassembles it with cuobjdump (the toolkit's, or the one Triton's wheel carries).

    python3 benchmarks/sass_counts.py                        # table of the 16-byte (vector) kernels
    python3 benchmarks/sass_counts.py --cubin old.cubin      # an existing cubin (e.g. an older commit's)

Columns: instructions of the whole kernel (NOPs excluded); of its grid-stride loop (from the
target of the backward branch to that branch: what one chunk executes, rare paths included when
the compiler placed them inside); "common": the loop without the blocks that predicated forward
branches jump over (error paths, the unpruned over-full count), i.e. a chunk of valid input with
prune=True; and the branches (BRA) in the loop.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KINDS = ["float32", "float16", "bfloat16", "int8", "float8_e4m3fn", "float8_e5m2"]  # ps24::Kind order
# CompressPackedOp / CompressCutlassOp<Kind, vector> (float32; all kinds before issue 13) and
# CompressWordsOp<Kind, vector, cutlass> (8- and 16-bit kinds).
OP = re.compile(r"(\d+)(Compress(?:Packed|Cutlass|Words)Op)ILNS_4KindE(\d)ELb([01])E(?:Lb([01])E)?")
LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")


def find_tool(name: str, given: str | None) -> str:
    """given, $PATH, $CUDA_HOME/bin, /usr/local/cuda*/bin, then Triton's wheel (found, not imported)."""
    candidates = [given, shutil.which(name), os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", name)]
    candidates += sorted(str(p) for p in Path("/usr/local").glob(f"cuda*/bin/{name}"))
    spec = importlib.util.find_spec("triton")
    if spec and spec.submodule_search_locations:
        candidates += [str(Path(loc) / "backends" / "nvidia" / "bin" / name) for loc in spec.submodule_search_locations]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    raise SystemExit(f"error: no {name} found (pass --{name}, or install the toolkit or Triton)")


def compile_cubin(nvcc: str, out: Path) -> None:
    subprocess.run(
        [
            nvcc,
            "-cubin",
            "-arch=sm_90",
            "-std=c++17",
            "--expt-relaxed-constexpr",
            "-O3",
            "-I",
            str(ROOT / "csrc"),
            str(ROOT / "csrc" / "cuda" / "compress_kernels.cu"),
            "-o",
            str(out),
        ],
        check=True,
    )


def kernels(sass: str) -> dict[str, list[tuple[int, str]]]:
    """Function name -> [(address, instruction)]."""
    out, current = {}, None
    for line in sass.splitlines():
        if "Function :" in line:
            current = out.setdefault(line.split("Function :")[1].strip(), [])
        elif current is not None and (m := LINE.search(line)):
            current.append((int(m.group(1), 16), m.group(2)))
    return out


def counts(code: list[tuple[int, str]]) -> dict:
    real = [(a, i) for a, i in code if not i.startswith("NOP")]
    loop = real
    for address, instruction in real:  # the grid-stride loop: the backward branch with the lowest target
        m = re.search(r"BRA\s+(?:`\(\.L_x_\d+\)|0x([0-9a-f]+))", instruction)
        if m and m.group(1) and int(m.group(1), 16) < address:
            start = int(m.group(1), 16)
            loop = [(a, i) for a, i in real if start <= a <= address]
            break
    branches = lambda xs: sum(1 for _, i in xs if re.match(r"(@!?U?P\d+ )?BRA", i))  # noqa: E731
    # The common path: the loop without the blocks a predicated forward branch jumps over (error
    # slots, the unpruned over-full count: none runs on valid input with prune=True). A lower bound
    # of what one chunk executes when the compiler lays rare code out behind such branches.
    skipped = set()
    for address, instruction in loop:
        m = re.match(r"@!?U?P\d+ BRA\s+(?:`\(\.L_x_\d+\)|0x([0-9a-f]+))", instruction)
        if m and m.group(1) and address < int(m.group(1), 16) <= loop[-1][0]:
            skipped.update(a for a, _ in loop if address < a < int(m.group(1), 16))
    return {"kernel": len(real), "loop": len(loop), "common": len(loop) - len(skipped), "loop_branches": branches(loop)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cubin", help="disassemble this cubin instead of compiling the current source")
    p.add_argument("--nvcc", help="nvcc to compile with")
    p.add_argument("--cuobjdump", help="cuobjdump to disassemble with")
    p.add_argument("--all", action="store_true", help="the scalar (unaligned-input) kernels too")
    args = p.parse_args(argv)
    cuobjdump = find_tool("cuobjdump", args.cuobjdump)
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(args.cubin) if args.cubin else Path(tmp) / "compress_kernels.cubin"
        if not args.cubin:
            compile_cubin(find_tool("nvcc", args.nvcc), cubin)
        sass = subprocess.run([cuobjdump, "-sass", str(cubin)], check=True, capture_output=True, text=True).stdout
    rows = []
    for name, code in kernels(sass).items():
        m = OP.search(name)
        if not m or (m.group(4) == "0" and not args.all):
            continue
        fmt = "cutlass" if "Cutlass" in m.group(2) or m.group(5) == "1" else "packed"
        rows.append((KINDS[int(m.group(3))], fmt, "vector" if m.group(4) == "1" else "scalar", counts(code)))
    print(f"{'dtype':>14} {'format':>8} {'path':>7} {'kernel':>7} {'loop':>6} {'common':>6} {'loop BRA':>8}")
    for dtype, fmt, path, c in sorted(rows, key=lambda r: (KINDS.index(r[0]), r[1], r[2])):
        print(
            f"{dtype:>14} {fmt:>8} {path:>7} {c['kernel']:7d} {c['loop']:6d} {c['common']:6d} {c['loop_branches']:8d}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
