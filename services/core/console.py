"""Terminal output for the `modelport` commands (rich), shared by services/ and finetune/."""

from __future__ import annotations

import sys
from typing import NoReturn

from rich.console import Console

# Piped output (scripts, CI logs) gets wide lines instead of 80-column folding.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def fail(what: object) -> NoReturn:
    """Print an error that says what to fix, and exit 1 (no traceback: it is the user's input)."""
    err_console.print(f"[red]error:[/red] {what}", soft_wrap=True)
    sys.exit(1)
