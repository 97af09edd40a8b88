"""pysparse24: NVIDIA 2:4 structured sparsity from Python.

w = pysparse24.prune(w)                  # keep the 2 largest |w| of every 4 along the reduction dim
c = pysparse24.compress(w)               # values + 2-bit index metadata (format="packed" | "cutlass")
pysparse24.decompress(c)                 # bit-exact dense weight
pysparse24.matmul(c, x)                  # decompress(c) @ x on the CPU, from values + metadata
"""

from pysparse24.compress import compress, decompress
from pysparse24.formats import FORMATS, Compressed
from pysparse24.masks import is_sparse, mask, mask_2d, prune
from pysparse24.matmul import linear, matmul

__version__ = "0.1.0"
__all__ = [
    "Compressed",
    "FORMATS",
    "compress",
    "decompress",
    "is_sparse",
    "linear",
    "mask",
    "mask_2d",
    "matmul",
    "prune",
]
