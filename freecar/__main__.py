"""Allow `python -m freecar`."""

import sys

from freecar.cli import main

sys.exit(main())
