"""``campusgps serve MODEL``: the HTTP API and the web page with a map."""
from __future__ import annotations

import argparse
import sys

HELP = "serve a model: HTTP API (POST /v1/locate) and a web page with a map"
DESCRIPTION = """\
Serve a trained model over HTTP, on 127.0.0.1:8000 by default (use --host 0.0.0.0 to accept other machines).

  GET  /                 web page: drop or pick a photo (phone camera too), see where it was taken on a map
  POST /v1/locate        a photo as multipart field `image`, or the raw bytes as the body ->
                         {"lat", "lon", "radius_m", "neighbors": [...], "flags": [...], "elapsed_ms"}
  GET  /v1/model         model metadata (method, frame, training info, versions) and reference positions
  GET  /v1/reference/ID/thumb.jpg   thumbnail of a reference photo (models that keep them)
  GET  /healthz          {"status": "ok"}
  GET  /docs, /openapi.json         API documentation (works offline; assets are bundled)

Errors are JSON {"error": "..."}: 413 too large (bytes or pixels), 415 not an image, 422 truncated image or
wrong multipart field, 503 busy. The page needs no network: the map is drawn from the model's own reference
photo positions; --tiles adds an online tile layer for users who have internet.

Examples:
  campusgps serve model.cgps
  curl -F image=@photo.jpg http://127.0.0.1:8000/v1/locate
  curl --data-binary @photo.jpg http://127.0.0.1:8000/v1/locate
  campusgps serve model.cgps --tiles 'https://tile.openstreetmap.org/{z}/{x}/{y}.png' \\
      --tiles-attribution '&copy; OpenStreetMap contributors'
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="model bundle written by `campusgps train`")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 for the network)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--max-upload-mb", type=float, default=20.0,
                   help="largest accepted request body in MB; bigger uploads get 413 (default 20)")
    p.add_argument("--max-pixels", type=int, default=50_000_000,
                   help="largest accepted image in pixels, against decompression bombs; 413 above (default 50e6)")
    p.add_argument("--workers", type=int, default=1,
                   help="inference threads, each running whole batches (default 1; the model is shared)")
    p.add_argument("--max-batch", type=int, default=8,
                   help="most photos per model call when requests arrive together (default 8)")
    p.add_argument("--batch-wait-ms", type=float, default=4.0,
                   help="how long a batch waits for more requests after its first (default 4 ms)")
    p.add_argument("--max-pending", type=int, default=64,
                   help="requests in flight before the server answers 503 busy (default 64)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow browser pages from ORIGIN to call the API (repeatable; '*' for any). Off by default")
    p.add_argument("--tiles", default=None, metavar="URL",
                   help="add an online tile layer under the offline basemap, e.g. "
                        "'https://tile.openstreetmap.org/{z}/{x}/{y}.png' (needs internet on the viewer's side)")
    p.add_argument("--tiles-attribution", default="", metavar="TEXT",
                   help="attribution shown for --tiles (e.g. '© OpenStreetMap contributors')")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="server log level (default info; debug also logs every request)")


def run(args) -> int:
    from pathlib import Path

    from campusgps.errors import UserError

    for name, val, lo in (("--port", args.port, 0), ("--workers", args.workers, 1), ("--max-batch", args.max_batch, 1),
                          ("--max-pending", args.max_pending, 1), ("--max-pixels", args.max_pixels, 1)):
        if val < lo or (name == "--port" and val > 65535):
            raise UserError(f"{name} {val} is out of range")
    if not args.max_upload_mb > 0:
        raise UserError(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    if args.tiles and not (args.tiles.startswith("http://") or args.tiles.startswith("https://")):
        raise UserError(f"--tiles must be an http(s) URL template with {{z}}/{{x}}/{{y}}, got {args.tiles!r}")
    path = Path(args.model)
    if not path.is_file():
        raise UserError(f"model file not found: {path} (train one with `campusgps train DATASET --method "
                        f"regression --out {path}`)")

    from campusgps.localizers.base import Localizer
    from campusgps.serving.app import ServeSettings, run_server

    from campusgps.logs import step

    with step("loading the model", input=path):
        loc = Localizer.load(path)  # BundleError (a UserError) -> exit 2, before binding the port
    settings = ServeSettings(max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels, workers=args.workers,
                             max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms,
                             max_pending=args.max_pending, cors_origins=list(args.cors_origin),
                             tiles_url=args.tiles, tiles_attribution=args.tiles_attribution, warmup=True)
    _check_port_free(args.host, args.port)
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "") else args.host
    print(f"campusgps serve: {loc.method} model {path} — page http://{shown}:{args.port}/ , "
          f"API http://{shown}:{args.port}/v1/locate , docs http://{shown}:{args.port}/docs (Ctrl+C to stop)",
          file=sys.stderr, flush=True)
    with step("serving", input=f"{args.host}:{args.port}"):
        run_server(loc, settings, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _check_port_free(host: str, port: int) -> None:
    """Fail with one clear line (exit 2) instead of uvicorn's traceback when the port is taken."""
    import socket

    from campusgps.errors import UserError

    if port == 0:
        return
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e}); pick another --port or stop "
                            f"what is using it")
