"""Real layer shapes: pysparse24's CPU 2:4 kernels against the best dense torch path (issue 14, section 2).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_layers.py [--set gpunet bert llama conv]
        [--dtype float32 bfloat16] [--cache warm cold] [--rounds 5] [--repeats 7] [--json out.json]

Per layer and dtype it times, in the channels-last "linear" orientation a model uses (x: (N, K)
activations, y: (N, M)):
  sparse   pysparse24.linear(x, c) on the 2:4 compressed weight (k x k convs: the torch op
           torch.ops.pysparse24.conv2d that SparseConv2d runs: implicit im2col over the NHWC input on
           the large-N kernels; it runs at OpenMP's thread count, so set OMP_NUM_THREADS to --threads)
  linear   F.linear(x, w)                      (dense, pruned weight, same dtype)
  conv     F.conv2d on channels_last input     (oneDNN; for 1x1 layers the same GEMM)
  matmul   torch.matmul(x, w.T)
and prints median ms, dense-equivalent GFLOP/s (2*M*N*K / time, so every column compares directly),
the fraction of the CPU's peak and best dense / sparse. Same dtype and threads for all (both cores by
default). Rounds interleave the paths (sparse, each dense path, sparse, ...) so a neighbour's burst
hits them alike; the medians are over all rounds.
warm: the same weight every call. cold: every call takes the next of enough weight copies to stream
2.5x the last-level cache between two uses of one (pysparse24.bench.backends), as a model's layers do.
Before timing, each sparse kernel writes into a NaN-poisoned output that is checked against a float64
product of the same pruned weight, and every dense path against it too: a wrong kernel is never timed.
Inputs are fresh random normals; the seed is printed (--seed to repeat a run).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

import pysparse24
from pysparse24.bench.backends import _copies, _cycling
from pysparse24.groups import packed_k_problem
from pysparse24.timing import summarize, wall_clock_sampler

PATHS_DENSE = ("linear", "conv", "matmul")


@dataclass(frozen=True)
class Layer:
    """A conv (kernel x kernel, stride, padding) on a (1, C_in, H, W) input, or a linear layer
    (kernel 0) on N tokens. M = output channels / features, C_in = input channels / features."""

    set: str
    name: str
    c_in: int
    m: int
    h: int = 1  # linear: N = h tokens
    w: int = 1
    kernel: int = 0
    stride: int = 1
    padding: int = 0

    @property
    def k(self) -> int:  # GEMM reduction length
        return self.c_in * max(self.kernel, 1) ** 2

    @property
    def out_hw(self) -> tuple[int, int]:
        if self.kernel == 0:
            return self.h, self.w
        size = lambda s: (s + 2 * self.padding - self.kernel) // self.stride + 1  # noqa: E731
        return size(self.h), size(self.w)

    @property
    def n(self) -> int:  # GEMM columns: tokens, or output pixels
        oh, ow = self.out_hw
        return oh * ow

    def flops(self) -> int:
        return 2 * self.m * self.n * self.k


def gpunet_layers() -> list[Layer]:
    """Every distinct full (groups = 1) conv of GPUNet-0 at its real resolution, batch 1: the 1x1
    convs (set "gpunet") and the k x k ones (set "conv"), found by running the network once."""
    from profiler.blocks import build_network
    from profiler.nas.gpunet import load_gpunet_config

    specs = load_gpunet_config("GPUNet-0")
    net = build_network(specs)
    found: dict[tuple, Layer] = {}

    def hook(name):
        def record(mod, inputs, _out):
            _, c, h, w = inputs[0].shape
            kernel, stride, pad = mod.kernel_size[0], mod.stride[0], mod.padding[0]
            # Depthwise stays dense; C a whole number of group pairs makes K = R*S*C one too.
            if mod.groups != 1 or packed_k_problem(c):
                return
            key = (c, mod.out_channels, h, w, kernel, stride, pad)
            if key not in found:
                found[key] = Layer(
                    "gpunet" if kernel == 1 else "conv",
                    f"gpunet0.{name}",
                    c,
                    mod.out_channels,
                    h,
                    w,
                    kernel,
                    stride,
                    pad,
                )

        return record

    for name, mod in net.named_modules():
        if isinstance(mod, torch.nn.Conv2d):
            mod.register_forward_hook(hook(name))
    with torch.no_grad():
        net(torch.randn(specs[0].in_shape))
    return list(found.values())


def linear_layers() -> list[Layer]:
    bert = [(768, 3072, "ffn1"), (3072, 768, "ffn2"), (768, 768, "attn")]
    llama = [(4096, 11008, "mlp_up"), (11008, 4096, "mlp_down")]
    return [Layer("bert", f"bert.{n}@{t}", ci, co, h=t) for ci, co, n in bert for t in (128, 512)] + [
        Layer("llama", f"llama7b.{n}@{t}", ci, co, h=t) for ci, co, n in llama for t in (1, 8, 128)
    ]


def peak_gflops(dtype: str, threads: int) -> tuple[float, str]:
    """Nominal peak: 2 FMA pipes x vector lanes x 2 flops x clock x threads (bfloat16 dot products
    double the float32 rate where the CPU has them)."""
    flags, mhz = set(), 0.0
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("cpu MHz") and not mhz:
                mhz = float(line.split(":", 1)[1])
    except OSError:
        pass
    lanes = 16 if "avx512f" in flags else 8
    per_cycle = 2 * lanes * 2 * (2 if dtype == "bfloat16" and "avx512_bf16" in flags else 1)
    ghz = (mhz or 3000.0) / 1000
    return per_cycle * ghz * threads, f"{per_cycle} flop/cycle/core x {ghz:.2f} GHz x {threads}"


def make_case(layer: Layer, dtype: str, seed: int):
    gen = torch.Generator().manual_seed(seed)
    tdtype = getattr(torch, dtype)
    w = pysparse24.prune(torch.randn(layer.m, layer.k, generator=gen).to(tdtype))
    if layer.kernel == 0:
        x = torch.randn(layer.h, layer.c_in, generator=gen).to(tdtype)
        x4 = x.t().reshape(1, layer.c_in, layer.h, 1).contiguous(memory_format=torch.channels_last)
    else:
        x4 = torch.randn(1, layer.c_in, layer.h, layer.w, generator=gen).to(tdtype)
        x4 = x4.contiguous(memory_format=torch.channels_last)
        x = x4.permute(0, 2, 3, 1).reshape(-1, layer.c_in)  # a view: (H*W, C)
    return w, x, x4


def _w4(layer: Layer, w):
    """The weight as a conv kernel (M, C, k, k), channels_last; the packed weight's K order for a
    k x k conv is (ky, kx, c), the implicit-im2col order over NHWC input."""
    k = max(layer.kernel, 1)
    return w.reshape(layer.m, k, k, layer.c_in).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def sparse_kind(layer: Layer) -> str:
    return "linear" if layer.kernel <= 1 else "op conv2d"


def sparse_call(layer: Layer, threads: int):
    """fn(c, x, x4) -> (N, M) result of the sparse path for this layer."""
    if layer.kernel <= 1:
        return lambda c, x, x4: pysparse24.linear(x, c, threads=threads)
    importlib.import_module("pysparse24.torch")  # registers torch.ops.pysparse24
    k, s, p = [layer.kernel] * 2, [layer.stride] * 2, [layer.padding] * 2

    def conv(c, x, x4):  # the op takes OpenMP's thread count (torch.set_num_threads does not set it)
        y = torch.ops.pysparse24.conv2d(x4, c.values, c.meta, None, k, s, p, [1, 1])
        return y.permute(0, 2, 3, 1).reshape(layer.n, layer.m)

    return conv


def dense_calls(layer: Layer) -> dict:
    """name -> fn(w, w4, x, x4) for every dense path that applies."""
    calls = {"conv": lambda w, w4, x, x4: F.conv2d(x4, w4, stride=layer.stride, padding=layer.padding)}
    if layer.kernel <= 1:
        calls["linear"] = lambda w, w4, x, x4: F.linear(x, w)
        calls["matmul"] = lambda w, w4, x, x4: torch.matmul(x, w.t())
    return calls


def reference(layer: Layer, w, x4) -> torch.Tensor:
    """float64 (N, M) result of the pruned weight."""
    y = F.conv2d(x4.double(), _w4(layer, w).double(), stride=layer.stride, padding=layer.padding)
    return y.permute(0, 2, 3, 1).reshape(layer.n, layer.m)


def _as_nm(layer: Layer, y) -> torch.Tensor:
    return y.permute(0, 2, 3, 1).reshape(layer.n, layer.m) if y.dim() == 4 else y


def check(layer: Layer, dtype: str, c, w, x, x4, threads: int) -> None:
    """Sparse kernel into a NaN-poisoned output, then every path against float64."""
    ref = reference(layer, w, x4)
    scale = ref.abs().max().item() + 1e-30
    tol = (2.0**-6 if dtype == "bfloat16" else 1e-4) * scale

    def agree(what, y):
        err = (y.double() - ref).abs().max().item()
        if not err <= tol:  # NaN fails too
            raise RuntimeError(
                f"{layer.name} {dtype}: {what} disagrees with float64 (max error {err:.3g}, scale {scale:.3g})"
            )

    if sparse_kind(layer) == "linear":
        poisoned = torch.full((layer.n, layer.m), float("nan"), dtype=x.dtype)
        pysparse24.matmul(c, x.t(), out=poisoned.t(), threads=threads)
        agree("sparse (poisoned out)", poisoned)
    agree("sparse", sparse_call(layer, threads)(c, x, x4))
    w4 = _w4(layer, w)
    for name, fn in dense_calls(layer).items():
        agree(name, _as_nm(layer, fn(w, w4, x, x4)))


def time_layer(layer: Layer, dtype: str, cold: bool, threads: int, rounds: int, repeats: int, seed: int) -> dict:
    w, x, x4 = make_case(layer, dtype, seed)
    c = pysparse24.compress(w)
    check(layer, dtype, c, w, x, x4, threads)
    dense_weights = _copies(
        lambda i: (w, _w4(layer, w)) if i == 0 else (w.clone(), _w4(layer, w).clone()),
        2 * w.numel() * w.element_size(),
        cold,
    )
    sparse_weights = _copies(
        lambda i: c if i == 0 else pysparse24.Compressed(c.values.clone(), c.meta.clone(), c.shape, c.dtype, c.format),
        c.nbytes,
        cold,
    )
    sparse = sparse_call(layer, threads)
    calls = {"sparse": _cycling(lambda ci: sparse(ci, x, x4), sparse_weights)}
    for name, fn in dense_calls(layer).items():
        calls[name] = _cycling(lambda ww, fn=fn: fn(ww[0], ww[1], x, x4), dense_weights)
    samplers = {name: wall_clock_sampler(fn) for name, fn in calls.items()}
    samples: dict[str, list[float]] = {name: [] for name in calls}
    with torch.inference_mode():
        for sample in samplers.values():  # warm-up: one-time costs (oneDNN primitive creation)
            sample(2)
        for _ in range(rounds):
            for name, sample in samplers.items():
                samples[name] += sample(repeats)
    stats = {name: summarize(s) for name, s in samples.items()}
    med = {name: st["median_ms"] for name, st in stats.items()}
    p10 = {name: st["p10_ms"] for name, st in stats.items()}
    p90 = {name: st["p90_ms"] for name, st in stats.items()}
    best = min((n for n in med if n != "sparse"), key=med.get)
    return {
        "layer": asdict(layer),
        "M": layer.m,
        "K": layer.k,
        "N": layer.n,
        "dtype": dtype,
        "cache": "cold" if cold else "warm",
        "sparse_kind": sparse_kind(layer),
        "median_ms": med,
        "p10_ms": p10,
        "p90_ms": p90,
        "best_dense": best,
        "ratio": med[best] / med["sparse"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--set", nargs="+", default=["gpunet", "bert", "llama", "conv"], choices=["gpunet", "bert", "llama", "conv"]
    )
    parser.add_argument("--dtype", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--cache", nargs="+", default=["warm", "cold"], choices=["warm", "cold"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--only", default="", help="substring of layer names to keep")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    torch.set_num_threads(args.threads)
    layers = [layer for layer in gpunet_layers() + linear_layers() if layer.set in args.set and args.only in layer.name]
    load = os.getloadavg()[0]
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__} ({args.threads} threads), "
        f"pysparse24 ISA {pysparse24._ext.C.active_isa()}, seed {seed}, load average {load:.1f}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"
    )
    results = []
    header = (
        "| layer | dtype | cache | MxNxK | sparse ms | linear | conv | matmul | best dense GFLOP/s (% peak) "
        "| sparse GFLOP/s (% peak) | dense/sparse |"
    )
    print(header)
    print("|" + "---|" * 11)
    for dtype in args.dtype:
        peak, peak_note = peak_gflops(dtype, args.threads)
        for layer in layers:
            for cache in args.cache:
                r = time_layer(layer, dtype, cache == "cold", args.threads, args.rounds, args.repeats, seed)
                r["peak_gflops"], r["peak_note"] = peak, peak_note
                results.append(r)
                med = r["median_ms"]
                gf = lambda ms: layer.flops() / (ms * 1e-3) / 1e9  # noqa: E731
                best = med[r["best_dense"]]
                cells = [f"{med[p]:.3f}" if p in med else "-" for p in PATHS_DENSE]
                kind = "" if r["sparse_kind"] == "linear" else f" ({r['sparse_kind']})"
                print(
                    f"| {layer.name} | {dtype} | {cache} | {layer.m}x{layer.n}x{layer.k} | {med['sparse']:.3f}{kind} | "
                    + " | ".join(cells)
                    + f" | {gf(best):.0f} ({100 * gf(best) / peak:.0f}%) | {gf(med['sparse']):.0f} "
                    f"({100 * gf(med['sparse']) / peak:.0f}%) | {r['ratio']:.2f}x |",
                    flush=True,
                )
    print(
        f"# peak: float32 {peak_gflops('float32', args.threads)[1]}; bfloat16 "
        f"{peak_gflops('bfloat16', args.threads)[1]}; load average at the end {os.getloadavg()[0]:.1f}"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"seed": seed, "threads": args.threads, "results": results}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
