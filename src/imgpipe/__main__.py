"""Allow ``python -m imgpipe``."""

import sys

from imgpipe.cli import main

sys.exit(main())
