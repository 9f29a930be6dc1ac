"""The FastAPI app of ``modelprint serve``: :mod:`modelprint.api` behind HTTP, and the web page.

Every result is the ``to_dict()`` the CLI prints with ``--json``; an uploaded image goes in as
:class:`~modelprint.io.ImageBytes`, so its name (the upload's file name) stands where the CLI shows a path. Errors
are JSON ``{"detail": "<one line>"}`` with the CLI's reason: 413 (too large: body, or pixels read from the image's
header), 422 (bad image or request), 404 (no such model or dataset), 409 (the gallery refuses: empty, read-only,
another method), 401/429/503 from :mod:`~modelprint.service.guard`. No response names a server path: the gallery
and datasets are shown as ``<gallery>`` and ``<dataset NAME>``.
"""

from __future__ import annotations

import logging
import ntpath
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
import numpy as np
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

import modelprint
from modelprint import api
from modelprint.errors import DatasetError, GalleryError, ImageError, ImageTooLargeError, ModelprintError
from modelprint.io import ImageBytes, ImageLimits
from modelprint.methods import DEFAULT_METHOD
from modelprint.service.guard import OPEN_PATHS, Guard
from modelprint.service.settings import Settings

STATIC = Path(__file__).resolve().parent / "static"
log = logging.getLogger("modelprint.service")
T = TypeVar("T")
Files = Annotated[list[UploadFile], File(description="Image file(s), each in a multipart field named `file`.")]


class ErrorBody(BaseModel):
    detail: str = Field(description="Why the request failed, in one line (the CLI's message).")


class EvaluateRequest(BaseModel):
    dataset: str = Field(description="Name of a dataset configured on the server (`modelprint serve --dataset`).")
    support: int = Field(5, ge=1, le=1000, description="Support images per model (1:N protocol).")
    pairs: int = Field(2000, ge=2, le=100_000, description="Verification pairs.")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Random seed; the same seed gives the same numbers.")
    min_per_class: int | None = Field(None, ge=1, le=100_000, description="Drop models with fewer images.")


class Redactor:
    """Replaces server paths (absolute: the gallery, datasets, the package's folder) in every string of a result."""

    def __init__(self, pairs: dict[Path, str]) -> None:
        found = {str(form): shown for path, shown in pairs.items() for form in (path.absolute(), path.resolve())}
        self.pairs = sorted(found.items(), key=lambda kv: -len(kv[0]))

    def text(self, s: str) -> str:
        for path, shown in self.pairs:
            s = s.replace(path, shown)
        return s

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(k) if isinstance(k, str) else k: self(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self(v) for v in value]
        return value


def _status(exc: ModelprintError) -> int:
    if isinstance(exc, ImageTooLargeError):
        return 413
    if isinstance(exc, ImageError | DatasetError):
        return 422
    if isinstance(exc, GalleryError):
        return 409
    return 500


def _upload_name(upload: UploadFile, i: int) -> str:
    """The upload's file name without any folder a client put in it (``upload-<i>`` if it has none)."""
    name = ntpath.basename((upload.filename or "").replace("/", "\\")).strip()
    return name or f"upload-{i}"


def _refuse_if_none_usable(errors: list[ImageError], usable: int) -> None:
    """When no uploaded image could be used, the request fails with the first image's reason."""
    if not usable and errors:
        raise next((e for e in errors if isinstance(e, ImageTooLargeError)), errors[0])


def _rounded(a: np.ndarray | None) -> list | None:
    return None if a is None else np.round(np.asarray(a, dtype=np.float64), 3).tolist()


class Service:
    """The state behind the routes: the open gallery, its method, the limits and the worker pool."""

    def __init__(self, gallery_path: str | Path, settings: Settings) -> None:
        self.settings = settings
        self.datasets = {name: Path(p).absolute() for name, p in settings.datasets.items()}
        gallery_path = Path(gallery_path).absolute()  # messages then name it in full, which the redactor hides
        self.gallery = api.Gallery(gallery_path)
        held = sorted({name for name, _ in self.gallery.methods()})
        if len(held) > 1:
            raise GalleryError(f"{gallery_path}: gallery holds several methods ({', '.join(held)}); serve one")
        self.method = api.resolve_method(held[0] if held else settings.method or DEFAULT_METHOD)
        self.limits = ImageLimits(max_pixels=settings.max_pixels)
        self.limiter = anyio.CapacityLimiter(settings.workers)
        shown = {gallery_path: "<gallery>", Path(modelprint.__file__).parent: "<modelprint>"}
        shown.update({p: f"<dataset {name}>" for name, p in self.datasets.items()})
        self.redact = Redactor(shown)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn`` on one of the ``workers`` threads (the guard has bounded how many requests wait for one)."""
        return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=self.limiter)

    async def images(self, files: list[UploadFile]) -> list[ImageBytes]:
        return [ImageBytes(_upload_name(f, i), await f.read()) for i, f in enumerate(files)]

    def identify(self, images: list[ImageBytes], top_k: int, threshold: float | None, spectra: bool) -> dict:
        rep = self.gallery.identify(images, method=self.method, top_k=top_k, threshold=threshold,
                                    limits=self.limits, spectra=spectra)
        _refuse_if_none_usable(rep.errors, len(rep.results))
        out = rep.to_dict()
        if spectra:
            means = self.gallery.mean_spectra(self.method)
            each = rep.spectra if rep.spectra is not None else [None] * len(rep.results)
            out["spectra"] = [
                {"image": _rounded(s), "model": r.top_k[0][0], "model_mean": _rounded(means.get(r.top_k[0][0]))}
                for r, s in zip(rep.results, each)
            ]
        return out

    def enroll(self, model: str, images: list[ImageBytes], notes: str) -> dict:
        rep = self.gallery.enroll(model, images, method=self.method, notes=notes, limits=self.limits)
        _refuse_if_none_usable(rep.errors, rep.added + rep.skipped)
        return rep.to_dict()

    def verify(self, images: list[ImageBytes], threshold: float | None) -> dict:
        if len(images) != 2:
            raise HTTPException(422, f"verify compares two images (two `file` fields), got {len(images)}")
        gallery = self.gallery if self.gallery.methods() else None  # an empty gallery has no threshold to lend
        return api.verify_pair(*images, gallery=gallery, method=self.method, threshold=threshold,
                               max_pixels=self.settings.max_pixels)

    def models(self) -> dict:
        return self.gallery.listing()

    def remove(self, model: str) -> dict:
        if model not in {m.name for m in self.gallery.models()}:
            raise HTTPException(404, f"no model named {model!r}")
        self.gallery.remove_model(model)
        return {"removed": model}

    def evaluate(self, req: EvaluateRequest) -> dict:
        source = self.datasets.get(req.dataset)
        if source is None:
            names = ", ".join(sorted(self.settings.datasets)) or "none configured"
            raise HTTPException(404, f"no dataset named {req.dataset!r} (datasets: {names})")
        res = api.evaluate_dataset(source, self.method, support=req.support, pairs=req.pairs, seed=req.seed,
                                   min_per_class=req.min_per_class, max_pixels=self.settings.max_pixels)
        return res.result.to_dict()


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors():
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "request"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _errors(app: FastAPI, service: Service) -> None:
    def reply(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"detail": " ".join(service.redact.text(detail).split())}, status, headers)

    @app.exception_handler(ModelprintError)
    async def modelprint_error(_request: Request, exc: ModelprintError) -> JSONResponse:
        status = _status(exc)
        if status == 500:
            log.error("request failed: %s", exc)
            return reply(500, "internal error")
        return reply(status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return reply(422, _validation_detail(exc))

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return reply(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return reply(500, "internal error")


def _openapi(app: FastAPI, secured: bool) -> Callable[[], dict[str, Any]]:
    """The schema, with the bearer scheme on every ``/v1`` operation but health when tokens are configured."""

    def schema() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            if secured:
                doc.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
                for path, ops in doc["paths"].items():
                    if path.startswith("/v1/") and path not in OPEN_PATHS:
                        for op in ops.values():
                            op["security"] = [{"bearer": []}]
            app.openapi_schema = doc
        return app.openapi_schema

    return schema


def create_app(gallery_path: str | Path, settings: Settings | None = None) -> FastAPI:
    """The service for the gallery at ``gallery_path`` (created if missing), with ``settings``' tokens and limits."""
    settings = settings or Settings()
    service = Service(gallery_path, settings)
    errors = {code: {"model": ErrorBody} for code in (401, 404, 409, 411, 413, 422, 429, 503)}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        service.gallery.close()

    app = FastAPI(title="modelprint", version=modelprint.__version__, responses=errors, lifespan=lifespan,
                  description="Which generative model made this image? Identify, verify, enroll, evaluate.")
    app.add_middleware(Guard, settings=settings)
    app.state.service = service
    _errors(app, service)
    app.openapi = _openapi(app, bool(settings.tokens))  # type: ignore[method-assign]

    @app.get("/v1/health", summary="Liveness (no token needed)")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/version", summary="modelprint's version and the gallery's method")
    def version() -> dict:
        return {"modelprint": modelprint.__version__, "method": service.method.tag}

    @app.post("/v1/identify", summary="Attribute images to the enrolled models (1:N), or 'unknown'")
    async def identify(
        file: Files,
        top_k: Annotated[int, Query(ge=1, le=100, description="How many candidates to list.")] = 3,
        threshold: Annotated[float | None, Query(ge=-1, le=1, description="Unknown below this similarity "
                                                 "(default: the gallery's calibrated one).")] = None,
        spectra: Annotated[bool, Query(description="Add each image's residual spectrum and its best match's "
                                       "mean spectrum (`spectra`).")] = False,
    ) -> dict:
        images = await service.images(file)
        return service.redact(await service.run(service.identify, images, top_k, threshold, spectra))

    @app.post("/v1/verify", summary="Did the same model make both images (1:1)?")
    async def verify(
        file: Files,
        threshold: Annotated[float | None, Query(ge=-1, le=1, description="Decision threshold (default: the "
                                                 "gallery's calibrated one).")] = None,
    ) -> dict:
        images = await service.images(file)
        return service.redact(await service.run(service.verify, images, threshold))

    @app.get("/v1/models", summary="Enrolled models, image counts and thresholds")
    def models() -> dict:
        return service.redact(service.models())

    @app.post("/v1/models/{name}", summary="Enroll uploaded images as model `name` (created if new)")
    async def enroll(
        name: str,
        file: Files,
        notes: Annotated[str, Query(max_length=1000, description="Notes stored with a new model.")] = "",
    ) -> dict:
        images = await service.images(file)
        return service.redact(await service.run(service.enroll, name, images, notes))

    @app.delete("/v1/models/{name}", summary="Remove a model and its embeddings")
    def remove(name: str) -> dict:
        return service.redact(service.remove(name))

    @app.get("/v1/datasets", summary="Names of the datasets /v1/evaluate can evaluate")
    def datasets() -> dict:
        return {"datasets": sorted(settings.datasets)}

    @app.post("/v1/evaluate", summary="Evaluate the gallery's method on a server-side dataset")
    async def evaluate(req: EvaluateRequest) -> dict:
        return service.redact(await service.run(service.evaluate, req))

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
