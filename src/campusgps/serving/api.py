"""The JSON API routes: ``POST /v1/locate``, ``GET /v1/model``, ``GET /v1/reference/ID/thumb.jpg``, ``/healthz``.

Routes reach the model only through ``request.app.state.server`` (:class:`campusgps.serving.app.Server`).
"""
from __future__ import annotations

import asyncio
import queue
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from campusgps.errors import ImageError
from campusgps.jsonio import finite_or_none
from campusgps.serving.errors import ApiError, image_api_error
from campusgps.serving.payloads import IMAGE_FIELD, REF_ID_RE, locate_payload, model_payload

router = APIRouter()

_LOCATE_DOC = dict(
    summary="Locate one photo",
    description=f"Body: a photo as multipart field `{IMAGE_FIELD}`, or the raw image bytes. JPEG, PNG, "
                "TIFF, WebP, HEIC. Answers lat/lon (WGS84), radius_m (~90% confidence), confidence (the "
                "probability that the photo was taken within 20 m of lat/lon; null when the model has none), "
                "up to two alternatives [{lat, lon, radius_m, probability}], supporting reference photos and "
                "flags. Errors are JSON `{\"error\": ..., \"reason\": ...}`: "
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


# --------------------------------------------------------------------------------------------------------
# reading the upload
# --------------------------------------------------------------------------------------------------------
async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) more than ``limit`` bytes, declared or actually sent."""
    from starlette.requests import ClientDisconnect

    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise ApiError(400, f"bad Content-Length header {declared!r}", "bad_request")
        if n > limit:
            raise ApiError(413, f"upload of {n / 1e6:.1f} MB exceeds the limit of {limit / 1e6:.1f} MB "
                                f"(server option --max-upload-mb)", "too_large")
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
    """The photo's bytes: the multipart field ``image``, or the whole body for any other content type."""
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


# --------------------------------------------------------------------------------------------------------
# locating
# --------------------------------------------------------------------------------------------------------
@router.post("/v1/locate", **_LOCATE_DOC)
async def locate(request: Request):
    server = request.app.state.server
    t0 = time.perf_counter()
    if not server.admit():
        raise ApiError(503, f"server busy ({server.settings.max_pending} requests in flight); retry shortly",
                       "busy", {"Retry-After": "1"})
    try:
        return await _locate(server, request, t0)
    finally:
        server.release()


async def _locate(server, request: Request, t0: float):
    settings = server.settings
    body = await read_body(request, settings.max_upload_bytes)
    data = await extract_image(request, body)
    if not data:
        raise ApiError(422, f"empty upload; send a photo as multipart field '{IMAGE_FIELD}' or as the raw "
                            f"request body", "empty")
    del body
    t_read = time.perf_counter()
    batcher, decoder = server.runtime()
    array = await _decode(server, batcher, decoder, data)
    gps = await asyncio.get_running_loop().run_in_executor(decoder, exif_gps, data)  # the photo's own GPS
    del data
    t_dec = time.perf_counter()
    res = await _predict(server, batcher, array)
    if res.get("error"):
        raise ApiError(422, f"uploaded file: {res['error']}", "unreadable")
    lat, lon = finite_or_none(res["lat"]), finite_or_none(res["lon"])
    if lat is None or lon is None:
        raise ApiError(500, f"the {server.method} model produced no position for this photo", "no_position")
    exif_flags, res["exif_distance_m"] = check_one(server.localizer, lat, lon, res["radius_m"], gps)
    res["flags"] = list(res["flags"] or []) + exif_flags
    server.count("served")
    timing = {"elapsed": round((time.perf_counter() - t0) * 1000, 2), "read": round((t_read - t0) * 1000, 2),
              "decode": round((t_dec - t_read) * 1000, 2)}
    return JSONResponse(locate_payload(server, res, lat, lon, timing))


def exif_gps(data: bytes):
    from campusgps.localizers.exif_check import exif_gps as read

    return read(data)


def check_one(localizer, lat, lon, radius_m, gps):
    from campusgps.localizers.exif_check import check_one as check

    return check(localizer, lat, lon, radius_m, gps)


async def _decode(server, batcher, decoder, data: bytes):
    """Decode in the decoder pool; the batcher is told a request is on its way meanwhile."""
    from campusgps.exif.image import load_image

    batcher.expect(+1)
    try:
        return await asyncio.get_running_loop().run_in_executor(
            decoder, lambda: load_image(data, max_side=server.max_side, max_pixels=server.settings.max_pixels))
    except BaseException as e:
        batcher.expect(-1)
        if isinstance(e, ImageError):
            raise image_api_error(e, server.settings.max_pixels)
        raise


async def _predict(server, batcher, array) -> dict:
    """Queue the decoded image for the batcher and wait (bounded) for its result."""
    settings = server.settings
    try:
        fut = batcher.submit(array, expected=True)
    except queue.Full:
        raise ApiError(503, "server busy (inference queue full); retry shortly", "busy", {"Retry-After": "1"})
    try:
        return await asyncio.wait_for(asyncio.wrap_future(fut), timeout=settings.request_timeout_s)
    except asyncio.TimeoutError:
        fut.cancel()
        raise ApiError(503, f"inference did not finish within {settings.request_timeout_s:.0f} s; retry",
                       "timeout", {"Retry-After": "5"})
    except ImageError as e:
        raise image_api_error(e, settings.max_pixels)
    except Exception as e:  # noqa: BLE001 - the model failed on this photo; the server carries on
        raise ApiError(500, f"the {server.method} model failed on this photo ({type(e).__name__}: {e})",
                       "predict_failed")


# --------------------------------------------------------------------------------------------------------
# model information
# --------------------------------------------------------------------------------------------------------
@router.get("/healthz", summary="Liveness")
def healthz():
    return {"status": "ok"}


@router.get("/v1/model", summary="Model metadata and reference positions")
def model_info(request: Request):
    return model_payload(request.app.state.server)


@router.get("/v1/reference/{ref_id}/thumb.jpg", summary="Thumbnail of a reference photo",
            response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
def reference_thumb(ref_id: str, request: Request):
    server = request.app.state.server
    if not server.thumbs:
        raise ApiError(404, f"the {server.method} model keeps no reference thumbnails", "no_thumbnails")
    if not REF_ID_RE.match(ref_id):
        raise ApiError(404, f"unknown reference id {ref_id!r}", "unknown_reference")
    jpg = server.thumbnail(ref_id)
    if not jpg:
        raise ApiError(404, f"no thumbnail for reference {ref_id!r}", "unknown_reference")
    return Response(jpg, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=3600"})
