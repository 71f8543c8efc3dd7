"""Start the LightX2V-compatible task service against the local ComfyUI.

    python -m infinitetalk_worker.lightx2v [--host 0.0.0.0] [--port 8000]

Settings come from the environment like the RunPod handler's (COMFY_URL, LIGHTX2V_CACHE_DIR,
LIGHTX2V_MAX_QUEUE_SIZE, ...); --host and --port override LIGHTX2V_HOST and LIGHTX2V_PORT.
Port 0 picks a free port; the line "READY <port>" on stdout says which, once it accepts requests.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys

import uvicorn

from ..errors import ConfigError
from ..settings import Settings
from .app import create_app


def main(argv: list[str] | None = None) -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as e:
        print(f"infinitetalk lightx2v: {e}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog="python -m infinitetalk_worker.lightx2v", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default=settings.lightx2v_host, help="address to listen on (LIGHTX2V_HOST)")
    parser.add_argument("--port", type=int, default=settings.lightx2v_port, help="port, 0 for any free one (LIGHTX2V_PORT)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=settings.log_level.upper(), stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    try:
        settings.lightx2v_cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(
            f"infinitetalk lightx2v: LIGHTX2V_CACHE_DIR: cannot create {settings.lightx2v_cache_dir} "
            f"({e.strerror}); set it to a writable folder",
            file=sys.stderr,
        )
        return 2
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as e:
        print(f"infinitetalk lightx2v: cannot listen on {args.host}:{args.port}: {e.strerror}", file=sys.stderr)
        return 2

    server = _AnnouncingServer(uvicorn.Config(create_app(settings), log_level="warning", log_config=None))
    server.run(sockets=[sock])
    return 0 if server.started else 1


class _AnnouncingServer(uvicorn.Server):
    """Prints "READY <port>" once requests are accepted, for scripts and tests that start it."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and sockets:
            print(f"READY {sockets[0].getsockname()[1]}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
