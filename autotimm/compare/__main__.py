"""`python -m autotimm.compare DIR [--metric M] [--out DIR] [--no-plot]`."""

import sys

from autotimm.compare.cli import main

sys.exit(main())
