"""Per-layer and end-to-end latency of a published GPUNet on every backend available here.

    python benchmarks/bench_profiler_backends.py --resolution 224      # GPUNet-0 at 224 px
    python benchmarks/bench_profiler_backends.py --model GPUNet-0 --resolution 320 --precision fp16

Prints, per backend: the median (p10-p90) of a few of the network's blocks, the plain sum of all its
blocks, and the whole network end to end, so the per-call overhead a plain sum double-counts is
visible per runtime. Backends that cannot run here (no GPU, no TensorRT) are listed with the reason.
On a GPU machine it also exercises torch's CUDA-event timing and, where installed, TensorRT.
"""

from __future__ import annotations

import argparse
import sys

from profiler.backends import BackendUnavailable, get_backend
from profiler.blocks import output_shape
from profiler.nas.gpunet import load_gpunet_config


def at_resolution(network, resolution: int):
    """The same blocks on another input resolution (shapes re-chained block by block)."""
    out, shape = [], (network[0].batch, network[0].in_shape[1], resolution, resolution)
    for spec in network:
        out.append(spec.replace(in_shape=shape))
        shape = output_shape(out[-1])
    return out


def candidates(precision: str):
    """(label, backend name, options) for every backend worth trying at this precision."""
    yield "onnxruntime cpu", "onnxruntime", {"device": "cpu"}
    yield "onnxruntime cuda", "onnxruntime", {"device": "cuda"}
    if precision != "int8":
        yield "torch cpu", "torch", {"device": "cpu"}
        yield "torch cuda", "torch", {"device": "cuda"}
    yield "tensorrt", "tensorrt", {}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="GPUNet-0", help="published GPUNet name or config JSON")
    p.add_argument("--resolution", type=int, help="input resolution (default: the model's own)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"))
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    p.add_argument("--layers", type=int, default=4, help="blocks to show one by one (default 4)")
    args = p.parse_args(argv)

    network = load_gpunet_config(args.model, precision=args.precision)
    if args.resolution:
        network = at_resolution(network, args.resolution)
    print(f"{args.model} at {network[0].in_shape[2]} px, {args.precision}, batch 1: {len(network)} blocks")
    for label, name, options in candidates(args.precision):
        if name != "tensorrt":
            options = {**options, "threads": args.threads}
        try:
            backend = get_backend(name, precision=args.precision, **options)
        except (BackendUnavailable, ValueError) as exc:
            print(f"\n{label}: not run ({exc})")
            continue
        ctx = backend.context()
        print(f"\n{label}: {ctx.get('device')} | {ctx.get('runtime')} | threads {ctx.get('threads', '-')}")
        total = 0.0
        for i, spec in enumerate(network):
            stats = backend.measure(spec)
            total += stats.median_ms
            if i < args.layers:
                print(
                    f"  {spec.key():<90} {stats.median_ms:9.4f} ms ({stats.p10_ms:.4f}-{stats.p90_ms:.4f}, n={stats.n})"
                )
        e2e = backend.measure_network(network)
        print(
            f"  plain sum of {len(network)} blocks: {total:.4f} ms | end to end: {e2e.median_ms:.4f} ms "
            f"({e2e.p10_ms:.4f}-{e2e.p90_ms:.4f}, n={e2e.n}) | sum / e2e = {total / e2e.median_ms:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
