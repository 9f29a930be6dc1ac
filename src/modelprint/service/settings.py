"""The service's settings: bearer tokens, limits, worker pool, server-side datasets; and the exposure rule.

Tokens come from a file (one per line; blank lines and ``#`` comments ignored) and from ``MODELPRINT_TOKENS``
(comma-separated). Without a token the service answers anyone who can reach it, so it refuses to listen anywhere but
a loopback address.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from modelprint import config
from modelprint.errors import ModelprintError

TOKENS_ENV = "MODELPRINT_TOKENS"
DEFAULT_MAX_UPLOAD_BYTES = 50 * 1000 * 1000


class ServiceError(ModelprintError):
    """The service cannot start as configured (tokens, host, datasets)."""


@dataclass(frozen=True)
class Settings:
    """What :func:`~modelprint.service.create_app` needs beside the gallery.

    ``tokens``: accepted bearer tokens (empty: no authentication, loopback only); ``max_upload_bytes``: the most
    bytes a request body may have (413 above); ``max_pixels``: pixel limit of an uploaded image (``None``: the
    ``MODELPRINT_MAX_PIXELS`` default); ``workers``: threads that embed images; ``queue``: requests admitted to
    wait for a worker (more are refused with 503); ``rate``/``burst``: each token's (or, without tokens, each
    client address's) sustained requests per second and burst (429 above); ``datasets``: name → folder or index
    file that ``/v1/evaluate`` may evaluate; ``method``: fingerprint method of an empty gallery (default: the
    gallery's, else ``learned``).
    """

    tokens: tuple[str, ...] = ()
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int | None = None
    workers: int = 2
    queue: int = 8
    rate: float = 10.0
    burst: int = 20
    datasets: dict[str, Path] = field(default_factory=dict)
    method: str | None = None

    def __post_init__(self) -> None:
        for name, value, low in (("max_upload_bytes", self.max_upload_bytes, 1), ("workers", self.workers, 1),
                                 ("queue", self.queue, 0), ("burst", self.burst, 1)):
            if int(value) < low:
                raise ServiceError(f"{name} must be at least {low}, got {value}")
        if not self.rate > 0:
            raise ServiceError(f"rate must be positive, got {self.rate}")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ServiceError(f"max_pixels must be positive, got {self.max_pixels}")
        if any(not t or any(c.isspace() for c in t) for t in self.tokens):
            raise ServiceError("a token is empty or contains white space")


def load_tokens(token_file: str | Path | None = None, environ: dict[str, str] | None = None) -> tuple[str, ...]:
    """The tokens of ``token_file`` (one per line) and of ``MODELPRINT_TOKENS`` (comma-separated), deduplicated."""
    tokens: list[str] = []
    if token_file is not None:
        try:
            lines = Path(token_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or exc
            raise ServiceError(f"{token_file}: cannot read token file ({why})") from None
        tokens += [s for line in lines if (s := line.strip()) and not s.startswith("#")]
        if not tokens:
            raise ServiceError(f"{token_file}: token file holds no token")
    tokens += config.service_tokens(environ)
    for t in tokens:
        if any(c.isspace() for c in t):
            raise ServiceError("a token contains white space")
    return tuple(dict.fromkeys(tokens))


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, tokens: tuple[str, ...]) -> None:
    """Refuse to listen on a non-loopback ``host`` without tokens."""
    if not tokens and not is_loopback(host):
        raise ServiceError(f"refusing to listen on {host} without authentication: give --token-file F or "
                           f"{TOKENS_ENV}, or listen on 127.0.0.1")


def parse_datasets(specs: list[str]) -> dict[str, Path]:
    """``NAME=PATH`` pairs (``--dataset``) as a dict; each path must exist."""
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name.strip() or not path:
            raise ServiceError(f"--dataset {spec}: expected NAME=PATH")
        if not Path(path).exists():
            raise ServiceError(f"--dataset {spec}: {path}: no such dataset folder or index file")
        out[name.strip()] = Path(path)
    return out
