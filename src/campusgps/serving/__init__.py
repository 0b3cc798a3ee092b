"""HTTP service and web page (``campusgps serve``). FastAPI is imported only when an app is built.

settings (ServeSettings), app (create_app, run_server, Server), batcher (MicroBatcher), api (JSON routes),
page (web page, docs, static files), payloads (JSON answers), errors (JSON errors).
"""
from campusgps.serving.app import create_app, run_server
from campusgps.serving.settings import ServeSettings

__all__ = ["ServeSettings", "create_app", "run_server"]
