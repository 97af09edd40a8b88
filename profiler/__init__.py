"""profiler: per-layer latency lookup tables for hardware-aware architecture search."""
