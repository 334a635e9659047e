"""Fault suite: run every part of issue 13's suite and print all their tables.

A thin runner over the two scripts that do the work:

- ``scripts/faults_streams.py``: ``outages`` (1), ``soak`` (3) and ``bad`` streams (4);
- ``scripts/faults_files.py``: killed recordings (2), bad files and bundles (5), outputs (6).

Each part runs in its own process, one after the other; ``--long`` is passed to every part (the
soak then runs for an hour: ``--soak-minutes 60``). The exit status is 1 if any part failed.

    python scripts/faults.py [--long] [--parts outages soak bad-streams files]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
PARTS = ("outages", "soak", "bad-streams", "files")


def commands(long: bool) -> dict[str, list[str]]:
    """The command line of each part."""
    flag = ["--long"] if long else []
    streams = [sys.executable, str(SCRIPTS / "faults_streams.py")]
    return {
        "outages": [*streams, "outages", *flag],
        "soak": [*streams, "soak", *(["--soak-minutes", "60"] if long else [])],
        "bad-streams": [*streams, "bad", *flag],
        "files": [sys.executable, str(SCRIPTS / "faults_files.py"), *flag],
    }


def main(argv: list[str] | None = None) -> int:
    """Run the chosen parts; their tables go to stdout as they come."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", action="store_true", help="the long version of every part")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    args = parser.parse_args(argv)
    failed = []
    for part, command in commands(args.long).items():
        if part not in args.parts:
            continue
        print(f"\n######## {part}: {' '.join(command[1:])}", flush=True)
        started = time.monotonic()
        done = subprocess.run(command, cwd=SCRIPTS.parent, check=False)
        print(f"######## {part}: exit {done.returncode} in {time.monotonic() - started:.0f} s")
        if done.returncode != 0:
            failed.append(part)
    print(f"\nParts failed: {', '.join(failed) or 'none'}")
    return int(bool(failed))


if __name__ == "__main__":
    sys.exit(main())
