"""``modelprint serve``: the REST service and web page (:mod:`modelprint.service`) on uvicorn."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from modelprint.cli.app import GalleryOpt, MaxPixelsOpt, err, fatal_errors, shown


def serve(
    gallery: GalleryOpt,
    host: Annotated[str, typer.Option(help="Address to listen on; a non-loopback one needs tokens.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    token_file: Annotated[Path | None, typer.Option(
        "--token-file", help="Bearer tokens, one per line (also MODELPRINT_TOKENS, comma-separated).")] = None,
    max_upload_mb: Annotated[float, typer.Option(
        "--max-upload-mb", min=0.001, help="Largest request body in MB (413 above).")] = 50.0,
    max_pixels: MaxPixelsOpt = None,
    workers: Annotated[int, typer.Option(min=1, help="Threads that embed images.")] = 2,
    queue: Annotated[int, typer.Option(min=0, help="Requests that may wait for a worker (503 beyond).")] = 8,
    rate: Annotated[float, typer.Option(min=0.001, help="Requests per second per token (429 beyond).")] = 10.0,
    burst: Annotated[int, typer.Option(min=1, help="Requests a token may make at once before the rate applies.")] = 20,
    dataset: Annotated[list[str] | None, typer.Option(
        "--dataset", help="NAME=PATH: a dataset /v1/evaluate may evaluate by NAME (repeat).")] = None,
    method: Annotated[str | None, typer.Option(
        "--method", "-m", help="Method of an empty gallery (default: the gallery's, else learned).")] = None,
) -> None:
    """Serve the REST API (/v1/..., OpenAPI at /docs) and the web page (/) for one gallery.

    Each worker uses cpus/workers torch threads unless MODELPRINT_THREADS says otherwise."""
    with fatal_errors():
        from modelprint.service.settings import Settings, check_exposure, load_tokens, parse_datasets

        tokens = load_tokens(token_file)
        check_exposure(host, tokens)
        settings = Settings(tokens=tokens, max_upload_bytes=int(max_upload_mb * 1e6), max_pixels=max_pixels,
                            workers=workers, queue=queue, rate=rate, burst=burst,
                            datasets=parse_datasets(dataset or []), method=method)
        os.environ.setdefault("MODELPRINT_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
        import uvicorn

        from modelprint.service import create_app

        app = create_app(gallery, settings)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    auth = f"{len(tokens)} token(s)" if tokens else "no tokens (loopback only)"
    err.print(f"modelprint serve: {shown(gallery)} on http://{shown(host)}:{port} ({auth}); Ctrl-C stops",
              highlight=False, soft_wrap=True)
    server.run()
