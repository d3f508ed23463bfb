"""``volmerge upgrade``, ``rollback``, ``history``, ``prune`` and ``recover``."""

from __future__ import annotations

import sys

import typer

from .common import emit_json, store

ON_CONFLICT_HELP = "fail (default: stop, change nothing) | ours | theirs | markers | keep-both"


def _ctx(ctx: typer.Context):
    from volmerge.context import Context

    return Context(store(ctx))


def _printer(quiet: bool):
    out = sys.stderr

    def progress(event: str, text: str, seconds: float | None) -> None:
        if quiet:
            return
        t = f" ({seconds * 1000:.0f} ms)" if seconds is not None else ""
        mark = {"step": "  ✓", "begin": "  ·", "fail": "  ✗", "undo": "  ↩", "rolled-back": "  ↩",
                "commit": "  ✓"}.get(event, "  ·")
        out.write(f"{mark} {text}{t}\n")
        out.flush()

    return progress


def _print_files(files: list[dict], show_diff: bool) -> None:
    for f in files:
        vol = f.get("volume", "")
        where = f"{vol}:{f.get('target', '').rstrip('/')}/{f['path']}" if vol else f["path"]
        line = f"  {f['action']:<12} {where}  [{f['strategy']}]"
        if f.get("rule"):
            line += f"  [policy {f.get('policy')} rule {f['rule']!r}]"
        for n in f.get("notes", []) or []:
            line += f"  ({n})"
        print(line)
        for c in f.get("conflicts", []) or []:
            print(f"      conflict at {c.get('location')}: {c.get('message')}")
        if show_diff and f.get("diff"):
            for dl in str(f["diff"]).splitlines():
                print("      " + dl)


def register(app: typer.Typer) -> None:
    @app.command("upgrade", no_args_is_help=True)
    def upgrade_cmd(
        ctx: typer.Context,
        container: str = typer.Argument(..., metavar="CONTAINER", help="Container to upgrade (name or id)."),
        to: str = typer.Option(..., "--to", metavar="IMAGE", help="The image to upgrade to."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and what the data will become; change nothing."),
        rehearse: bool = typer.Option(False, "--rehearse", help="Run the whole upgrade on O(1) clones of the volumes on an isolated network, then throw them away."),
        policy: str | None = typer.Option(None, "--policy", metavar="FILE", help="Merge policy (TOML); wins over the image's own."),
        allow_data_loss: bool = typer.Option(False, "--allow-data-loss", help="Replay databases even though the new schema drops tables/columns that hold data (an image's policy cannot allow this)."),
        on_conflict: str = typer.Option("fail", "--on-conflict", help=ON_CONFLICT_HELP),
        health_cmd: str | None = typer.Option(None, "--health-cmd", help="Health check command for the new container."),
        health_http: str | None = typer.Option(None, "--health-http", metavar="URL", help="Healthy when this URL answers 2xx/3xx."),
        health_tcp: int | None = typer.Option(None, "--health-tcp", metavar="PORT", help="Healthy when this TCP port accepts."),
        health_timeout: float = typer.Option(60.0, "--health-timeout", metavar="S", help="Seconds the new container has to become healthy."),
        stop_timeout: float = typer.Option(10.0, "--stop-timeout", metavar="S", help="Seconds between SIGTERM and SIGKILL when stopping."),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    ) -> None:
        """Upgrade CONTAINER to IMAGE with its live data merged in, as one transaction.

        Stop, snapshot the volumes, three-way merge the new image's content
        with the live data (SQL databases replayed into the new schema),
        start the successor on the same name, address and ports, health
        check, commit; on any failure everything is rolled back (exit 1).
        """
        from volmerge.errors import BadInput
        from volmerge.upgrade import UpgradeOptions, preview
        from volmerge.upgrade import rehearse as do_rehearse
        from volmerge.upgrade import upgrade as do_upgrade

        if dry_run and rehearse:
            raise BadInput("--dry-run and --rehearse exclude each other")
        from volmerge.runtime.options import check_http_url, check_port
        from volmerge.upgrade.plan import check_timeouts

        check_timeouts(health=health_timeout, stop=stop_timeout)  # before the lock is taken
        if health_http is not None:
            check_http_url(health_http)
        if health_tcp is not None:
            check_port(health_tcp, "--health-tcp port")
        opts = UpgradeOptions(container=container, to_image=to, policy_file=policy,
                              allow_data_loss=allow_data_loss,
                              on_conflict=on_conflict, health_cmd=health_cmd,
                              health_http=health_http, health_tcp=health_tcp,
                              health_timeout=health_timeout, stop_timeout=stop_timeout)
        c = _ctx(ctx)
        if dry_run:
            rep = preview(c, opts)
            if as_json:
                emit_json(rep)
            else:
                p = rep["plan"]
                print(f"Upgrade {p['container']}: {p['from']['image']} -> {p['to']['image']} (dry run, nothing changed)")
                for n in p["notes"]:
                    print(f"  note: {n}")
                for v in p["volumes"]:
                    for n in v["notes"]:
                        print(f"  note: {n}")
                print(f"Health check: {p['health']['source']}")
                if p.get("space"):
                    _print_space(p["space"])
                if p["policy"]:
                    print(f"Policy: {', '.join(p['policy'])}")
                for w in p.get("policy_warnings", []):
                    print(f"  warning: {w}")
                print("Steps:")
                for i, s in enumerate(rep["steps"], 1):
                    print(f"  {i}. {s}")
                print("Data:")
                _print_files([f for f in rep["files"] if f["action"] != "unchanged"], True)
                s = rep["summary"]
                counts = ", ".join(f"{k} {v}" for k, v in s.items() if k not in ("files",) and v)
                print(f"Summary: {counts or 'nothing changes'}")
                if rep["would_stop"]:
                    print("The upgrade would stop on these conflicts (exit 1).")
            raise typer.Exit(1 if rep["would_stop"] else 0)
        progress = _printer(as_json)
        if rehearse:
            rep = do_rehearse(c, opts, progress)
            if as_json:
                emit_json(rep)
            else:
                print(f"Rehearsal passed: {container} can be upgraded to {to} "
                      f"({rep['summary'].get('conflicts', 0)} conflicts); clones thrown away.")
            return
        rep = do_upgrade(c, opts, progress)
        if as_json:
            emit_json(rep)
            return
        print(f"Upgraded {rep['container']}: {rep['from']} -> {rep['to']} (generation {rep['generation']})")
        files = [dict(f, volume=v) for v, r in rep["volumes"].items() for f in r.get("files", [])]
        _print_files([f for f in files if f["action"] != "unchanged"], False)
        t = rep["timings"]
        print("Timings: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in t.items()))

    @app.command("rollback", no_args_is_help=True)
    def rollback_cmd(
        ctx: typer.Context,
        container: str = typer.Argument(..., metavar="CONTAINER", help="Container to roll back."),
        to: int | None = typer.Option(None, "--to", metavar="GEN", help="Generation to return to (default: the previous one)."),
        discard_new_data: bool = typer.Option(False, "--discard-new-data", help="Drop data written since the upgrade."),
        keep_new_data_as: str | None = typer.Option(None, "--keep-new-data-as", metavar="NAME", help="Keep data written since the upgrade as volume NAME."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be lost; change nothing."),
        stop_timeout: float = typer.Option(10.0, "--stop-timeout", metavar="S", help="Seconds between SIGTERM and SIGKILL."),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    ) -> None:
        """Return CONTAINER to an earlier generation: its image and volume layers.

        O(1): volumes drop the layers above the snapshot taken when that
        generation was left.  Data written since is counted (paths, SQLite
        rows) and needs --discard-new-data or --keep-new-data-as NAME.
        """
        from volmerge.upgrade import rollback
        from volmerge.upgrade.plan import check_timeouts

        check_timeouts(stop=stop_timeout)
        rep = rollback(_ctx(ctx), container, to=to, discard_new_data=discard_new_data,
                       keep_new_data_as=keep_new_data_as, stop_timeout=stop_timeout, dry_run=dry_run)
        if as_json:
            emit_json(rep)
            return
        verb = "Would roll back" if dry_run else "Rolled back"
        print(f"{verb} {rep['container']}: generation {rep['from_gen']} ({rep['from_image']}) -> "
              f"{rep['to_gen']} ({rep['to_image']})")
        for v, d in rep["new_data"].items():
            if d["paths"]:
                print(f"  volume {v}: {len(d['paths'])} path(s) written since the upgrade"
                      + (f", kept as {rep.get('kept_as')}" if rep.get("kept_as") else ""))
                for db, t in d["rows"].items():
                    print(f"    {db}: " + ", ".join(f"{k} {n:+d} rows" for k, n in t.items()))

    @app.command("history", no_args_is_help=True)
    def history_cmd(
        ctx: typer.Context,
        container: str = typer.Argument(..., metavar="CONTAINER", help="Container name."),
        as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
    ) -> None:
        """Generations of CONTAINER (image, time, state) and every upgrade attempt."""
        import time as _t

        from volmerge.runtime.errors import NotFound
        from volmerge.upgrade import history

        c = _ctx(ctx)
        name, found = container, True
        try:
            name = c.engine.get(container).name
        except NotFound:  # a removed container keeps its history
            found = False
        rows = history(c.store, name)
        if not rows and not found:
            raise NotFound(f"no such container: {container}")
        if as_json:
            emit_json(rows)
            return
        from .common import table

        gens = [r for r in rows if r["type"] == "generation"]
        table(["GEN", "IMAGE", "STATE", "CREATED", "CHANGES"],
              [[g["generation"], g["image"], g["state"],
                _t.strftime("%Y-%m-%d %H:%M:%S", _t.localtime(g["created"])),
                ", ".join(f"{k} {v}" for k, v in (g["summary"] or {}).items() if v)] for g in gens])
        attempts = [r for r in rows if r["type"] != "generation"]
        if attempts:
            print()
            table(["ATTEMPT", "KIND", "FROM", "TO", "RESULT", "ERROR"],
                  [[a["id"], a["type"], a["from"], a["to"], a["state"], a["error"] or ""]
                   for a in attempts])

    @app.command("prune")
    def prune_cmd(
        ctx: typer.Context,
        containers: list[str] = typer.Argument(None, metavar="[CONTAINER | stack:PROJECT]...", help="Containers, and compose stacks as stack:PROJECT, to prune (default: every container with generations and every stack with history)."),
        keep: int = typer.Option(2, "--keep", metavar="N", help="Generations to keep per container: the current one and the N-1 newest it can roll back to."),
        dry_run: bool = typer.Option(False, "--dry-run", help="List what would be removed; change nothing."),
        as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
    ) -> None:
        """Remove upgrade generations older than the newest N (default 2).

        Their parked containers (NAME.genN), generation rows and journals go,
        and the volume snapshots only they needed are untagged and compacted;
        the images they ran go when untagged and used by nothing else.
        Never what the current generation or a rollback to a kept one needs.
        A compose stack's history goes with its services' generations: the
        stack generations `compose rollback` can no longer return to and
        their journals (one stack: stack:PROJECT, or `compose prune`).
        """
        from volmerge.compose.stackprune import prune

        reps = prune(_ctx(ctx), list(containers or []), keep=keep, dry_run=dry_run)
        if as_json:
            emit_json(reps)
            return
        print_prune(reps, dry_run)

    @app.command("recover")
    def recover_cmd(
        ctx: typer.Context,
        as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
    ) -> None:
        """Finish or undo any upgrade or rollback that a crash interrupted."""
        from volmerge.upgrade import recover

        done = recover(_ctx(ctx))
        if as_json:
            emit_json(done)
            return
        if not done:
            print("Nothing to recover.")
        for d in done:
            print(f"{d['container']}: {d['action']} ({d['id']})" + (f": {d.get('error')}" if d.get("error") else ""))


def print_prune(reps: list[dict], dry_run: bool) -> None:
    """What prune removed (or would): one line per thing, then the totals and
    what each container and stack keeps."""
    from .common import table

    rows = []
    for r in reps:
        if "stack" in r:
            name = f"stack:{r['stack']}"
            rows += [[name, f"stack generation {g}", "stack row"] for g in r["generations"]]
            rows += [[name, j, "journal"] for j in r["journals"]]
            continue
        rows += [[r["container"], f"generation {g}", "row"] for g in r["generations"]]
        rows += [[r["container"], c["name"], "container"] for c in r["containers"]]
        rows += [[r["container"], f"{v}@{t}", "snapshot tag"]
                 for v, ts in r["snapshots"].items() for t in ts]
        rows += [[r["container"], j, "journal"] for j in r["journals"]]
        rows += [[r["container"], f"{i['ref']} ({i['id'][:12]})", "image"] for i in r["images"]]
    if not rows:
        print("Nothing to prune.")
        return
    table(["CONTAINER", "WHAT", "KIND"], rows)
    n = sum(len(r["generations"]) for r in reps if "stack" not in r)
    stacks = sum(len(r["generations"]) for r in reps if "stack" in r)
    also = f" and {stacks} stack generation(s)" if stacks else ""
    print(f"{'Would remove' if dry_run else 'Removed'} {n} generation(s){also}; kept "
          + "; ".join(f"{r.get('container') or 'stack:' + r['stack']}: "
                      f"{', '.join(map(str, r['keep'])) or 'none'}" for r in reps))


def _print_space(space: dict) -> None:
    """The space estimate of the preview (volmerge.upgrade.space)."""
    from volmerge.runtime.diskspace import size_text

    verdict = "" if space["enough"] else " - not enough: the upgrade would be refused (exit 2)"
    print(f"Space: ~{size_text(space['needed'])} needed on {space['filesystem']} "
          f"({space['type']}), {size_text(space['free'])} free{verdict}")
