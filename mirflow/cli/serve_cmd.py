"""`mirflow serve` (mirflow.serve)."""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys

from mirflow.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``mirflow`` parser."""
    from mirflow.serve.limits import (
        DEFAULT_ANALYSIS_TIMEOUT_S,
        DEFAULT_EMBEDDING,
        DEFAULT_MAX_UPLOAD_BYTES,
    )

    s = sub.add_parser(
        "serve", help="serve a catalog over a read-only HTTP API (docs/api.md)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Serve CATALOG over a read-only HTTP API: track lookup, tempo/key filters, similar "
                    "tracks for a track id or an uploaded audio file. OpenAPI at /openapi.json, docs at /docs.",
    )
    s.add_argument("catalog", help="catalog folder (read only; nothing is written into it)")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to bind; the API has no authentication, so think twice before 0.0.0.0")
    s.add_argument("--port", type=int, default=8000, help="TCP port (0 picks a free one)")
    s.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_BYTES / 2**20,
                   help="largest audio upload to POST /similar, in MiB (413 beyond it)")
    s.add_argument("--embedding", default=DEFAULT_EMBEDDING, help="embedding model the similarity endpoints search")
    s.add_argument("--analysis-timeout", type=float, default=DEFAULT_ANALYSIS_TIMEOUT_S,
                   help="seconds one upload's analysis may take (its worker process is killed after)")
    s.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (access log at info)")
    s.set_defaults(func=cmd_serve)


def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket bound to ``host:port`` (so the real port is known before serving)."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be 0-65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve --host {host!r}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        # Listening now, so a client that reads the printed URL and connects
        # at once waits in the backlog instead of being refused.
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from mirflow.serve import create_app

    if args.max_upload_mb <= 0:
        raise ConfigError("--max-upload-mb must be positive")
    if args.analysis_timeout <= 0:
        raise ConfigError("--analysis-timeout must be positive")
    app = create_app(args.catalog, embedding=args.embedding,
                     max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
                     analysis_timeout_s=args.analysis_timeout)
    sock = _bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {args.catalog} on http://{shown}:{port}  (API docs: http://{shown}:{port}/docs)", flush=True)
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        print("note: the API has no authentication and this address is reachable from other machines",
              file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level=args.log_level, timeout_graceful_shutdown=10)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
