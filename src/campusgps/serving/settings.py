"""Server options: one dataclass; ``campusgps serve`` generates its flags from it (``configs``)."""
from __future__ import annotations

from dataclasses import dataclass, field

from campusgps.errors import UserError

LOG_LEVELS = ["critical", "error", "warning", "info", "debug"]


@dataclass
class ServeSettings:
    """Server options (``campusgps serve`` flags map onto these; ``create_app`` ignores host/port/log_level)."""

    host: str = field(default="127.0.0.1", metadata={
        "help": "address to bind (127.0.0.1: this machine only; 0.0.0.0 for the network)"})
    port: int = field(default=8000, metadata={"help": "TCP port"})
    max_upload_mb: float = field(default=20.0, metadata={
        "help": "largest accepted request body in MB; bigger uploads get 413"})
    max_pixels: int = field(default=50_000_000, metadata={
        "help": "largest accepted image in pixels, against decompression bombs; 413 above"})
    workers: int = field(default=1, metadata={
        "help": "inference threads, each running whole batches (the model is shared)"})
    decode_threads: int = field(default=2, metadata={"help": "threads decoding uploads"})
    max_batch: int = field(default=8, metadata={
        "help": "most photos per model call when requests arrive together"})
    batch_wait_ms: float = field(default=4.0, metadata={
        "help": "how long a batch waits for more requests after its first, in ms"})
    max_pending: int = field(default=64, metadata={
        "help": "requests in flight before the server answers 503 busy (bounded memory)"})
    cors_origins: list[str] = field(default_factory=list, metadata={
        "flag": "--cors-origin", "repeat": True, "metavar": "ORIGIN",
        "help": "allow browser pages from ORIGIN to call the API ('*' for any)"})
    tiles_url: str | None = field(default=None, metadata={
        "flag": "--tiles", "metavar": "URL",
        "help": "add an online tile layer under the offline basemap, e.g. "
                "'https://tile.openstreetmap.org/{z}/{x}/{y}.png' (needs internet on the viewer's side)"})
    tiles_attribution: str = field(default="", metadata={
        "metavar": "TEXT", "help": "attribution shown for --tiles (e.g. '© OpenStreetMap contributors')"})
    request_timeout_s: float = field(default=60.0, metadata={
        "help": "a request waiting longer than this for inference gets 503"})
    log_level: str = field(default="info", metadata={
        "choices": LOG_LEVELS, "help": "server log level (debug also logs every request)"})
    warmup: bool = field(default=False, metadata={
        "help": "run one prediction before accepting requests, so the first user does not pay for lazy "
                "model initialisation"})

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def validate(self) -> None:
        """UserError naming the flag when an option is out of range."""
        if not 0 <= self.port <= 65535:
            raise UserError(f"--port {self.port} is out of range")
        for name, val in (("--workers", self.workers), ("--decode-threads", self.decode_threads),
                          ("--max-batch", self.max_batch), ("--max-pending", self.max_pending),
                          ("--max-pixels", self.max_pixels)):
            if val < 1:
                raise UserError(f"{name} {val} is out of range")
        for name, val in (("--max-upload-mb", self.max_upload_mb), ("--request-timeout-s", self.request_timeout_s)):
            if not val > 0:
                raise UserError(f"{name} must be > 0, got {val}")
        if not self.batch_wait_ms >= 0:
            raise UserError(f"--batch-wait-ms must be >= 0, got {self.batch_wait_ms}")
        if self.tiles_url and not self.tiles_url.startswith(("http://", "https://")):
            raise UserError(f"--tiles must be an http(s) URL template with {{z}}/{{x}}/{{y}}, got {self.tiles_url!r}")
