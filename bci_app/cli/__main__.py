"""``python -m bci_app.cli``: the same as the ``bci-app`` command."""

import sys

from bci_app.cli.main import main

sys.exit(main())
