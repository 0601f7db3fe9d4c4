"""The ``mmie`` command line.

Subcommands:

* ``mmie version`` — print the installed version and the versions of key dependencies.

The CLI is the only place in mmie that configures logging handlers or seeds global RNGs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from mmie._version import __version__

logger = logging.getLogger(__name__)


def _cmd_version(args: argparse.Namespace) -> int:
    from importlib import metadata

    print(f"mmie {__version__}")
    if args.verbose:
        for dist in ("torch", "transformers", "peft", "numpy", "scipy", "safetensors"):
            try:
                print(f"  {dist} {metadata.version(dist)}")
            except metadata.PackageNotFoundError:
                print(f"  {dist} (not installed)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``mmie`` command (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="mmie",
        description=(
            "Multilingual machine-unlearning interventions and their evaluation on "
            "Hugging Face causal language models."
        ),
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="verbosity of mmie's log messages on stderr (default: INFO)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p_version = sub.add_parser("version", help="print the installed mmie version")
    p_version.add_argument(
        "-v", "--verbose", action="store_true", help="also print key dependency versions"
    )
    p_version.set_defaults(func=_cmd_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mmie`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return int(args.func(args))
