"""Start the viewer: bind a local socket (random port by default), print the tokenised URL, serve until Ctrl-C."""

from __future__ import annotations

import secrets
import socket
import threading
import webbrowser

import uvicorn

from medfoundry.viewer.app import create_app
from medfoundry.viewer.session import ViewerSession


class ViewerServer:
    """A uvicorn server for one :class:`ViewerSession`, bound before it starts so its URL is known."""

    def __init__(self, session: ViewerSession, host: str = "127.0.0.1", port: int = 0) -> None:
        self.token = secrets.token_urlsafe(24)
        self.app = create_app(session, self.token)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))
        self.host, self.port = host, self.socket.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", access_log=False))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The page's address including the token."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/?token={self.token}"

    def run(self, open_browser: bool = False) -> None:
        """Serve in this thread until interrupted."""
        if open_browser:
            threading.Timer(1.0, webbrowser.open, args=(self.url,)).start()
        self.server.run(sockets=[self.socket])

    def start(self) -> ViewerServer:
        """Serve in a background thread (tests, notebooks); returns once the server accepts connections."""
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)
        self._thread.start()
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the viewer server stopped while starting")
            threading.Event().wait(0.02)
        return self

    def stop(self) -> None:
        """Ask a background server to finish and wait for it."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.socket.close()
