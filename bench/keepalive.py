"""A lean HTTP/1.1 client for load generators: one kept-alive connection per sender.

The storm's senders share the machine with the server they measure. Through httpx, posting a
webhook cost the load generator more CPU than it cost Responder to decide it (0.13 CPU-s per
1,000 alerts against 0.10), and the two fought for the same two cores. Alertmanager sends from
another machine, in Go; this client writes each request whole and reads the answer by its
Content-Length, so the cores go to the server being measured.
"""

from __future__ import annotations

import asyncio


class ProtocolError(Exception):
    """The server's answer was not an HTTP/1.1 response this client understands."""


class KeepAlive:
    """POSTs over one connection, reopened when the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        """The answer's status and body."""
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
            f"content-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n"
        ).encode()
        self._writer.write(head + body)
        try:
            answer_head = await self._reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as closed:
            await self.close()
            raise ProtocolError("the server closed the connection before answering") from closed
        status_line, *lines = answer_head.decode("latin-1").split("\r\n")
        try:
            status = int(status_line.split(" ", 2)[1])
        except (IndexError, ValueError) as bad:
            raise ProtocolError(f"not an HTTP status line: {status_line!r}") from bad
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" not in headers:
            raise ProtocolError(f"an answer without content-length: {headers}")
        answer = await self._reader.readexactly(int(headers["content-length"]))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, answer

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except ConnectionError:
                pass
            self._writer = None
            self._reader = None
