"""Config dataclasses and JSON, converted one way everywhere: JSON has no tuples, so a tuple field
(channels, attributes, strengths...) is a list in config.json, bank.json, stamps and run names, and
becomes a tuple again when the dataclass is rebuilt (from a file or from argparse's lists)."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as JSON values (tuples become lists)."""
    return {f.name: list(v) if isinstance(v := getattr(config, f.name), tuple) else v
            for f in dataclasses.fields(config)}


def field_values(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` with every list given for a tuple field of `cls` made a tuple (other keys as given)."""
    hints = typing.get_type_hints(cls)
    return {k: tuple(v) if isinstance(v, list) and k in hints and typing.get_origin(hints[k]) is tuple
            else v for k, v in values.items()}


def config_from_dict(cls: type, values: Mapping[str, Any], where: str = "config", *,
                     strict: bool = True, error: type[Exception] = ValueError) -> Any:
    """Rebuild a config dataclass from JSON values. strict: an unknown or missing field is an
    error; otherwise unknown keys are ignored and missing fields take their defaults. Errors (and a
    bad value) are `error`, naming `where`."""
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown, missing = sorted(set(values) - fields), sorted(fields - set(values))
    if strict and (unknown or missing):
        raise error(f"{where}: fields do not match {cls.__name__}: unknown {unknown}, "
                    f"missing {missing}")
    try:
        return cls(**field_values(cls, {k: v for k, v in values.items() if k in fields}))
    except (TypeError, ValueError) as e:
        raise error(f"{where}: {e}") from e
