"""An asyncio event loop for MLflow's uvicorn workers that answers keep-alive requests without
a 40 ms stall: ``--uvicorn-opts "--loop bedrot_lab.server.nodelay:NoDelayLoop"``.

With ``--workers`` above 1, uvicorn binds the listening socket itself without naming its protocol
(``proto`` 0), and asyncio then leaves Nagle's algorithm on for every accepted connection (it sets
``TCP_NODELAY`` only where ``proto`` is TCP; uvicorn issue #3149). A response goes out in two
writes, headers then body; the body waits for the client's ACK of the headers, which the client
delays by 40 ms on Linux. Every REST call after a connection's first took ~45 ms instead of ~5.
Setting ``TCP_NODELAY`` on the listening socket fixes it: accepted connections inherit it.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any


class NoDelayLoop(asyncio.SelectorEventLoop):
    """asyncio's own loop, with ``TCP_NODELAY`` on the TCP sockets handed to ``create_server``."""

    async def create_server(self, protocol_factory: Any, host: Any = None, port: Any = None, *,
                            sock: socket.socket | None = None, **kwargs: Any) -> asyncio.Server:
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return await super().create_server(protocol_factory, host, port, sock=sock, **kwargs)
