"""A Git host on loopback for the daemons' Git sources: `git http-backend` (the
smart HTTP protocol, as a real host speaks it) behind a threaded HTTP server, so
converge (libgit2) and Flux's source-controller (go-git) fetch the same way."""

import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .common import run

BACKEND = "/usr/lib/git-core/git-http-backend"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _cgi(self):
        path, _, query = self.path.partition("?")
        body = self._body()
        env = dict(os.environ, GIT_PROJECT_ROOT=str(self.server.root), GIT_HTTP_EXPORT_ALL="1",
                   PATH_INFO=path, QUERY_STRING=query, REQUEST_METHOD=self.command,
                   CONTENT_TYPE=self.headers.get("Content-Type", ""), CONTENT_LENGTH=str(len(body)),
                   REMOTE_ADDR="127.0.0.1", HTTP_GIT_PROTOCOL=self.headers.get("Git-Protocol", ""))
        if self.headers.get("Content-Encoding") == "gzip":
            env["HTTP_CONTENT_ENCODING"] = "gzip"
        out = subprocess.run([BACKEND], input=body, env=env, capture_output=True).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode().split("\r\n"):
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.strip().split()[0])
            elif key:
                headers.append((key, value.strip()))
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _cgi


class GitServer:
    """Serves every bare repository under `root` at http://127.0.0.1:PORT/NAME.git."""

    def __init__(self, root):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.root = self.root
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, name):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}.git"

    def stop(self):
        self.httpd.shutdown()


class Repo:
    """A working copy whose commits are pushed to a bare repository of the server."""

    def __init__(self, server, name, work):
        self.work = Path(work)
        self.bare = server.root / f"{name}.git"
        self.url = server.url(name)
        run(["git", "init", "-q", "--bare", "-b", "main", self.bare])
        run(["git", "init", "-q", "-b", "main", self.work])
        for key, value in (("user.name", "bench"), ("user.email", "bench@localhost"), ("commit.gpgsign", "false")):
            self.git("config", key, value)
        self.git("remote", "add", "origin", str(self.bare))

    def git(self, *args):
        return run(["git", "-C", self.work, *args])[1].stdout.strip()

    def commit_all(self, message):
        """Commits every change and pushes it (over the file system, so the push
        costs no HTTP); returns the commit."""
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        self.git("push", "-q", "origin", "main")
        return self.git("rev-parse", "HEAD")
