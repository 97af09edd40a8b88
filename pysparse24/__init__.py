"""pysparse24: NVIDIA 2:4 structured sparsity from Python."""
__version__ = "0.1.0"
