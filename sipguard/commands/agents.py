"""`agents`: which agents are quarantined for failing SIP auth towards their PBX, and releasing one.

The state is the store's, shared by every instance: `release` takes effect everywhere at once.
"""

from __future__ import annotations

import click
from flask.cli import AppGroup

from sipguard.commands.keys import stored, when
from webhooks.context import runtime

agents = AppGroup("agents", help="Agents quarantined for failing SIP auth; release one.")


@agents.command("list")
def list_agents() -> None:
    """List every configured agent: group(s), state, last cause, quarantined since and until."""
    rt = runtime()
    rows = {health.agent: health for health in stored(rt.store.agent_health)}
    now = rt.store.now()
    names = rt.voice.agent_names()
    if not names:
        click.echo("no agents in the voice configuration")
        return
    groups = {
        name: ",".join(
            group.name
            for group in rt.voice.groups.values()
            if any(agent.name == name for agent in group.agents)
        )
        for name in names
    }
    name_width = max(len("AGENT"), *(len(name) for name in names))
    group_width = max(len("GROUPS"), *(len(text) for text in groups.values()))
    click.echo(
        f"{'AGENT'.ljust(name_width)}  {'GROUPS'.ljust(group_width)}  {'STATE':<11}  "
        f"{'FAILURES':<8}  {'CAUSE':<16}  {'SINCE':<19}  UNTIL"
    )
    for name in names:
        health = rows.get(name)
        state = health.state(now) if health is not None else "healthy"
        click.echo(
            f"{name.ljust(name_width)}  {groups[name].ljust(group_width)}  {state:<11}  "
            f"{health.failures if health else 0:<8}  "
            f"{(health.last_cause if health else None) or '-':<16}  "
            f"{when(health.quarantined_since if health else None):<19}  "
            f"{when(health.quarantined_until if health else None)}"
        )


@agents.command("release")
@click.argument("name")
def release(name: str) -> None:
    """End agent NAME's quarantine now, on every instance; it is rung again at once."""
    rt = runtime()
    if name not in rt.voice.agent_names():
        raise click.BadParameter(
            f"no agent named {name!r} in the voice configuration (see: sipguard agents list)",
            param_hint="NAME",
        )
    if stored(lambda: rt.store.release_agent(name)):
        click.echo(f"released agent {name}: it is rung again")
    else:
        click.echo(f"agent {name} was not quarantined")
