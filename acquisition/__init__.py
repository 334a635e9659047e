"""LSL acquisition: stream sources, marker sources, outlets, recorder, player and simulator.

This layer knows nothing of decoders or Qt; ``bci_app`` builds on it.
"""

import os
from pathlib import Path

# liblsl prints INFO lines to stderr at start-up; keep errors only, unless the user set a config.
os.environ.setdefault("LSLAPICFG", str(Path(__file__).parent / "data" / "lsl_api.cfg"))
