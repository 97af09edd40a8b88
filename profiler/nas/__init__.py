"""profiler.nas: the latency table's consumer, following GPUNet's two phases.

Phase 1: sample a search space (Sobol), price every candidate from the latency table (vectorized
calibrated sum of its blocks' entries) and bucket candidates into latency sub-spaces.
Phase 2: inside one sub-space, Bayesian optimization (Optuna's GP sampler) of a pluggable score.
"""

from .space import SearchSpace, Stage, load_space

__all__ = ["SearchSpace", "Stage", "load_space"]
