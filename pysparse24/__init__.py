"""pysparse24: NVIDIA 2:4 structured sparsity from Python.

    w = pysparse24.prune(w)                  # keep the 2 largest |w| of every 4 along the reduction dim
    c = pysparse24.compress(w)               # values + 2-bit index metadata (format="packed" | "cutlass")
    pysparse24.decompress(c)                 # bit-exact dense weight
"""
from pysparse24.compress import compress, decompress
from pysparse24.formats import FORMATS, Compressed
from pysparse24.masks import is_sparse, mask, mask_2d, prune

__version__ = "0.1.0"
__all__ = ["Compressed", "FORMATS", "compress", "decompress", "is_sparse", "mask", "mask_2d", "prune"]
