"""Command-line entry point: one sub-command per job, each in `sgone/commands/<name>.py`.

Each command module defines `register(subparsers)` (adds its parser and sets `func`) and keeps
heavy imports inside its run function so that `sgone --help` stays fast. Every sub-command's
help shows the defaults (`HelpFormatter`) and ends with an example: the parser's own epilog, or
the command's line in `EXAMPLES`.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from sgone.errors import SgoneError, SgoneWarning

COMMANDS = ("segment", "demo", "data", "train", "evaluate", "video", "app", "export", "label")

# Examples for commands whose parser sets no epilog of its own.
EXAMPLES = {
    "data": "sgone data --dataset pascal --root VOC2012 --fold 0 --output episodes.png",
    "train": "sgone train --dataset synthetic --fold 0 --steps 2000 --output runs/synthetic-fold0",
    "evaluate": "sgone evaluate --model prototype-mobilenet_v2 --dataset synthetic --fold all --output runs/eval",
    "video": "sgone video --input clip.mp4 --support-mask first_frame_mask.png --output out/",
    "app": "sgone app --port 7860",
}


class HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default and keeps text with line breaks (the examples) as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or default is None or default is False or default == argparse.SUPPRESS
                or "%(default)" in text or ("default" in text.lower() and str(default) in text)):
            return text
        return f"{text} (default: %(default)s)"

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


class _CommandParser(argparse.ArgumentParser):
    """Sub-command parsers: `HelpFormatter` unless the command asks for another."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    from sgone import __version__

    parser = argparse.ArgumentParser(prog="sgone", description="One-shot and few-shot semantic segmentation.",
                                     formatter_class=HelpFormatter,
                                     epilog="example:\n  sgone demo\n\n`sgone COMMAND --help` shows a command's "
                                            "options, their defaults and an example.")
    parser.add_argument("--version", action="version", version=f"sgone {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"sgone.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"sgone.commands.{name}":
                continue  # command not built yet
            raise
        module.register(sub)
        command = sub.choices.get(name)
        if command is not None and not command.epilog and name in EXAMPLES:
            command.epilog = f"example:\n  {EXAMPLES[name]}"
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2

    def one_line(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, SgoneWarning):  # a note on the input, not on the code: no file and line
            print(f"sgone {args.command}: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    show, warnings.showwarning = warnings.showwarning, one_line
    try:
        result = args.func(args)
    except SgoneError as exc:
        print(f"sgone {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sgone {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = show
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
