"""`python -m nobill.sandbox [--host 127.0.0.1] [--port 12111] [--state-file PATH]`"""

import sys

from nobill.sandbox.cli import main

sys.exit(main())
