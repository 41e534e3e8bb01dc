"""``lmdev ui``: the live dashboard (runs, curves, hardware, the machine, plans) on a local page."""

from __future__ import annotations

import argparse
import secrets
import socket
import sys
from typing import Any

HELP = "the live dashboard: runs, curves, hardware, machine and plans in the browser"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "ui", help=HELP,
        description="Serve the dashboard over the run store ($LMDEV_HOME, default ./.lmdev). It binds "
        "127.0.0.1; on any other address it needs a token (one is generated and printed as a URL). "
        "Docs: docs/commands/ui.md.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=6006, help="port (default 6006; 0 picks a free one)")
    p.add_argument("--open", action="store_true", help="open the dashboard in the browser")
    p.add_argument("--home", metavar="DIR", help="the store folder (default: $LMDEV_HOME or ./.lmdev)")
    p.add_argument("--token", metavar="T", help="require this token (default: a generated one when "
                   "--host is not a loopback name)")
    p.add_argument("--no-auth", action="store_true", help="serve a non-loopback address without a token "
                   "(anyone who can reach the port sees your runs)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="also accept this Host header (a name the machine is reached by); repeatable")
    p.add_argument("--read-only", action="store_true",
                   help="open the store read-only, writing nothing (read-only media); also LMDEV_READ_ONLY=1")
    return p


def resolve_token(host: str, token: str | None, no_auth: bool) -> str | None:
    """The token the server will require: the one given, a generated one on a non-loopback
    address, or none (loopback, or an explicit ``--no-auth``)."""
    from lmdev.errors import LmdevError
    from lmdev.ui.guard import MIN_TOKEN_BITS, token_bits
    from lmdev.ui.server import is_loopback_name

    if no_auth and token:
        raise LmdevError("--no-auth and --token contradict each other", "give one of them")
    if token is not None and not (token.isascii() and token.isprintable()):
        raise LmdevError("--token must be printable ASCII", "pass a url-safe random string")
    if token is not None and token_bits(token) < MIN_TOKEN_BITS:
        raise LmdevError(f"--token is too weak (about {int(token_bits(token))} bits; at least "
                         f"{MIN_TOKEN_BITS} are needed)",
                         "leave it out to get a generated one, or pass at least 22 random url-safe "
                         "characters (python -c 'import secrets; print(secrets.token_urlsafe(24))')")
    if token is None and not no_auth and not is_loopback_name(host):
        return secrets.token_urlsafe(24)
    return token


def run(args: argparse.Namespace) -> int:
    from lmdev.errors import LmdevError

    try:
        import uvicorn

        from lmdev.ui.server import create_app, default_allowed_hosts, is_loopback_name
    except ImportError as exc:
        raise LmdevError(f"the dashboard needs FastAPI and uvicorn ({exc.name} is missing)",
                         "pip install 'lmdev[ui]'") from None
    if not 0 <= args.port <= 65535:
        raise LmdevError(f"--port must be between 0 and 65535, got {args.port}", "pass a free port, e.g. 6006")
    token = resolve_token(args.host, args.token, args.no_auth)
    if args.no_auth and not is_loopback_name(args.host):
        print(f"lmdev: warning: serving {args.host} with --no-auth: anyone who can reach port {args.port} "
              "can read every run, config and artifact in this store", file=sys.stderr)
    elif args.no_auth:
        print(f"lmdev: warning: --no-auth: no token is asked ({args.host} is only reachable from this "
              "machine)", file=sys.stderr)
    hosts = default_allowed_hosts(args.host) | {h.lower() for h in args.allow_host}
    from lmdev.track.store import read_only_requested

    app = create_app(args.home, token=token, allowed_hosts=hosts, bind=args.host,
                     read_only=read_only_requested(args.read_only))

    sock = _bind(args.host, args.port)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, proxy_headers=False,
                            server_header=False)
    server = uvicorn.Server(config)
    shown = "127.0.0.1" if args.host == "0.0.0.0" else "[::1]" if args.host == "::" else \
        f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    print(f"lmdev ui: serving {app.state.home} at {url}", flush=True)
    if token:
        print("lmdev ui: the token is in this URL only; keep it private", file=sys.stderr, flush=True)
    print("lmdev ui: press Ctrl+C to stop", file=sys.stderr, flush=True)
    if args.open:
        import webbrowser

        webbrowser.open(url)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return 0


def _bind(host: str, port: int) -> socket.socket:
    """Bind (and listen on) the address ourselves: a port in use is a clear error, and the URL
    printed names the real port (also for --port 0)."""
    from lmdev.errors import LmdevError

    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(2048)
    except OSError as exc:
        raise LmdevError(f"cannot serve on {host}:{port}: {exc.strerror or exc}",
                         "the port may be in use (pass another --port, or --port 0 for a free one) "
                         "or the address is not one of this machine's") from None
    sock.set_inheritable(True)
    return sock
