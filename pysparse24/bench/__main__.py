"""`python -m pysparse24.bench gemm ...` (the same as `pysparse24 bench gemm ...`)."""

import sys

from pysparse24.bench.cli import main

sys.exit(main())
