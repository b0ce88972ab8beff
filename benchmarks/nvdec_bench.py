"""NVDEC benchmark (``asyncdecode bench``) with this repository's data and results folders.

    python benchmarks/nvdec_bench.py [--seconds 4] [--quick] [--sessions N]

Videos are made under benchmarks/data/nvdec if absent; results go to benchmarks/results/nvdec_bench.*.
See asyncdecode/_nvdec_bench.py for what is measured.
"""

import sys
from pathlib import Path

from asyncdecode._nvdec_bench import main

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    sys.exit(main(data=HERE / "data" / "nvdec", out=HERE / "results"))
