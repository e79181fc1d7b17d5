"""``python -m calibench.cli``: the ``calibench`` command."""

import sys

from calibench.cli.commands import main

sys.exit(main())
