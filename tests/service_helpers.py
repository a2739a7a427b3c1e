"""Helpers for the web service tests: a real uvicorn server on a free loopback port, test images."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Self

import numpy as np


def phantom_png(age_months: float = 120.0, sex: str = "F", size: int = 256, seed: int = 0) -> bytes:
    """A synthetic hand radiograph (boneage.data.hand_phantom) as PNG bytes."""
    from PIL import Image

    from boneage.data import hand_phantom

    buffer = io.BytesIO()
    Image.fromarray(hand_phantom(age_months, sex, size=size, rng=np.random.default_rng(seed))).save(buffer, "PNG")
    return buffer.getvalue()


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


class ThreadServer:
    """``create_app(...)`` served by uvicorn in a background thread on 127.0.0.1 and a free port."""

    def __init__(self, data_dir, **app_kwargs):
        import uvicorn

        from boneage.service.app import create_app

        self.app = create_app(data_dir, **app_kwargs)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)

    @property
    def store(self):
        return self.app.state.service.store

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def submit_in_browser(page, url: str, model_name: str, image: Path, sex: str = "F") -> None:
    """In the browser UI at ``url``: wait for the model ``model_name`` to be announced, choose ``image`` and
    ``sex``, and submit (the caller waits for what it expects to see)."""
    page.goto(url + "/")
    page.wait_for_selector(f"#model-info:has-text('{model_name}')")
    page.set_input_files("#file", str(image))
    page.select_option("#sex", sex)
    page.click("#submit")


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_cli_server(args: list[str], env: dict | None = None, log_path: Path | None = None,
                     timeout: float = 120.0) -> tuple[subprocess.Popen, str]:
    """``python -m boneage serve --port <free> ARGS`` in a subprocess; returns it and its URL once healthy."""
    import httpx

    port = free_port()
    environment = dict(os.environ, **(env or {}))
    command = [sys.executable, "-m", "boneage", "serve", "--port", str(port), *args]
    if log_path is None:
        process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    else:
        with open(log_path, "ab") as out:  # the server keeps its own copy of the file handle
            process = subprocess.Popen(command, env=environment, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"boneage serve exited with code {process.returncode}"
                               + (f"; see {log_path}" if log_path else ""))
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop_cli_server(process)
            raise RuntimeError("boneage serve did not answer /api/health in time")
        time.sleep(0.2)


def stop_cli_server(process: subprocess.Popen, timeout: float = 30.0) -> int:
    """Stop a server started by :func:`start_cli_server` the way Ctrl+C does; returns its exit code."""
    import signal

    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
