"""HTTP service: ``POST /v1/locate`` (photo -> lat, lon, radius_m), model info, and a web page with a map.

Design (see also ``campusgps serve --help``):

* The model is loaded once. Requests are decoded in a small thread pool (bounded), then queued for a
  :class:`MicroBatcher`: inference threads gather what arrives within a few milliseconds (up to
  ``max_batch`` images) and call ``localizer.predict`` once on the batch. The event loop never runs
  model code, so ``/healthz`` and the page stay responsive while a batch is running.
* The request body is read by us, not by the framework: ``Content-Length`` is checked before reading and
  the byte count is enforced while reading (413), so a huge upload never reaches memory or disk.
* Every error is JSON ``{"error": "...", "reason": "..."}``; no bad request can take the server down.
* Only the :class:`~campusgps.localizers.base.Localizer` interface is used, so every method works:
  neighbours come from ``Prediction.neighbors``, thumbnails from ``reference_thumbnail(id)``, basemap
  points from the optional ``reference_positions()``.
* Nothing the page or ``/docs`` needs comes from the network: Leaflet and Swagger UI are vendored under
  ``static/vendor`` (see the VERSION/LICENSE files there). ``/openapi.json`` is the machine-readable spec.
"""

import asyncio
import concurrent.futures as cf
import math
import queue
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from campusgps import __version__
from campusgps.errors import ImageError

STATIC_DIR = Path(__file__).parent / "static"
IMAGE_FIELD = "image"
MAX_NEIGHBORS = 20
MAX_REFERENCE_POINTS = 20_000
_REF_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


@dataclass
class ServeSettings:
    """Server options (``campusgps serve`` flags map onto these)."""

    max_upload_mb: float = 20.0          # largest request body accepted (413 above)
    max_pixels: int = 50_000_000         # decoded pixel limit (decompression bombs -> 413)
    workers: int = 1                     # inference threads (each runs whole batches)
    decode_threads: int = 2              # threads decoding uploads
    max_batch: int = 8                   # most images per predict() call
    batch_wait_ms: float = 4.0           # how long a batch waits for company after its first image
    max_pending: int = 64                # requests in flight before answering 503 (bounded memory)
    cors_origins: list[str] = field(default_factory=list)   # off by default
    tiles_url: str | None = None         # optional online tile layer for the page, e.g. OpenStreetMap
    tiles_attribution: str = ""
    request_timeout_s: float = 60.0      # a request waiting longer for inference gets 503
    warmup: bool = False                 # run one prediction before accepting requests (lazy model init)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class ApiError(Exception):
    """Becomes ``{"error": message, "reason": reason}`` with ``status``."""

    def __init__(self, status: int, message: str, reason: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.reason, self.headers = status, message, reason, headers or {}


# HTTP status for each ImageError reason
_IMAGE_ERROR_STATUS = {"not_an_image": 415, "decompression_bomb": 413, "truncated": 422,
                       "too_small": 422, "unreadable": 422}


# --------------------------------------------------------------------------------------------------------
# micro-batching
# --------------------------------------------------------------------------------------------------------
class MicroBatcher:
    """Gathers images submitted from any thread or event loop and runs ``localizer.predict`` on batches.

    ``submit(array)`` returns a :class:`concurrent.futures.Future` resolving to a per-image result dict
    (or raising). ``workers`` threads each take the first waiting image, wait up to ``wait_ms`` for more
    (at most ``max_batch``), then predict the whole batch. It only waits while other requests are on their
    way (announced with :meth:`expect`, e.g. still decoding), so a lone request adds no latency. The queue is bounded: :meth:`submit` raises
    :class:`queue.Full` when ``max_queue`` images are already waiting.
    """

    def __init__(self, localizer, max_batch: int = 8, wait_ms: float = 4.0, workers: int = 1,
                 max_queue: int = 64):
        self.localizer = localizer
        self.max_batch = max(1, int(max_batch))
        self.wait_s = max(0.0, wait_ms) / 1000.0
        self._q: queue.Queue = queue.Queue(maxsize=max(1, max_queue))
        self._stop = threading.Event()
        self.batches = 0
        self.images = 0
        self._expected = 0  # requests announced (decoding) but not yet submitted
        self._exp_lock = threading.Lock()
        self._threads = [threading.Thread(target=self._loop, name=f"campusgps-infer-{i}", daemon=True)
                         for i in range(max(1, int(workers)))]
        for t in self._threads:
            t.start()

    def expect(self, n: int = 1) -> None:
        """Announce (+1) or withdraw (-1) a request that will soon :meth:`submit`."""
        with self._exp_lock:
            self._expected = max(0, self._expected + n)

    def submit(self, array: np.ndarray, expected: bool = False) -> cf.Future:
        """Queue one image; ``expected=True`` when it was announced with :meth:`expect`."""
        if expected:
            self.expect(-1)
        if self._stop.is_set():
            raise RuntimeError("inference workers are shut down")
        fut: cf.Future = cf.Future()
        self._q.put_nowait((array, fut, time.perf_counter()))
        return fut

    def close(self, timeout: float = 5.0):
        self._stop.set()
        for _ in self._threads:
            try:
                self._q.put_nowait(None)
            except queue.Full:
                pass
        for t in self._threads:
            t.join(timeout)
        while True:  # fail whatever is still queued instead of leaving callers hanging
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                break
            if item is not None and not item[1].done():
                item[1].set_exception(RuntimeError("server is shutting down"))

    def _gather(self) -> list | None:
        first = self._q.get()
        if first is None:
            return None
        batch = [first]
        deadline = time.perf_counter() + self.wait_s
        while len(batch) < self.max_batch:
            if self._q.empty() and self._expected == 0:
                break  # nobody else is on the way: do not make this request wait
            left = deadline - time.perf_counter()
            try:
                item = self._q.get(timeout=left) if left > 0 else self._q.get_nowait()
            except queue.Empty:
                break
            if item is None:  # shutdown: finish this batch, let the loop see the stop flag
                self._stop.set()
                break
            batch.append(item)
        return batch

    def _loop(self):
        while not self._stop.is_set():
            batch = self._gather()
            if batch is None:
                break
            batch = [b for b in batch if b[1].set_running_or_notify_cancel()]
            if batch:
                self._run(batch)

    def _run(self, batch: list):
        t0 = time.perf_counter()
        try:
            results = self._predict([b[0] for b in batch])
        except Exception as e:  # noqa: BLE001 - reported to the requests of this batch
            if len(batch) == 1:
                results = [e]
            else:  # one bad image must not fail its batch-mates: retry one by one
                results = []
                for b in batch:
                    try:
                        results.extend(self._predict([b[0]]))
                    except Exception as e:  # noqa: BLE001 - reported to that request only
                        results.append(e)
        t1 = time.perf_counter()
        self.batches += 1
        self.images += len(batch)
        for (_, fut, queued_at), res in zip(batch, results):
            if isinstance(res, BaseException):
                fut.set_exception(res)
            else:
                res["timing"] = {"queue_ms": (t0 - queued_at) * 1000, "predict_ms": (t1 - t0) * 1000,
                                 "batch_size": len(batch)}
                fut.set_result(res)

    def _predict(self, arrays: list[np.ndarray]) -> list[dict]:
        p = self.localizer.predict(arrays, batch_size=max(len(arrays), 1))
        out = []
        for i in range(len(arrays)):
            out.append({"lat": p.lat[i], "lon": p.lon[i], "radius_m": p.radius_m[i],
                        "neighbors": p.neighbors[i] if p.neighbors else [],
                        "flags": p.flags[i] if p.flags else [], "error": p.errors[i] if p.errors else None})
        return out


# --------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------
def _finite_or_none(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _jsonable(v: Any, depth: int = 0) -> Any:
    """numpy scalars/arrays and NaN -> plain JSON values (NaN/inf -> None)."""
    if depth > 4:
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return _finite_or_none(v)
    if isinstance(v, str):
        return v
    if isinstance(v, bytes):
        return None
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist(), depth + 1) if v.size <= 64 else None
    if isinstance(v, dict):
        return {str(k): _jsonable(x, depth + 1) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x, depth + 1) for x in v[:64]]
    if v is None:
        return None
    return str(v)


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Andrew's monotone chain. (N, 2) -> (M, 2) hull vertices, counter-clockwise (M <= N)."""
    pts = np.unique(np.asarray(points, dtype=np.float64), axis=0)
    if len(pts) <= 2:
        return pts
    pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list = []
    for p in pts[::-1]:
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.array(lower[:-1] + upper[:-1])


def reference_payload(localizer) -> dict:
    """The model's reference positions for the page's offline basemap (points + outline).

    Uses the optional ``localizer.reference_positions()``; accepts a dict of arrays, a DataFrame, a list
    of dicts or an (N, 2) lat/lon array. Falls back to an empty set (the page then centres on the frame
    origin) if the method keeps no positions or returns something unusable.
    """
    empty = {"available": False, "n": 0, "lat": [], "lon": [], "id": None, "hull": [], "subsampled": False}
    fn = getattr(localizer, "reference_positions", None)
    if not callable(fn):
        return empty
    try:
        raw = fn()
    except Exception:  # noqa: BLE001 - a basemap must never stop the server
        return empty
    if raw is None:
        return empty
    try:
        ids = None
        if hasattr(raw, "to_dict") and hasattr(raw, "columns"):  # pandas DataFrame
            raw = {c: raw[c].to_numpy() for c in raw.columns}
        if isinstance(raw, (list, tuple)) and raw and isinstance(raw[0], dict):
            raw = {k: [r.get(k) for r in raw] for k in ("lat", "lon", "id")}
        if isinstance(raw, dict):
            lat = np.asarray(raw["lat"], dtype=np.float64).ravel()
            lon = np.asarray(raw["lon"], dtype=np.float64).ravel()
            if raw.get("id") is not None and len(raw["id"]) == len(lat) and all(x is not None for x in raw["id"]):
                ids = [str(x) for x in raw["id"]]
        else:
            arr = np.asarray(raw, dtype=np.float64)
            lat, lon = arr[:, 0], arr[:, 1]
        ok = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
        idx = np.flatnonzero(ok)
        if len(idx) == 0:
            return empty
        hull = convex_hull(np.stack([lat[idx], lon[idx]], axis=1))
        subsampled = len(idx) > MAX_REFERENCE_POINTS
        if subsampled:
            idx = idx[np.linspace(0, len(idx) - 1, MAX_REFERENCE_POINTS).round().astype(int)]
        return {"available": True, "n": int(ok.sum()),
                "lat": np.round(lat[idx], 7).tolist(), "lon": np.round(lon[idx], 7).tolist(),
                "id": [ids[i] for i in idx] if ids else None,
                "hull": np.round(hull, 7).tolist(), "subsampled": bool(subsampled)}
    except Exception:  # noqa: BLE001
        return empty


def _model_metadata(localizer) -> dict:
    meta = getattr(localizer, "bundle_meta", None)
    if meta is None:
        try:
            meta = localizer.metadata()
        except Exception:  # noqa: BLE001
            meta = {"method": getattr(localizer, "method", "?")}
    meta = {k: v for k, v in meta.items() if k != "state"}  # state can be big and is internal
    return _jsonable(meta)


def _thumbnails_supported(localizer, refs: dict) -> bool:
    from campusgps.localizers.base import Localizer

    fn = getattr(type(localizer), "reference_thumbnail", None)
    if fn is None or fn is Localizer.reference_thumbnail:
        return False
    if refs.get("id"):  # probe one: methods that can keep thumbnails may have been trained without
        try:
            return localizer.reference_thumbnail(refs["id"][0]) is not None
        except Exception:  # noqa: BLE001
            return False
    return True


def _image_error_message(e: ImageError, max_pixels: int | None = None) -> str:
    msg = str(e)
    if msg.startswith("<bytes>: "):
        msg = msg[len("<bytes>: "):]
    if e.reason == "decompression_bomb" and max_pixels and "server's pixel limit" not in msg:
        msg += f"; the server's pixel limit is {max_pixels / 1e6:g} MP (option --max-pixels)"
    return f"uploaded file: {msg}"


def _error_response(status: int, message: str, reason: str, headers: dict | None = None):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": message, "reason": reason}, status_code=status, headers=headers)


# --------------------------------------------------------------------------------------------------------
# the app
# --------------------------------------------------------------------------------------------------------
def create_app(localizer_or_path, settings: ServeSettings | None = None):
    """Build the FastAPI app around a loaded localizer (or a bundle path, loaded here once)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.middleware.cors import CORSMiddleware
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from campusgps.exif.image import load_image
    from campusgps.localizers.base import Localizer

    settings = settings or ServeSettings()
    loc = Localizer.load(localizer_or_path) if isinstance(localizer_or_path, (str, Path)) else localizer_or_path
    loc._require_fitted()
    method = getattr(loc, "method", "?")
    max_side = loc.input_max_side()
    refs = reference_payload(loc)
    thumbs = _thumbnails_supported(loc, refs)
    model_meta = _model_metadata(loc)
    frame = getattr(loc, "frame", None)

    state: dict[str, Any] = {"batcher": None, "decoder": None, "pending": 0, "served": 0, "failed": 0}
    lock = threading.Lock()

    def runtime():
        """Thread pools, created on first use and again after a shutdown (tests reuse apps)."""
        with lock:
            if state["batcher"] is None:
                state["batcher"] = MicroBatcher(loc, settings.max_batch, settings.batch_wait_ms,
                                                settings.workers, settings.max_pending)
                state["decoder"] = cf.ThreadPoolExecutor(max(1, settings.decode_threads),
                                                         thread_name_prefix="campusgps-decode")
            return state["batcher"], state["decoder"]

    def shutdown():
        with lock:
            b, d = state["batcher"], state["decoder"]
            state["batcher"] = state["decoder"] = None
        if b is not None:
            b.close()
        if d is not None:
            d.shutdown(wait=False, cancel_futures=True)

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        runtime()
        if settings.warmup:  # first user should not pay for lazy initialisation (backbone, index, ...)
            import logging

            t = time.perf_counter()
            try:
                await asyncio.get_running_loop().run_in_executor(
                    None, lambda: loc.predict([np.full((240, 320, 3), 127, np.uint8)], batch_size=1))
                logging.getLogger("uvicorn.error").info("campusgps: model warmed up in %.1f s",
                                                        time.perf_counter() - t)
            except Exception as e:  # noqa: BLE001 - serving still works; the first request will show the error
                logging.getLogger("uvicorn.error").warning("campusgps: warm-up prediction failed: %s", e)
        yield
        shutdown()

    app = FastAPI(
        title="campusgps",
        version=__version__,
        description="Locate a campus photo: `POST /v1/locate` with a photo (multipart field `image`, or the raw "
                    "bytes as the body) answers latitude, longitude and a radius in metres that holds the true "
                    "position about 90% of the time. The web page is at `/`.",
        docs_url=None, redoc_url=None, lifespan=lifespan,
    )
    app.state.localizer = loc
    app.state.settings = settings
    app.state.shutdown = shutdown
    app.state.runtime = runtime

    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST", "OPTIONS"], allow_headers=["*"], max_age=600)

    # --- errors: always JSON {"error": ...} -------------------------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return _error_response(exc.status, exc.message, exc.reason, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc):
        msg = {404: f"not found: {request.url.path}", 405: f"method {request.method} not allowed here"}.get(
            exc.status_code, str(exc.detail))
        return _error_response(exc.status_code, msg, "http_error", getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc):
        return _error_response(422, f"invalid request: {exc.errors()}", "invalid_request")

    @app.exception_handler(Exception)
    async def _internal_error(request, exc):
        with lock:
            state["failed"] += 1
        return _error_response(500, f"internal error while handling {request.url.path}: "
                                    f"{type(exc).__name__}: {exc}", "internal")

    # --- API -----------------------------------------------------------------------------------------------
    async def read_body(request: Request) -> bytes:
        limit = settings.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                n = int(declared)
            except ValueError:
                raise ApiError(400, f"bad Content-Length header {declared!r}", "bad_request")
            if n > limit:
                raise ApiError(413, f"upload of {n / 1e6:.1f} MB exceeds the limit of {limit / 1e6:.1f} MB "
                                    f"(server option --max-upload-mb)", "too_large")
        from starlette.requests import ClientDisconnect

        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"upload exceeds the limit of {limit / 1e6:.1f} MB "
                                        f"(server option --max-upload-mb)", "too_large")
                chunks.append(chunk)
        except ClientDisconnect:
            raise ApiError(400, "the client went away before the upload was complete", "client_disconnect")
        return b"".join(chunks)

    async def extract_image(request: Request, body: bytes) -> bytes:
        ctype = request.headers.get("content-type", "").lower()
        if not ctype.startswith("multipart/form-data"):
            return body  # raw bytes (any content type: curl --data-binary sends x-www-form-urlencoded)
        from starlette.requests import Request as StarletteRequest

        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await StarletteRequest(request.scope, replay).form(max_files=8, max_fields=32)
        except Exception as e:  # noqa: BLE001 - malformed multipart
            raise ApiError(422, f"malformed multipart body ({e}); send the photo as multipart field "
                                f"'{IMAGE_FIELD}' or as the raw request body", "bad_multipart")
        try:
            part = form.get(IMAGE_FIELD)
            if part is None:
                got = ", ".join(repr(k) for k in form.keys()) or "none"
                raise ApiError(422, f"multipart upload has no field '{IMAGE_FIELD}' (fields received: {got}); "
                                    f"send the photo as the '{IMAGE_FIELD}' field", "missing_field")
            if isinstance(part, str):
                raise ApiError(422, f"multipart field '{IMAGE_FIELD}' must be a file (a photo), not text",
                               "missing_field")
            return await part.read()
        finally:
            await form.close()

    def decode(data: bytes) -> np.ndarray:
        return load_image(data, max_side=max_side, max_pixels=settings.max_pixels)

    def neighbor_json(d: dict) -> dict:
        out = _jsonable({k: v for k, v in d.items() if k not in ("image", "thumbnail", "descriptor")})
        out["lat"], out["lon"] = _finite_or_none(d.get("lat")), _finite_or_none(d.get("lon"))
        out["score"] = _finite_or_none(d.get("score"))
        rid = d.get("id")
        if thumbs and rid is not None and _REF_ID_RE.match(str(rid)):
            out["thumbnail"] = f"v1/reference/{rid}/thumb.jpg"
        return out

    @app.post(
        "/v1/locate",
        summary="Locate one photo",
        description=f"Body: a photo as multipart field `{IMAGE_FIELD}`, or the raw image bytes. JPEG, PNG, "
                    "TIFF, WebP, HEIC. Answers lat/lon (WGS84), radius_m (~90% confidence), supporting "
                    "reference photos and flags. Errors are JSON `{\"error\": ..., \"reason\": ...}`: "
                    "413 too large (bytes or pixels), 415 not an image, 422 truncated/unreadable or wrong "
                    "multipart field, 503 busy.",
        openapi_extra={"requestBody": {"required": True, "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": [IMAGE_FIELD], "properties": {
                IMAGE_FIELD: {"type": "string", "format": "binary"}}}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
        responses={413: {"description": "upload or pixel count too large"}, 415: {"description": "not an image"},
                   422: {"description": "truncated/unreadable image, or no 'image' field"},
                   503: {"description": "server busy; retry"}},
    )
    async def locate(request: Request):
        t0 = time.perf_counter()
        with lock:
            if state["pending"] >= settings.max_pending:
                busy = True
            else:
                busy = False
                state["pending"] += 1
        if busy:
            raise ApiError(503, f"server busy ({settings.max_pending} requests in flight); retry shortly",
                           "busy", {"Retry-After": "1"})
        try:
            return await _locate(request, t0)
        finally:
            with lock:
                state["pending"] -= 1

    async def _locate(request: Request, t0: float):
        body = await read_body(request)
        data = await extract_image(request, body)
        if not data:
            raise ApiError(422, f"empty upload; send a photo as multipart field '{IMAGE_FIELD}' or as the raw "
                                f"request body", "empty")
        t_read = time.perf_counter()
        batcher, decoder = runtime()
        loop = asyncio.get_running_loop()
        batcher.expect(+1)
        try:
            array = await loop.run_in_executor(decoder, decode, data)
        except BaseException as e:
            batcher.expect(-1)
            if isinstance(e, ImageError):
                raise ApiError(_IMAGE_ERROR_STATUS.get(e.reason, 422), _image_error_message(e, settings.max_pixels), e.reason)
            raise
        del data, body
        t_dec = time.perf_counter()
        try:
            fut = batcher.submit(array, expected=True)
        except queue.Full:
            raise ApiError(503, "server busy (inference queue full); retry shortly", "busy", {"Retry-After": "1"})
        try:
            res = await asyncio.wait_for(asyncio.wrap_future(fut), timeout=settings.request_timeout_s)
        except asyncio.TimeoutError:
            fut.cancel()
            raise ApiError(503, f"inference did not finish within {settings.request_timeout_s:.0f} s; retry",
                           "timeout", {"Retry-After": "5"})
        except ImageError as e:
            raise ApiError(_IMAGE_ERROR_STATUS.get(e.reason, 422), _image_error_message(e, settings.max_pixels), e.reason)
        except Exception as e:  # noqa: BLE001 - the model failed on this photo; the server carries on
            raise ApiError(500, f"the {method} model failed on this photo ({type(e).__name__}: {e})",
                           "predict_failed")
        if res.get("error"):
            raise ApiError(422, f"uploaded file: {res['error']}", "unreadable")
        lat, lon = _finite_or_none(res["lat"]), _finite_or_none(res["lon"])
        if lat is None or lon is None:
            raise ApiError(500, f"the {method} model produced no position for this photo", "no_position")
        neighbors = [neighbor_json(d) for d in list(res["neighbors"] or [])[:MAX_NEIGHBORS]]
        t1 = time.perf_counter()
        with lock:
            state["served"] += 1
        tm = res.get("timing", {})
        return JSONResponse({
            "lat": lat, "lon": lon, "radius_m": _finite_or_none(res["radius_m"]),
            "neighbors": neighbors,
            "flags": [str(f) for f in (res["flags"] or [])],
            "elapsed_ms": round((t1 - t0) * 1000, 2),
            "method": method,
            "timing_ms": {"read": round((t_read - t0) * 1000, 2), "decode": round((t_dec - t_read) * 1000, 2),
                          "queue": round(tm.get("queue_ms", 0.0), 2), "predict": round(tm.get("predict_ms", 0.0), 2),
                          "batch_size": tm.get("batch_size", 1)},
        })

    @app.get("/healthz", summary="Liveness")
    def healthz():
        return {"status": "ok"}

    @app.get("/v1/model", summary="Model metadata and reference positions")
    def model_info():
        b = state["batcher"]
        return {
            **model_meta,
            "reference": refs,
            "origin": {"lat": frame.lat0, "lon": frame.lon0} if frame is not None else None,
            "server": {"campusgps_version": __version__, "image_field": IMAGE_FIELD,
                       "max_upload_bytes": settings.max_upload_bytes, "max_pixels": settings.max_pixels,
                       "input_max_side": max_side, "thumbnails": thumbs,
                       "tiles_url": settings.tiles_url, "tiles_attribution": settings.tiles_attribution,
                       "max_batch": settings.max_batch, "workers": settings.workers,
                       "stats": {"served": state["served"], "batches": b.batches if b else 0,
                                 "images": b.images if b else 0}},
        }

    @app.get("/v1/reference/{ref_id}/thumb.jpg", summary="Thumbnail of a reference photo",
             response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    def reference_thumb(ref_id: str):
        if not thumbs:
            raise ApiError(404, f"the {method} model keeps no reference thumbnails", "no_thumbnails")
        if not _REF_ID_RE.match(ref_id):
            raise ApiError(404, f"unknown reference id {ref_id!r}", "unknown_reference")
        jpg = _thumb(ref_id)
        if not jpg:
            raise ApiError(404, f"no thumbnail for reference {ref_id!r}", "unknown_reference")
        return Response(jpg, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=3600"})

    from functools import lru_cache

    @lru_cache(maxsize=512)
    def _thumb(ref_id: str) -> bytes | None:
        try:
            return loc.reference_thumbnail(ref_id)
        except (KeyError, IndexError, ValueError):
            return None

    # --- page and docs (all local) ---------------------------------------------------------------------------
    csp_img = "'self' data: blob:"
    if settings.tiles_url:
        m = re.match(r"^(https?://[^/{}]+)", settings.tiles_url.replace("{s}.", ""))
        if m:
            host = m.group(1)
            csp_img += f" {host}"
            if "{s}" in settings.tiles_url:  # subdomains a/b/c
                csp_img += " " + re.sub(r"^(https?://)", r"\1*.", host)
    page_headers = {
        "Content-Security-Policy": f"default-src 'self'; img-src {csp_img}; style-src 'self' 'unsafe-inline'; "
                                   "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-cache",
    }

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=page_headers)

    @app.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="campusgps API",
                                   swagger_js_url="static/vendor/swagger-ui/swagger-ui-bundle.js",
                                   swagger_css_url="static/vendor/swagger-ui/swagger-ui.css",
                                   swagger_favicon_url="static/vendor/swagger-ui/favicon-32x32.png")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def run_server(localizer, settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000,
               log_level: str = "info") -> None:
    """Serve ``localizer`` with uvicorn (one process; inference threads inside). Blocks until stopped."""
    import uvicorn

    app = create_app(localizer, settings)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=log_level == "debug",
                            limit_concurrency=max(4 * settings.max_pending, 64), timeout_keep_alive=5,
                            server_header=False)
    uvicorn.Server(config).run()


def settings_dict(settings: ServeSettings) -> dict:
    return asdict(settings)
