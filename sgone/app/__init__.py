"""`sgone app`: a local web page for one-shot segmentation (Gradio, served offline).

    from sgone.app import serve
    serve(host="127.0.0.1", port=7860)

Gradio's analytics, version check and share links are off: the page and the server reach
nothing beyond the machine. Needs the `app` extra (`pip install 'sgone[app]'`).
"""
from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path

from sgone.app.core import Limits
from sgone.options import DEFAULT_DEVICE, DEFAULT_SIZE

# set before Gradio is imported: it reads them at import time
OFFLINE_ENV = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "GRADIO_SHARE": "False",
    "GRADIO_SSR_MODE": "False",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}

__all__ = ["Limits", "build_app", "serve", "INSTALL_HINT"]

INSTALL_HINT = "the web app needs Gradio: pip install 'sgone[app]' (or run: bash scripts/setup.sh)"


def _offline() -> None:
    os.environ.update(OFFLINE_ENV)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def build_app(*args, **kwargs):
    """`sgone.app.ui.build_app` with Gradio's network calls off; see there for the arguments."""
    _offline()
    from sgone.app.ui import build_app as build

    return build(*args, **kwargs)


def serve(host: str = "127.0.0.1", port: int = 7860, model: str | None = None, device: str = DEFAULT_DEVICE,
          size: int | None = DEFAULT_SIZE, limits: Limits | None = None, ready=None) -> None:
    """Build and serve the app until interrupted; every temporary file is removed on exit.

    `ready(url)` (if given) is called once the server listens; the default prints the address.
    """
    limits = limits or Limits()
    workdir = Path(tempfile.mkdtemp(prefix="sgone-app-"))
    _offline()
    os.environ["GRADIO_TEMP_DIR"] = str(workdir / "uploads")  # uploads and results go away with workdir
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main else None  # `kill` also cleans up
    try:
        app = build_app(model=model, device=device, size=size, limits=limits, workdir=workdir)
        app.launch(server_name=host, server_port=port, share=False, inbrowser=False, quiet=True, show_error=False,
                   max_file_size=int(limits.max_upload_mb * 1024 * 1024),  # bytes: Gradio reads no "0.5mb"
                   prevent_thread_lock=True, ssr_mode=False, footer_links=[])
        try:
            url = f"http://{host}:{app.server_port}/"
            (ready or (lambda u: print(f"sgone app: open {u} in a browser (Ctrl+C stops it)", flush=True)))(url)
            app.block_thread()
        finally:
            app.close()
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(workdir, ignore_errors=True)
