"""vaegan-prep: the dataset tool's command line."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vaegan-prep", description="Prepare image datasets.")
    p.add_subparsers(dest="cmd", required=True)
    p.parse_args(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
