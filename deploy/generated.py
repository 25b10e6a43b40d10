"""The one command line of deploy/'s generated, checked-in files.

``deploy.template`` (the Flex Template metadata), ``deploy.transforms`` (the transform-name
snapshot) and ``deploy.option_docs`` (the option table in docs/configuration.md) each derive a
file from the code. Each takes ``--write`` (regenerate it), ``--check`` (exit 1 when the checked-in
copy is stale, for CI) and, where it makes sense, ``--print``; this module is that command line once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


def generated_file_main(
    argv: Sequence[str] | None,
    *,
    description: str | None,
    path: Path,
    render: Callable[[str], str],
    check_help: str,
    stale: str,
    fresh: str,
    print_help: str | None = None,
) -> int:
    """Run the command for ``path``; ``render`` turns the current text ('' when missing) into the wanted text."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help=f"write {path}")
    group.add_argument("--check", action="store_true", help=check_help)
    if print_help:
        group.add_argument("--print", action="store_true", help=print_help)
    args = parser.parse_args(argv)
    current = path.read_text() if path.exists() else ""
    text = render(current)
    if getattr(args, "print", False):
        sys.stdout.write(text)
        return 0
    if args.write:
        path.write_text(text)
        print(f"wrote {path}")
        return 0
    if current != text:
        print(stale, file=sys.stderr)
        return 1
    print(fresh)
    return 0
