"""A server for the tests that need a real one: uvicorn in a thread, on loopback."""

import contextlib
import socket
import threading
import time


@contextlib.contextmanager
def serving(app):
    """``app`` served by uvicorn in a thread on 127.0.0.1 (a free port); yields its url."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    running = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    for _ in range(400):
        if running.started:
            break
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        running.should_exit = True
        thread.join(timeout=30)
