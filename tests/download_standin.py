"""A stand-in for CIFAR-10's download server (no network in tests): a small archive in the
official layout, served from 127.0.0.1 by a thread of the test process."""

from __future__ import annotations

import hashlib
import io
import pickle
import socket
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def standin_archive(per_batch: int = 4, padding: int = 0) -> bytes:
    """cifar-10-python.tar.gz in miniature: cifar-10-batches-py/data_batch_1..5, test_batch and
    batches.meta as pickles of ``per_batch`` random images each; ``padding`` random bytes in an
    extra file make it big enough to stop halfway."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            rows = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
            add(name, pickle.dumps({"data": rows, "labels": [int(v) for v in rng.integers(0, 10, per_batch)]}))
        add("batches.meta", pickle.dumps({"label_names": CLASSES}))
        if padding:
            add("readme.html", rng.integers(0, 256, padding, dtype=np.uint8).tobytes())
    return buf.getvalue()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def closed_port_url() -> str:
    """An address on 127.0.0.1 where nothing listens: a connection is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/cifar-10-python.tar.gz"


@contextmanager
def serve(payload: bytes, chunk: int = 1 << 16, pause_s: float = 0.0) -> Iterator[str]:
    """Serve ``payload`` at the yielded URL, ``chunk`` bytes at a time with ``pause_s`` between."""

    class Handler(BaseHTTPRequestHandler):
        def _head(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/gzip")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()

        def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
            self._head()

        def do_GET(self) -> None:  # noqa: N802
            self._head()
            try:
                for i in range(0, len(payload), chunk):
                    self.wfile.write(payload[i:i + chunk])
                    self.wfile.flush()
                    time.sleep(pause_s)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading: what a Stop does

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/cifar-10-python.tar.gz"
    finally:
        server.shutdown()
        server.server_close()
