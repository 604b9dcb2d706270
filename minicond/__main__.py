"""``python -m minicond``: the same command as the ``minicond`` console script."""

import sys

from .cli import main

sys.exit(main())
