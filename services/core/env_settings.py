"""Settings dataclasses read from environment variables: one rule for every service.

    values = read_env(Settings, "MODELPORT_PLATE_")   # {"max_images": 4, ...} for what is set

A field's default decides how its variable is parsed: int, float, str, bool (1/true/yes/on,
0/false/no/off) or a tuple of strings (comma-separated). Unset or empty variables are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import MISSING, fields
from typing import Any

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def read_env(settings_class: type, prefix: str, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(settings_class):
        name = f"{prefix}{f.name.upper()}"
        raw = environ.get(name)
        if not raw:
            continue
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            raise TypeError(f"{settings_class.__name__}.{f.name} needs a default to be read from {name}")
        kind = type(default)
        try:
            if kind is bool:
                if raw.lower() not in _TRUE + _FALSE:
                    raise ValueError
                values[f.name] = raw.lower() in _TRUE
            elif kind is tuple:
                values[f.name] = tuple(part.strip() for part in raw.split(",") if part.strip())
            else:
                values[f.name] = kind(raw)
        except ValueError:
            raise ValueError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
    return values
