"""``python -m agritrace``: the same as the ``agritrace`` command."""

from __future__ import annotations

import sys

from agritrace.cli import main

sys.exit(main())
