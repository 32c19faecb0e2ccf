"""`python -m nobill.cli`: what `serve --processes N` starts its children with."""

import sys

from nobill.cli import main

sys.exit(main())
