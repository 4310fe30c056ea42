"""Accept connections and serve each in a task of its own: the loop both test servers share.

    listener = Listener(respond)          # respond(request, writer) -> keep the connection?
    port = await listener.listen("127.0.0.1", 0)
    listener.stop()                       # refuse: stop listening, end open connections
    await listener.listen()               # listen again on the same port
    await listener.close()                # stop, and wait until every connection has ended

`respond` gets each parsed request and the connection's writer: most answer with
http.perform, a server that must write raw bytes (or nothing, ever) writes them itself. A
request that cannot be parsed gets its 4xx without reaching `respond`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from batchmap.fakeserver.http import (
    MAX_HEAD,
    BadRequest,
    Request,
    perform,
    read_request,
    refusal,
)

Respond = Callable[[Request, asyncio.StreamWriter], Awaitable[bool]]


class Listener:
    """A listening socket and the connections it accepted, each answered through `respond`."""

    def __init__(self, respond: Respond, *, backlog: int = 100) -> None:
        self._respond = respond
        self._backlog = backlog
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.host, self.port = "127.0.0.1", 0

    @property
    def listening(self) -> bool:
        """True while the port accepts connections."""
        return self._server is not None

    async def listen(self, host: str | None = None, port: int | None = None) -> int:
        """Listen on host:port (0 picks a free port; by default the last ones); the bound port."""
        self.host = self.host if host is None else host
        self.port = self.port if port is None else port
        if self._server is None:
            self._server = await asyncio.start_server(
                self._accept, self.host, self.port, limit=MAX_HEAD, backlog=self._backlog
            )
            self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def stop(self) -> None:
        """Refuse new connections and end the open ones (they end on the loop's next turns)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in self._connections:
            task.cancel()

    async def close(self) -> None:
        """Stop, and return once every connection has ended."""
        server = self._server
        self.stop()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve a new connection in a task of our own, so stop() can end it quietly.

        (A coroutine callback would run in asyncio's task, which logs a traceback when a
        cancelled connection is torn down, e.g. by asyncio.run at exit.)
        """
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer requests on one connection until either side closes it."""
        try:
            while True:
                try:
                    request = await read_request(reader)
                except BadRequest as error:
                    await perform(writer, refusal(error), keep_alive=False)
                    break
                if request is None or not await self._respond(request, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away mid-request or mid-answer: not the server's problem
        except asyncio.CancelledError:
            writer.transport.abort()  # stopped: nothing more goes out, however much is queued
            raise
        finally:
            writer.close()
