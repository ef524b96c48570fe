"""The `sgone` command line as a whole: --version, and every sub-command's --help (defaults shown,
an example that parses), --output and --device auto on every command of issue #10."""
from __future__ import annotations

import argparse
import shlex

import pytest

from sgone import __version__
from sgone.cli import build_parser, main

# the sub-commands that promise --output and --device auto (data runs no model: no --device)
NAMED = ("segment", "demo", "data", "train", "evaluate", "video")


def commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


ALL = sorted(commands())


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings}


def test_every_named_command_is_registered():
    assert set(NAMED) <= set(ALL)


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"sgone {__version__}"


@pytest.mark.parametrize("name", ALL)
def test_help_shows_every_default_and_an_example_that_parses(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: sgone {name}")
    # an example, kept on its own line, that the parser accepts
    examples = [line.strip() for line in text.split("example:", 1)[-1].splitlines()
                if line.strip().startswith(f"sgone {name}")]
    assert "example:" in text and examples, text
    for example in examples:
        args = build_parser().parse_args(shlex.split(example)[1:])
        assert args.command == name
    # every option with a default says what it is
    parser = commands()[name]
    formatter = parser._get_formatter()
    for action in parser._actions:
        default = action.default
        if (not action.option_strings or action.help == argparse.SUPPRESS or default is None or default is False
                or default == argparse.SUPPRESS):
            continue
        shown = " ".join(formatter._expand_help(action).split())
        assert "default" in shown and str(default) in shown, (name, action.option_strings, shown)
        assert " ".join(shown.split()[-3:]) in " ".join(text.split())  # and the help prints it


@pytest.mark.parametrize("name", NAMED)
def test_output_flag_on_every_command(name):
    assert "--output" in options(commands()[name])


@pytest.mark.parametrize("name", ["train", "evaluate"])
def test_out_is_kept_as_an_alias_of_output(name):
    parser = commands()[name]
    for flag in ("--out", "--output"):
        args, _ = parser.parse_known_args([flag, "some/dir"])
        assert args.out == "some/dir"


def test_data_output_is_the_grid_png():
    parser = commands()["data"]
    for flag in ("--output", "--grid"):
        assert parser.parse_args(["--dataset", "synthetic", flag, "g.png"]).grid == "g.png"


@pytest.mark.parametrize("name", [n for n in NAMED if n != "data"] + ["app"])
def test_device_defaults_to_auto(name):
    assert options(commands()[name])["--device"].default == "auto"


@pytest.mark.parametrize("name", ["segment", "demo"])
def test_weights_flag_for_user_supplied_imagenet_files(name):
    action = options(commands()[name])["--weights"]
    assert action.default is None and "vgg16" in action.help and "resnet50" in action.help


def test_max_pixels_help_states_the_readers_limit():
    from sgone.io import MAX_PIXELS

    assert f"{MAX_PIXELS:,}" in options(commands()["segment"])["--max-pixels"].help


# one flag name per idea in every command; the old names still parse but are not in --help
CANONICAL = {  # command -> (canonical flag, old flag, value, the namespace attribute)
    "segment": [("--input", "--query", ["q.jpg"], "query"), ("--on-bad-input", "--on-bad-query", "skip", "on_bad_input")],
    "video": [("--support-mask", "--mask", "m.png", "mask"), ("--on-bad-input", "--on-bad-frame", "skip", "on_bad_input")],
}


REQUIRED = {  # command -> {namespace attribute: its required flag and value}
    "segment": {"support": ["--support", "s.jpg"], "support_mask": ["--support-mask", "s.png"],
                "output": ["--output", "out"], "query": ["--input", "q.jpg"]},
    "video": {"input": ["--input", "clip.mp4"], "output": ["--output", "out"], "mask": ["--support-mask", "m.png"]},
}


@pytest.mark.parametrize("name", sorted(CANONICAL))
def test_same_flag_names_old_ones_hidden_aliases(name, capsys):
    parser = commands()[name]
    with pytest.raises(SystemExit):
        main([name, "--help"])
    text = capsys.readouterr().out
    for new, old, value, dest in CANONICAL[name]:
        assert new in text and old not in text.replace(new, ""), (name, old)
        for flag in (new, old):
            argv = [flag, *value] if isinstance(value, list) else [flag, value]
            others = [a for key, flag in REQUIRED[name].items() if key != dest for a in flag]
            args = parser.parse_args(others + argv)
            assert getattr(args, dest) == value, (name, flag)
    assert "--on-bad-input" in options(commands()["segment"]) and "--support-mask" in options(commands()["segment"])
