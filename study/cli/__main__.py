"""`python -m study.cli`: the `taugate` command line."""

import sys

from study.cli.main import main

sys.exit(main())
