"""`python -m mindone.transformers ...` runs the `mindone-transformers` command line."""

import sys

from .cli import main

sys.exit(main())
