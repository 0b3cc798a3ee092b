"""HTTP service and web page (``campusgps serve``). FastAPI is imported only when an app is built."""
from campusgps.serving.app import ServeSettings, create_app, run_server

__all__ = ["ServeSettings", "create_app", "run_server"]
