"""Where GEMM cases come from: a sweep, an explicit list, or the layers of a model.

A Linear layer (out, in) is the GEMM M=out, K=in; a Conv is M=out_channels, K=in_channels/groups *
kernel area (im2col); N (tokens, or batch x output pixels) comes from the --n list. Layers whose K
is not a multiple of 8 (the packed format's group of two metadata nibbles) cannot be 2:4 compressed
and are listed as skipped.
"""

from __future__ import annotations

import re
from itertools import product
from pathlib import Path

from pysparse24.bench.gemm import GemmCase
from pysparse24.groups import PACKED_K_MULTIPLE, packed_k_problem

DEFAULT_MK = [(4096, 4096), (11008, 4096)]
DEFAULT_N = [1, 8, 128, 512]


def sweep(ms, ns, ks, dtypes) -> list[GemmCase]:
    return [GemmCase(m, n, k, d) for d, m, k, n in product(dtypes, ms, ks, ns)]


def parse_shapes(text: str, dtypes) -> list[GemmCase]:
    """'4096x8x4096,11008x1x4096' (M x N x K) -> cases for every dtype."""
    cases = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        match = re.fullmatch(r"(\d+)[xX](\d+)[xX](\d+)", item)
        if not match:
            raise ValueError(f"bad shape {item!r}: expected MxNxK, e.g. 4096x8x4096")
        m, n, k = (int(g) for g in match.groups())
        cases += [GemmCase(m, n, k, d) for d in dtypes]
    return cases


def model_layers(source: str) -> list[tuple[str, int, int]]:
    """(layer name, M, K) of every Linear/Conv weight in an ONNX file (*.onnx) or a torch model
    given as 'package.module:attribute' (an nn.Module, or a callable returning one). Torch models
    are imported, never unpickled."""
    if source.endswith(".onnx"):
        return _onnx_layers(Path(source))
    if ":" in source:
        return _torch_layers(source)
    raise ValueError(f"model source {source!r}: give an .onnx file or a torch model as 'module:attribute'")


def model_cases(source: str, ns, dtypes) -> tuple[list[GemmCase], list[str]]:
    """Cases for each distinct (M, K) of the model (named after its first layer), and the skipped layers."""
    cases, skipped, seen = [], [], set()
    for name, m, k in model_layers(source):
        if packed_k_problem(k):
            skipped.append(f"{name} (M={m}, K={k}: K not a multiple of {PACKED_K_MULTIPLE})")
            continue
        if (m, k) in seen:
            continue
        seen.add((m, k))
        cases += [GemmCase(m, n, k, d, layer=name) for d in dtypes for n in ns]
    return cases, skipped


def _torch_layers(spec: str) -> list[tuple[str, int, int]]:
    import torch

    from pysparse24._cli import resolve_reference

    obj = resolve_reference(spec, "model")
    model = obj if isinstance(obj, torch.nn.Module) else obj()
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{spec} is not an nn.Module nor a callable returning one")
    layers = []
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            layers.append((name, mod.out_features, mod.in_features))
        elif isinstance(mod, torch.nn.modules.conv._ConvNd):
            w = mod.weight
            layers.append((name, w.shape[0], int(w[0].numel())))
    return layers


def _onnx_layers(path: Path) -> list[tuple[str, int, int]]:
    import onnx

    if not path.exists():
        raise FileNotFoundError(f"no ONNX file at {path}")
    graph = onnx.load(str(path), load_external_data=False).graph
    dims = {init.name: list(init.dims) for init in graph.initializer}
    layers = []
    for node in graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in dims:
            w = dims[node.input[1]]  # (out, in/groups, *kernel)
            k = 1
            for d in w[1:]:
                k *= d
            layers.append((node.name or node.output[0], w[0], k))
        elif node.op_type in ("Gemm", "MatMul") and len(node.input) > 1 and node.input[1] in dims:
            w = dims[node.input[1]]
            if len(w) != 2:
                continue
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            # y = x @ B: B is (K, M) unless Gemm's transB stores it as (M, K).
            m, k = (w[0], w[1]) if trans_b else (w[1], w[0])
            layers.append((node.name or node.output[0], m, k))
    return layers
