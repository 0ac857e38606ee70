"""``hitl-vault serve``: the daemon and the HTTP service in one process (``run`` stays the
daemon alone)."""

from __future__ import annotations

import importlib.util
import ipaddress
import logging
import os
import re
import sys
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .agents import INSTALL_MCP
from .common import BadUsage, cli_errors, vault_path
from .db import journal_option

if TYPE_CHECKING:
    from ..serve.runner import Serving
    from ..serve.service import Service
    from ..vault import Vault


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8787`` for IPv6); exit 2 naming the option otherwise."""
    host, sep, port = text.strip().rpartition(":")
    if (
        not sep
        or not host
        or not (port.isascii() and port.isdigit())
        or not 0 <= int(port) <= 65535
    ):
        raise BadUsage(f"--listen: {text!r} is not HOST:PORT (e.g. 127.0.0.1:8787)")
    return host.strip("[]"), int(port)


def _loopback(host: str) -> bool:
    from ..client import is_loopback

    return is_loopback(host)


def check_listen(host: str, allow_remote: bool) -> None:
    """A non-loopback address only with --allow-remote (exit 2 with the reason)."""
    if _loopback(host) or allow_remote:
        return
    raise BadUsage(
        f"--listen: {host} can be reached from other machines, and the service speaks "
        "plain HTTP: put it behind a TLS reverse proxy (Caddy, tailscale serve) on "
        "127.0.0.1, or pass --allow-remote if something else protects it"
    )


# A public URL's path: plain segments (``/vault``, ``/tools/hitl``), each a name a proxy's
# ``handle_path`` can strip; no ``.`` or ``..``, nothing percent-encoded.
_PATH = re.compile(r"(?:/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*")


def check_public_url(url: str) -> str:
    """An http(s) URL with a host, and perhaps a path (the prefix a proxy strips, as Caddy's
    ``handle_path`` does), nothing else: no user or password, query or fragment (a link is
    the URL followed by ``/d/<secret>``). Plain http only for this machine (tokens travel
    in it). Returned without its last ``/``."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadUsage(
            f"--public-url: {url!r} is not an http(s) URL (e.g. https://vault.example.com)"
        )
    extra = [
        what
        for what, given in (
            ("a user or password", parts.username is not None or parts.password is not None),
            ("a query", bool(parts.query) or "?" in url),
            ("a fragment", bool(parts.fragment) or "#" in url),
        )
        if given
    ]
    if extra:
        raise BadUsage(
            f"--public-url: {url!r} has {' and '.join(extra)}: give the address alone, as "
            "the phone opens it (e.g. https://vault.example.com or https://example.com/vault)"
        )
    path = parts.path.rstrip("/")
    if not _PATH.fullmatch(path):
        raise BadUsage(
            f"--public-url: {url!r} has a path a link cannot go under ({parts.path!r}): give "
            "plain names, no '.', '..' or '%' (e.g. https://example.com/vault)"
        )
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise BadUsage(
            f"--public-url: {url!r} would have tokens sent unencrypted: give the https:// "
            "address of the TLS proxy in front of the service"
        )
    return url.strip().rstrip("/")


def check_proxy(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address.strip().strip("[]")))
    except ValueError:
        raise BadUsage(
            f"--trusted-proxy: {address!r} is not an IP address (the proxy's, e.g. 127.0.0.1)"
        ) from None


def extras(service: Service, mcp: bool = True) -> tuple[dict[str, Any], str]:
    """What mounts beside the REST API: the gate over HTTP (``POST /api/v1/gate``) and MCP
    at ``/mcp`` (with the ``mcp`` extra, unless ``mcp`` is false: ``--no-mcp``); as
    :func:`build_app` keywords, and a line that says whether ``/mcp`` is served."""
    from ..serve.gate import gate_handler

    options: dict[str, Any] = {"gate": gate_handler(service)}
    if not mcp:
        return options, "/mcp not served (--no-mcp)"
    if importlib.util.find_spec("mcp") is None:
        return options, "/mcp not served (install hitl-vault[mcp] for it)"
    try:
        from ..agents.mcp_http import mcp_http_app
    except ImportError as e:  # an mcp package of another major version
        if (e.name or "").startswith("hitl_vault"):
            raise
        return options, (
            f"/mcp not served: the mcp package, version 2, does not import here ({e}); "
            f"install the mcp extra: {INSTALL_MCP}"
        )
    app = mcp_http_app(service)
    options.update(mcp_app=app, lifespans=[app.running])
    return options, "/mcp served: MCP over Streamable HTTP, for agent tokens"


@click.command()
@click.option(
    "--listen",
    default="127.0.0.1:8787",
    show_default=True,
    metavar="HOST:PORT",
    help="Where to listen (a non-loopback address needs --allow-remote).",
)
@click.option(
    "--public-url",
    metavar="URL",
    help="The address people reach it at (the TLS proxy's https:// URL); kept in the store.",
)
@click.option(
    "--trusted-proxy",
    metavar="ADDR",
    help="The reverse proxy's address: only its X-Forwarded-For/-Proto are believed.",
)
@click.option("--allow-remote", is_flag=True, help="Listen on an address other machines can reach.")
@click.option(
    "--socket",
    "socket_path",
    metavar="PATH",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The Unix socket people decide through, the kernel saying who they are "
    "(default: /run/hitl-vault/<vault>-<hash>.sock if writable, else in $XDG_RUNTIME_DIR).",
)
@click.option(
    "--no-mcp",
    "no_mcp",
    is_flag=True,
    help="Do not serve /mcp, though the mcp extra is installed (agents use the REST API and "
    "the gate; the service starts without loading the MCP SDK).",
)
@click.option("-v", "--verbose", is_flag=True, help="Also log each note looked at, written or run.")
@journal_option
@click.pass_context
def serve(
    ctx: click.Context,
    listen: str,
    public_url: str | None,
    trusted_proxy: str | None,
    allow_remote: bool,
    socket_path: Path | None,
    no_mcp: bool,
    verbose: bool,
) -> None:
    """Run the daemon and the HTTP service (REST API, the gate over HTTP, MCP at /mcp) in one
    process, until SIGTERM or Ctrl-C. Agents ask with agent tokens; people answer with
    approver tokens (`hitl-vault token add`).

    It serves at most 4,096 connections at once (beyond that a request is answered 503);
    give the process an open-file limit above that (ulimit -n, systemd LimitNOFILE=). A
    request's body must arrive whole within 10 seconds of its head (else 408).

    With no vault at the path yet, one is created from the template first.
    """
    host, port = parse_listen(listen)
    check_listen(host, allow_remote)
    url = check_public_url(public_url) if public_url is not None else None
    proxy = check_proxy(trusted_proxy) if trusted_proxy is not None else None
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("watchdog").setLevel(logging.WARNING)
    path = vault_path(ctx)
    with cli_errors():
        _serve(path, (host, port), url, proxy, socket_path, mcp=not no_mcp)


def _serve(
    path: Path,
    listen: tuple[str, int],
    url: str | None,
    proxy: str | None,
    socket_path: Path | None = None,
    *,
    mcp: bool = True,
) -> None:
    from ..policy.proven import unauthenticated
    from ..serve.runner import Serving, bind
    from ..vault import Vault
    from .template import init_vault

    if not path.exists():  # as `run` does: the quick start's first command serves
        init_vault(path)
        click.echo(f"created a new vault at {path}", err=True)
    with Vault(path) as vault:
        url = _record(vault, url)
        try:
            sock = bind(*listen)
        except OSError as e:
            raise BadUsage(
                f"--listen: cannot listen on {listen[0]}:{listen[1]} ({e.strerror})"
            ) from None
        serving = Serving(vault, listen, public_url=url, trusted_proxy=proxy, sock=sock)
        options, mcp_line = extras(serving.service, mcp)
        serving.app_options.update(options)
        unix = _unix_socket(serving, socket_path)
        host, port = serving.address
        shown = f"[{host}]" if ":" in host else host

        def ready() -> None:
            click.echo(f"serving {vault.root} on http://{shown}:{port}", err=True)
            click.echo(f"public URL: {url or '(none set: --public-url)'}", err=True)
            click.echo(mcp_line, err=True)
            if unix.is_socket():
                click.echo(
                    f"Unix socket: {unix} (people decide: hitl-vault --server unix:{unix})",
                    err=True,
                )
            else:
                click.echo("no Unix socket (see the warning above)", err=True)
            for warning in unauthenticated(vault.policy):
                click.echo(f"warning: {warning}", err=True)

        serving.run(on_ready=ready)


def _unix_socket(serving: Serving, given: Path | None) -> Path:
    """Add the Unix socket to what the app starts (:mod:`hitl_vault.serve.socket`); its
    path. A path given that cannot be used stops ``serve``."""
    from ..serve.socket import default_path, prepare, socket_lifespan

    path = given.expanduser().absolute() if given is not None else default_path(serving.vault.root)
    if given is not None:
        prepare(path)
    started = serving.app_options.get("lifespans", ())
    listening = socket_lifespan(serving.service, path, required=given is not None)
    serving.app_options["lifespans"] = [*started, listening]
    return path


def _record(vault: Vault, url: str | None) -> str | None:
    """Keep the public URL (journaled when it changes) and the service's uid in the store;
    the public URL in force (the one kept before, when none is given, checked as
    ``--public-url`` is: one kept by an earlier release may hold what links cannot)."""
    from ..access.names import os_user
    from ..identity import keep_service_uid

    # The OS user running the service (its uid's name), not $USER, which anyone can set.
    journal, now, by = vault.engine.journal, vault.engine.now(), os_user()
    kept = journal.setting("public_url") if url is None else None
    if kept is not None:
        try:
            check_public_url(kept)
        except BadUsage as e:
            raise BadUsage(
                f"{e.message} (the public URL kept in the store: give serve --public-url "
                "again to replace it)"
            ) from None
    if url is not None:
        journal.set_setting("public_url", url, now, by)
    keep_service_uid(journal, os.getuid(), now, by)
    return url or kept
