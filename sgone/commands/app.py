"""`sgone app`: serve the local web app (needs the `app` extra)."""
from __future__ import annotations

import argparse

from sgone.commands.flags import add_device_argument, add_size_argument
from sgone.errors import SgoneError
from sgone.options import DEFAULT_MODEL


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "app", help="start the local web app (paint a mask, segment photos and clips in the browser)",
        description="Serve a web page for one-shot segmentation: paint the object on a support photo, add query "
                    "photos or a short clip, download the masks. Listens on 127.0.0.1 only unless --host says "
                    "otherwise; nothing is fetched from the internet. Needs: pip install 'sgone[app]'.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--model", default=None,
                   help="model selected when the page opens: a registered name, shipped checkpoint or checkpoint "
                        f"path (default: the default of `sgone segment`, {DEFAULT_MODEL})")
    add_size_argument(p)
    add_device_argument(p)
    p.add_argument("--max-upload-mb", type=float, default=25.0, help="largest file a page may upload, in MB")
    p.add_argument("--max-megapixels", type=float, default=25.0, help="largest image or frame, in megapixels")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import importlib.util
    import sys

    if importlib.util.find_spec("gradio") is None:
        from sgone.app import INSTALL_HINT

        print(f"sgone app: {INSTALL_HINT}", file=sys.stderr)
        return 2
    if not 1 <= args.port <= 65535:
        raise SgoneError(f"--port {args.port}: must be between 1 and 65535")
    if args.size < 0:
        raise SgoneError(f"--size {args.size}: must be positive (0 keeps the original size)")
    if args.max_upload_mb <= 0 or args.max_megapixels <= 0:
        raise SgoneError("--max-upload-mb and --max-megapixels must be positive")
    from sgone.app import Limits, serve
    from sgone.runtimes import resolve_device

    resolve_device(args.device)  # a bad device fails here, before the server starts
    from sgone.models.registry import load_model
    from sgone.models.zoo import MODELS

    if args.model and "arch" not in MODELS.get(args.model, {}):
        load_model(args.model)  # an unknown name or broken checkpoint fails here, as one line
    limits = Limits(max_upload_mb=args.max_upload_mb, max_pixels=int(args.max_megapixels * 1e6))
    try:
        serve(host=args.host, port=args.port, model=args.model, device=args.device, size=args.size or None,
              limits=limits)
    except OSError as exc:
        raise SgoneError(f"{args.host}:{args.port}: cannot serve there ({exc.strerror or exc})") from None
    return 0
