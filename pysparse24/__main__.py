import sys

from pysparse24.cli import main

sys.exit(main())
