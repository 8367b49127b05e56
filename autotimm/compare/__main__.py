"""`python -m autotimm.compare DIR [--metric M] [--out DIR] [--storage URL] [--no-plot]`."""

import sys

from autotimm.compare.cli import main

sys.exit(main())
