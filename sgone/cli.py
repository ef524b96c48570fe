"""Command-line entry point: one sub-command per job, each in `sgone/commands/<name>.py`.

Each command module defines `register(subparsers)` (adds its parser and sets `func`) and keeps
heavy imports inside its run function so that `sgone --help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from sgone.errors import SgoneError

COMMANDS = ("segment", "demo", "data", "train", "evaluate", "video")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sgone", description="One-shot and few-shot semantic segmentation.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"sgone.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"sgone.commands.{name}":
                continue  # command not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except SgoneError as exc:
        print(f"sgone {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sgone {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
