"""NVDEC benchmark (``asyncdecode bench``) with this repository's data and results folders.

    python benchmarks/nvdec_bench.py [--seconds 4] [--quick] [--sessions N] [...]

Videos are made under benchmarks/data/nvdec if absent; results go to benchmarks/results/nvdec_bench.*.
The benchmark is :mod:`asyncdecode.bench`; docs/bench.md says what it measures and how to read it.
"""

import sys
from pathlib import Path

from asyncdecode.bench import main

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    sys.exit(main(data=HERE / "data" / "nvdec", out=HERE / "results"))
