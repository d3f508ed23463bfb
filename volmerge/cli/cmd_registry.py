"""`volmerge pull / push / login / logout`: images to and from registries.

Thin commands over :mod:`runtime.registry` (architecture.md, principle 5);
httpx is imported only when one of them runs.
"""

from __future__ import annotations

import sys

import typer

from .common import store
from .transfers import Display, pull_command
from .transfers import tls_options as _tls

_TLS_HELP = "Verify the registry's TLS certificate (true|false); false only when you must."
_CERT_HELP = "Directory with the registry's CA (*.crt) and client certificate (*.cert, *.key)."
_AUTH_HELP = "Credentials file (default: $REGISTRY_AUTH_FILE, then podman's auth.json)."


def _images(ctx: typer.Context):
    from volmerge.runtime.images import ImageStore

    return ImageStore(store(ctx))


def pull(
    ctx: typer.Context,
    ref: str = typer.Argument(..., metavar="REF", help="[REGISTRY/]NAME[:TAG|@DIGEST]"),
    platform: str | None = typer.Option(None, "--platform", metavar="OS/ARCH[/VARIANT]",
                                        help="Which image of a multi-platform index "
                                             "(default: this host's)."),
    quiet: bool = typer.Option(False, "--quiet", "-q",
                               help="No progress; print only the image id."),
    tls_verify: str = typer.Option("true", "--tls-verify", metavar="BOOL", help=_TLS_HELP),
    cert_dir: str | None = typer.Option(None, "--cert-dir", metavar="DIR", help=_CERT_HELP),
    authfile: str | None = typer.Option(None, "--authfile", metavar="FILE", help=_AUTH_HELP),
) -> None:
    """Pull an image from a registry into the store.

    Docker schema 2 and OCI manifests, image indexes (the host's platform or
    --platform), gzip / zstd / plain layers.  Every digest is verified before
    anything is committed; layers the store has are not downloaded again;
    the image is checked and stored exactly as `image load` does.
    Example: volmerge pull registry.example.com:5000/team/app:1.2
    """
    pull_command(lambda: store(ctx), ref, platform=platform, quiet=quiet,
                 tls_verify=tls_verify, cert_dir=cert_dir, authfile=authfile)


def push(
    ctx: typer.Context,
    ref: str = typer.Argument(..., metavar="REF", help="Image of the store: name[:tag] or id."),
    dest: str | None = typer.Argument(None, metavar="[DEST]",
                                      help="REGISTRY/NAME[:TAG] (default: REF itself)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress; print only the digest."),
    tls_verify: str = typer.Option("true", "--tls-verify", metavar="BOOL", help=_TLS_HELP),
    cert_dir: str | None = typer.Option(None, "--cert-dir", metavar="DIR", help=_CERT_HELP),
    authfile: str | None = typer.Option(None, "--authfile", metavar="FILE", help=_AUTH_HELP),
) -> None:
    """Push an image of the store to a registry.

    The blobs go as stored, so the registry serves the image's own manifest
    digest.  Blobs the repository has are not uploaded again; the manifest
    goes last.  Example: volmerge push app:1 registry.example.com:5000/team/app:1
    """
    from volmerge.runtime.registry.push import PushOptions
    from volmerge.runtime.registry.push import push as do_push

    opts = PushOptions(tls=_tls(tls_verify, cert_dir), authfile=authfile)
    show = Display(quiet)
    try:
        got = do_push(_images(ctx), ref, dest, opts, show)
    finally:
        show.close()
    if quiet:
        print(got.digest)
        return
    print(f"Digest: {got.digest}")
    mounted = f", {got.mounted} mounted" if got.mounted else ""
    print(f"Pushed: {got.ref} ({got.uploaded} blob(s) uploaded{mounted}, "
          f"{got.skipped} already there)")


def login(
    registry: str = typer.Argument(..., metavar="REGISTRY", help="HOST[:PORT]"),
    username: str | None = typer.Option(None, "--username", "-u", help="User name."),
    password: str | None = typer.Option(None, "--password", "-p",
                                        help="Password (visible to other users: prefer "
                                             "--password-stdin)."),
    password_stdin: bool = typer.Option(False, "--password-stdin",
                                        help="Read the password from standard input."),
    tls_verify: str = typer.Option("true", "--tls-verify", metavar="BOOL", help=_TLS_HELP),
    cert_dir: str | None = typer.Option(None, "--cert-dir", metavar="DIR", help=_CERT_HELP),
    authfile: str | None = typer.Option(None, "--authfile", metavar="FILE", help=_AUTH_HELP),
) -> None:
    """Log in to a registry: check the credentials, then store them.

    They go into the auth.json podman and skopeo use, so either tool's
    login works for the other.  Example: volmerge login -u me --password-stdin reg:5000
    """
    from volmerge.runtime.errors import BadInput
    from volmerge.runtime.registry.session import login as do_login

    if password_stdin:
        if password is not None:
            raise BadInput("--password and --password-stdin exclude each other")
        password = sys.stdin.readline().rstrip("\r\n")
    if username is None:
        if not sys.stdin.isatty():
            raise BadInput("login needs --username (no terminal to ask on)")
        username = input("Username: ")
    if password is None:
        if not sys.stdin.isatty():
            raise BadInput("login needs --password-stdin or --password (no terminal to ask on)")
        import getpass

        password = getpass.getpass("Password: ")
    path = do_login(registry, username, password, tls=_tls(tls_verify, cert_dir),
                    authfile=authfile)
    print(f"Login Succeeded! (credentials in {path})")


def logout(
    registry: str | None = typer.Argument(None, metavar="REGISTRY", help="HOST[:PORT]"),
    all_: bool = typer.Option(False, "--all", "-a", help="Remove every stored login."),
    authfile: str | None = typer.Option(None, "--authfile", metavar="FILE", help=_AUTH_HELP),
) -> None:
    """Remove a registry's stored credentials (or all of them with --all)."""
    from volmerge.runtime.registry.session import logout as do_logout

    for key in do_logout(registry, all_=all_, authfile=authfile):
        print(f"Removed login credentials for {key}")


def register(app: typer.Typer) -> None:
    app.command("pull", no_args_is_help=True)(pull)
    app.command("push", no_args_is_help=True)(push)
    app.command("login", no_args_is_help=True)(login)
    app.command("logout")(logout)
