"""The ``maxk`` command: a thin layer over the Python API. Bad input -> one line on stderr, exit 2."""
from __future__ import annotations

import json
import sys

import click

from .errors import MaxkError

MODEL_HELP = "a maxk .safetensors file, a TransformerLens .pth checkpoint, or 'default' (the shipped model)"


class _Group(click.Group):
    """Turn MaxkError (and a few OS errors) into one line and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MaxkError as e:
            click.echo(f"maxk: error: {e}", err=True)
            sys.exit(2)
        except (OSError, MemoryError) as e:
            click.echo(f"maxk: error: {e}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Prove and heuristically explain how well a 1-layer transformer computes max of k integers."""


def run(argv: list[str] | None = None) -> None:
    """Entry point of the ``maxk`` command: usage errors too become one line and exit code 2."""
    try:
        rv = main.main(args=argv, prog_name="maxk", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("maxk: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        click.echo(f"maxk: error: {e.format_message()}", err=True)
        sys.exit(2)
    except MaxkError as e:
        click.echo(f"maxk: error: {e}", err=True)
        sys.exit(2)
    sys.exit(rv if isinstance(rv, int) else 0)


def echo_json(obj) -> None:
    """Print one JSON object on stdout."""
    click.echo(json.dumps(obj, indent=None, sort_keys=True, default=float))


def progress_bar(description: str, total: int, enabled: bool = True):
    """A rich progress bar on stderr (silent when not a terminal unless forced). Returns
    (context manager, advance(done, total) callback)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = Console(stderr=True)
    prog = Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not enabled or not console.is_terminal,
        transient=True,
    )
    task = prog.add_task(description, total=total)

    def update(done: int, _total: int | None = None) -> None:
        prog.update(task, completed=done)

    return prog, update


# Subcommands live in their own modules; each registers itself on ``main``.
from . import cli_core  # noqa: E402,F401
from . import cli_prove  # noqa: E402,F401
from . import cli_estimate_bench  # noqa: E402,F401
from . import cli_estimate  # noqa: E402,F401
