"""Every error the server answers is JSON ``{"error": message, "reason": reason}``; no traceback reaches a client."""
from __future__ import annotations

from campusgps.errors import ImageError

# HTTP status for each ImageError reason
IMAGE_ERROR_STATUS = {"not_an_image": 415, "decompression_bomb": 413, "truncated": 422,
                      "too_small": 422, "unreadable": 422}


class ApiError(Exception):
    """Becomes ``{"error": message, "reason": reason}`` with ``status``."""

    def __init__(self, status: int, message: str, reason: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.reason, self.headers = status, message, reason, headers or {}


def image_api_error(e: ImageError, max_pixels: int | None = None) -> ApiError:
    """The answer to an upload that is not a usable photo (status by ``e.reason``)."""
    msg = str(e)
    if msg.startswith("<bytes>: "):
        msg = msg[len("<bytes>: "):]
    if e.reason == "decompression_bomb" and max_pixels and "server's pixel limit" not in msg:
        msg += f"; the server's pixel limit is {max_pixels / 1e6:g} MP (option --max-pixels)"
    return ApiError(IMAGE_ERROR_STATUS.get(e.reason, 422), f"uploaded file: {msg}", e.reason)


def error_response(status: int, message: str, reason: str, headers: dict | None = None):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": message, "reason": reason}, status_code=status, headers=headers)


def install_error_handlers(app) -> None:
    """Route ApiError, HTTP errors, validation errors and any other exception to :func:`error_response`.

    Unexpected exceptions are counted in ``app.state.server.failed``.
    """
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return error_response(exc.status, exc.message, exc.reason, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc):
        msg = {404: f"not found: {request.url.path}", 405: f"method {request.method} not allowed here"}.get(
            exc.status_code, str(exc.detail))
        return error_response(exc.status_code, msg, "http_error", getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc):
        return error_response(422, f"invalid request: {exc.errors()}", "invalid_request")

    @app.exception_handler(Exception)
    async def _internal_error(request, exc):
        request.app.state.server.count("failed")
        return error_response(500, f"internal error while handling {request.url.path}: "
                                   f"{type(exc).__name__}: {exc}", "internal")
