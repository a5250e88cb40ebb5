"""``python -m enn.cli``: the ``enn`` command."""

import sys

from . import main

sys.exit(main())
