"""HTTP service: ``POST /v1/locate`` (photo -> lat, lon, radius_m), model info, and a web page with a map.

Design (see also ``campusgps serve --help``):

* The model is loaded once. Requests are decoded in a small thread pool (bounded), then queued for a
  :class:`~campusgps.serving.batcher.MicroBatcher`: inference threads gather what arrives within a few
  milliseconds (up to ``max_batch`` images) and call ``localizer.predict`` once on the batch. The event loop
  never runs model code, so ``/healthz`` and the page stay responsive while a batch is running.
* The request body is read by us, not by the framework (``api``): ``Content-Length`` is checked before reading
  and the byte count is enforced while reading (413), so a huge upload never reaches memory or disk.
* Every error is JSON ``{"error": "...", "reason": "..."}`` (``errors``); no bad request can take the server down.
* Nothing the page or ``/docs`` needs comes from the network (``page``): Leaflet and Swagger UI are vendored
  under ``static/vendor`` (see the VERSION/LICENSE files there). ``/openapi.json`` is the machine-readable spec.

This module builds the app: :class:`Server` is what the routes share (``request.app.state.server``).
"""
from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from campusgps import __version__
from campusgps.jsonio import jsonable
from campusgps.serving.batcher import MicroBatcher
from campusgps.serving.payloads import reference_payload, thumbnails_supported
from campusgps.serving.settings import ServeSettings


def fitted_metadata(localizer) -> dict:
    """The served model's metadata (bundle metadata without its state); UserError if it is not fitted.

    The one place the server touches the localizer's fitted state.
    """
    localizer.require_fitted()
    meta = localizer.bundle_meta
    if meta is None:
        try:
            meta = localizer.metadata()
        except Exception:  # noqa: BLE001
            meta = {"method": getattr(localizer, "method", "?")}
    meta = {k: v for k, v in meta.items() if k != "state"}  # state can be big and is internal
    return jsonable(meta, max_depth=4, max_items=64)


class Server:
    """What the routes share: the model and what is known about it, the thread pools, the counters."""

    def __init__(self, localizer, settings: ServeSettings):
        self.localizer, self.settings = localizer, settings
        self.meta = fitted_metadata(localizer)
        self.method = getattr(localizer, "method", "?")
        self.max_side = localizer.input_max_side()
        self.refs = reference_payload(localizer)
        self.thumbs = thumbnails_supported(localizer, self.refs)
        self.frame = getattr(localizer, "frame", None)
        self.batcher: MicroBatcher | None = None
        self.decoder: cf.ThreadPoolExecutor | None = None
        self.pending = self.served = self.failed = 0
        self._lock = threading.Lock()
        self.thumbnail = lru_cache(maxsize=512)(self._thumbnail)

    def runtime(self) -> tuple[MicroBatcher, cf.ThreadPoolExecutor]:
        """Thread pools, created on first use and again after a shutdown (tests reuse apps)."""
        s = self.settings
        with self._lock:
            if self.batcher is None:
                self.batcher = MicroBatcher(self.localizer, s.max_batch, s.batch_wait_ms, s.workers, s.max_pending)
                self.decoder = cf.ThreadPoolExecutor(max(1, s.decode_threads), thread_name_prefix="campusgps-decode")
            return self.batcher, self.decoder

    def shutdown(self) -> None:
        with self._lock:
            b, d = self.batcher, self.decoder
            self.batcher = self.decoder = None
        if b is not None:
            b.close()
        if d is not None:
            d.shutdown(wait=False, cancel_futures=True)

    def admit(self) -> bool:
        """Count one more request in flight; False (nothing counted) when ``max_pending`` are already."""
        with self._lock:
            if self.pending >= self.settings.max_pending:
                return False
            self.pending += 1
            return True

    def release(self) -> None:
        self.count("pending", -1)

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def warm_up(self) -> None:
        """One prediction on a grey image, so the first user does not pay for lazy initialisation."""
        import logging

        log = logging.getLogger("uvicorn.error")
        t = time.perf_counter()
        try:
            self.localizer.predict([np.full((240, 320, 3), 127, np.uint8)], batch_size=1)
            log.info("campusgps: model warmed up in %.1f s", time.perf_counter() - t)
        except Exception as e:  # noqa: BLE001 - serving still works; the first request will show the error
            log.warning("campusgps: warm-up prediction failed: %s", e)

    def _thumbnail(self, ref_id: str) -> bytes | None:
        try:
            return self.localizer.reference_thumbnail(ref_id)
        except (KeyError, IndexError, ValueError):
            return None


def create_app(localizer_or_path, settings: ServeSettings | None = None):
    """Build the FastAPI app around a loaded localizer (or a bundle path, loaded here once)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.middleware.cors import CORSMiddleware

    from campusgps.localizers.base import Localizer
    from campusgps.serving import api, page
    from campusgps.serving.errors import install_error_handlers

    settings = settings or ServeSettings()
    loc = Localizer.load(localizer_or_path) if isinstance(localizer_or_path, (str, Path)) else localizer_or_path
    server = Server(loc, settings)

    @asynccontextmanager
    async def lifespan(app):
        server.runtime()
        if settings.warmup:
            await asyncio.get_running_loop().run_in_executor(None, server.warm_up)
        yield
        server.shutdown()

    app = FastAPI(
        title="campusgps",
        version=__version__,
        description="Locate a campus photo: `POST /v1/locate` with a photo (multipart field `image`, or the raw "
                    "bytes as the body) answers latitude, longitude and a radius in metres that holds the true "
                    "position about 90% of the time. The web page is at `/`.",
        docs_url=None, redoc_url=None, lifespan=lifespan,
    )
    app.state.server = server
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST", "OPTIONS"], allow_headers=["*"], max_age=600)
    install_error_handlers(app)
    app.include_router(api.router)
    page.add_page(app)
    return app


def run_server(localizer, settings: ServeSettings) -> None:
    """Serve ``localizer`` with uvicorn on ``settings.host:port`` (one process; inference threads inside).

    Blocks until stopped.
    """
    import uvicorn

    app = create_app(localizer, settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                            access_log=settings.log_level == "debug",
                            limit_concurrency=max(4 * settings.max_pending, 64), timeout_keep_alive=5,
                            server_header=False)
    uvicorn.Server(config).run()
