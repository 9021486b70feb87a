"""Commands other packages add, named by the "sipguard.commands" entry point group.

A package lists its click command in its metadata, e.g. the sandbox's
``[project.entry-points."sipguard.commands"] sandbox = "sandbox.cli:sandbox"``; `sipguard` and
the Flask app's CLI both offer it, and its module is imported only when the command runs or a
help page describes it. The product never imports such a package by name.
"""

from __future__ import annotations

import functools
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import click

GROUP = "sipguard.commands"


class Deferred(click.Command):
    """A command named by an entry point; its module is imported the first time it is used."""

    def __init__(self, entry_point: EntryPoint) -> None:
        super().__init__(entry_point.name)
        self.entry_point = entry_point

    @functools.cached_property
    def target(self) -> click.Command:
        """Return the command the entry point names (importing its module)."""
        command = self.entry_point.load()
        if not isinstance(command, click.Command):
            raise TypeError(f"entry point {self.entry_point.value} is not a click command")
        return command

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        # The context is the real command's, so click parses and invokes that command.
        return self.target.make_context(info_name, args, parent=parent, **extra)

    def get_short_help_str(self, limit: int = 45) -> str:
        return self.target.get_short_help_str(limit)


@functools.cache
def plugins() -> tuple[Deferred, ...]:
    """Return the commands installed packages add, not yet imported."""
    return tuple(Deferred(entry_point) for entry_point in entry_points(group=GROUP))
