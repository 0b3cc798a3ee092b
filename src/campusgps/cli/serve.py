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
    from campusgps.configs import add_dataclass_arguments
    from campusgps.serving.settings import ServeSettings

    p.add_argument("model", metavar="MODEL", help="model bundle written by `campusgps train`")
    add_dataclass_arguments(p, ServeSettings, "server options", skip={"warmup"})


def run(args) -> int:
    from pathlib import Path

    from campusgps.configs import from_args
    from campusgps.errors import UserError
    from campusgps.serving.settings import ServeSettings

    settings = from_args(ServeSettings, args, warmup=True)  # the command always warms the model up
    settings.validate()
    path = Path(args.model)
    if not path.is_file():
        raise UserError(f"model file not found: {path} (train one with `campusgps train DATASET --method "
                        f"regression --out {path}`)")

    from campusgps.localizers.base import Localizer
    from campusgps.logs import step
    from campusgps.serving.app import run_server

    with step("loading the model", input=path):
        loc = Localizer.load(path)  # BundleError (a UserError) -> exit 2, before binding the port
    _check_port_free(settings.host, settings.port)
    shown = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
    url = f"http://{shown}:{settings.port}"
    print(f"campusgps serve: {loc.method} model {path} — page {url}/ , API {url}/v1/locate , docs {url}/docs "
          f"(Ctrl+C to stop)", file=sys.stderr, flush=True)
    with step("serving", input=f"{settings.host}:{settings.port}"):
        run_server(loc, settings)
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
