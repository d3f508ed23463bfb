"""`volmerge network ...`: bridge networks (create, ls, inspect, rm).

Thin commands over runtime.network.NetworkManager; the manager (and pyroute2,
~120 ms to import) is loaded inside the commands only.
"""

from __future__ import annotations

import typer

from .common import emit_json, store, table

network_app = typer.Typer(
    help="Bridge networks with their own subnet: create, list, inspect, remove.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(network_app, name="network")


def _nm(ctx: typer.Context):
    from volmerge.runtime.network import NetworkManager

    return NetworkManager(store(ctx))


@network_app.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Network name (letters, digits, '_', '.', '-')."),
    subnet: str | None = typer.Option(
        None, "--subnet", metavar="CIDR",
        help="IPv4 subnet, e.g. 10.89.5.0/24 (default: the first free /24 of 10.89.0.0/16...).",
    ),
    gateway: str | None = typer.Option(
        None, "--gateway", metavar="IP", help="Gateway address (default: the subnet's first host)."
    ),
    json: bool = typer.Option(False, "--json", help="Print the new network as JSON."),
) -> None:
    """Create a bridge network; its subnet may not overlap another network."""
    net = _nm(ctx).create(name, subnet=subnet, gateway=gateway)
    if json:
        emit_json(net.to_dict())
    else:
        print(net.name)


@network_app.command("ls")
def ls(
    ctx: typer.Context,
    json: bool = typer.Option(False, "--json", help="Print JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print names only."),
) -> None:
    """List networks with their subnet, gateway, bridge and container count."""
    nets = _nm(ctx).list()
    if json:
        emit_json([n.to_dict() for n in nets])
    elif quiet:
        for n in nets:
            print(n.name)
    else:
        table(
            ["NETWORK ID", "NAME", "SUBNET", "GATEWAY", "BRIDGE", "CONTAINERS"],
            [[n.id[:12], n.name + (" (default)" if n.default else ""), n.subnet, n.gateway,
              n.bridge, len(n.containers)] for n in nets],
        )


@network_app.command("inspect")
def inspect(
    ctx: typer.Context,
    names: list[str] = typer.Argument(..., help="Network name(s)."),
    json: bool = typer.Option(False, "--json", help="Print JSON (a list, one entry per name)."),
) -> None:
    """Show networks in detail: subnet, gateway, bridge, containers with addresses and ports."""
    nm = _nm(ctx)
    nets = [nm.inspect(n) for n in names]
    if json:
        emit_json([n.to_dict() for n in nets])
        return
    for i, n in enumerate(nets):
        if i:
            print()
        print(f"Name:     {n.name}{' (default)' if n.default else ''}")
        print(f"ID:       {n.id}")
        print(f"Subnet:   {n.subnet}")
        print(f"Gateway:  {n.gateway}")
        print(f"Bridge:   {n.bridge}")
        print(f"Containers: {len(n.containers)}")
        if n.containers:
            table(
                ["  CONTAINER", "HOSTNAME", "IP", "STATE", "PORTS"],
                [["  " + c["container_id"][:12], c["hostname"], c["ip"], c["state"],
                  ", ".join(c["ports"])] for c in n.containers],
            )


@network_app.command("rm")
def rm(
    ctx: typer.Context,
    names: list[str] = typer.Argument(..., help="Network name(s)."),
) -> None:
    """Remove networks; refuses a network that any container (even stopped) still uses."""
    from volmerge.runtime.errors import Conflict

    nm = _nm(ctx)
    for n in names:  # check all first: a refused name leaves the others untouched
        if nm.inspect(n).containers:
            nm.remove(n)  # raises the Conflict with the details
            raise Conflict(f"network {n!r} is in use")  # pragma: no cover
    for n in names:
        nm.remove(n)
        print(n)
