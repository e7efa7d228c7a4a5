"""The ``maxk`` click group, its error handling, and what the subcommand modules share.

Every subcommand module (``core``, ``prove``, ``estimate``, ``estimate_bench``) imports from here
only and registers its commands on ``main``; ``maxk.cli`` imports them all. Bad input -> one line
``maxk: error: ...`` on stderr and exit code 2.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from ..distributions import UNIFORM, distribution_names
from ..errors import MaxkError
from ..registry import Registry

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
    from rich.console import Console  # rich only when a command runs: keeps `maxk --help` fast
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = Console(stderr=True)
    prog = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled or not console.is_terminal,
        transient=True,
    )
    task = prog.add_task(description, total=total)

    def update(done: int, _total: int | None = None) -> None:
        prog.update(task, completed=done)

    return prog, update


def dist_option(help: str | None = None, *, choice: bool = False) -> Callable[[Any], Any]:
    """The ``--dist`` option over the registered distributions (``maxk.distributions``), default
    uniform. As free text (the command resolves it: an unknown name is a MaxkError naming the
    choices), or with ``choice`` as a ``click.Choice``."""
    names = distribution_names()
    if choice:
        return click.option("--dist", type=click.Choice(names), default=UNIFORM.name, show_default=True, help=help)
    return click.option(
        "--dist", default=UNIFORM.name, show_default=True, help=help or f"input distribution: {', '.join(names)}"
    )


def method_lines(registry: Registry, flags: dict[str, str] | None = None) -> list[str]:
    """What ``--list`` prints for a registry: per method, its name, cost and summary on one line,
    then (indented) its declared options with their defaults, each with the command-line flag that
    sets it if ``flags`` (flag -> option) names one, and the inputs it refuses."""
    flag_of = {opt: flag for flag, opt in (flags or {}).items()}
    lines = []
    for name, m in registry.items():
        lines.append(f"{name:24s} {m.cost:16s} {m.summary}")
        if m.options:
            opts = ", ".join(f"{k}={v!r}" + (f" ({flag_of[k]})" if k in flag_of else "") for k, v in m.options.items())
            lines.append(f"    options: {opts}")
        for r in m.refuses:
            lines.append(f"    refuses: {r.reason}")
    return lines


def list_option(registry: Registry, help: str, flags: dict[str, str] | None = None) -> Callable[[Any], Any]:
    """An eager ``--list`` flag: print ``method_lines(registry, flags)`` and exit 0, before the
    command's required arguments are checked."""

    def show(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if not value or ctx.resilient_parsing:
            return
        for line in method_lines(registry, flags):
            click.echo(line)
        ctx.exit()

    return click.option("--list", is_flag=True, expose_value=False, is_eager=True, callback=show, help=help)
