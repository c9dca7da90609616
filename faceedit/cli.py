"""The `faceedit` console command.

Parses arguments and hands each subcommand to the library, to `workers/` or to `ui/`. Ray and
Gradio are imported only inside the subcommands that need them, so e.g. `faceedit edit` starts
without loading either. Options that configure a library dataclass are generated from its fields
(`add_dataclass_args`), so a new field needs no second edit here.

Each subcommand is a pair: `_add_<name>(sub)` declares its arguments, `_run_<name>(args)` runs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any


# ---------------------------------------------------------------------------- dataclass <-> argparse

def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, prefix: str = "",
                       exclude: tuple[str, ...] = ()) -> None:
    """One `--field-name` option per field of the dataclass `cls`, its default in the help text.

    A field's help is the `help` entry of its metadata: `field(default=..., metadata={"help": ...})`.
    Booleans become `--x / --no-x`; tuples take several values.
    """
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(f"{cls.__name__} ({cls.__module__})")
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        flag = "--" + (prefix + f.name).replace("_", "-")
        hint = hints[f.name]
        help_text = f.metadata.get("help", "")
        help_text = f"{help_text} (default: {default})" if help_text else f"default: {default}"
        kwargs: dict[str, Any] = {"dest": prefix + f.name, "default": default, "help": help_text}
        origin, type_args = typing.get_origin(hint), typing.get_args(hint)
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is tuple:
            kwargs.update(nargs="+", type=type_args[0])
        elif origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
            inner = [a for a in type_args if a is not type(None)][0]
            kwargs["type"] = inner
        elif origin is typing.Literal:
            kwargs.update(choices=type_args, type=type(type_args[0]))
        else:
            kwargs["type"] = hint
        group.add_argument(flag, **kwargs)


def dataclass_from_args(cls: type, args: argparse.Namespace, prefix: str = "", **overrides: Any):
    """Build `cls` from the options `add_dataclass_args` declared (tuples come back as tuples)."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        if f.init and hasattr(args, key):
            value = getattr(args, key)
            values[f.name] = tuple(value) if isinstance(value, list) else value
    values.update(overrides)
    return cls(**values)


# ---------------------------------------------------------------------------- subcommands
# A subcommand NAME is a line in COMMANDS plus two functions in this module:
# `_add_NAME(parser)` declares its options and `_run_NAME(args)` runs it (returns an exit code).

COMMANDS: dict[str, str] = {
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="faceedit",
        description="Edit faces with attribute vectors in a VAE's latent space, and audit the edits.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        globals()[f"_add_{name}"](p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run = globals()[f"_run_{args.command}"]
    try:
        return int(run(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        # Library errors already name the file, field or value: show them without a traceback.
        print(f"faceedit {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
