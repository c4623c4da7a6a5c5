"""The service over HTTP (FastAPI): the Open Inference Protocol v2's health, metadata and infer endpoints, and
MLflow's `POST /invocations`. Every decision is `Service`'s; this module reads requests (the body up to
`serve.max_bytes`, never more) and writes replies, errors included, as one line of JSON.

The blocking work (the store, the judge) runs in the server's thread pool, so that the event loop keeps accepting
requests (and answering health checks) while a query is answered.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from gavel.experiments.serve.service import MLFLOW, V2, Reply, Service, error_reply

log = logging.getLogger(__name__)


def create_app(service: Service) -> FastAPI:
    # No /docs or /openapi.json: the protocol is v2's and MLflow's, documented in docs/serving.md.
    app = FastAPI(title="gavel", docs_url=None, redoc_url=None, openapi_url=None)
    model = service.limits.model_name

    def unknown_model(name: str) -> JSONResponse:
        return respond(error_reply(404, f"no model named {name!r}; allowed: {model}", "not_found"))

    @app.get("/v2/health/live")
    async def live() -> JSONResponse:
        return JSONResponse({"live": True})

    @app.get("/v2/health/ready")
    async def ready() -> JSONResponse:
        return JSONResponse({"ready": True})

    @app.get("/v2")
    async def server_metadata() -> JSONResponse:
        return JSONResponse(service.server_metadata())

    @app.get("/v2/models")
    async def models() -> JSONResponse:
        return JSONResponse(service.models())

    @app.get("/gavel/v1/key")
    async def check_key(request: Request) -> JSONResponse:
        headers = {name.lower(): value for name, value in request.headers.items()}
        return respond(await run_in_threadpool(service.check_key, headers))

    @app.get("/v2/models/{name}")
    async def model_metadata(name: str) -> JSONResponse:
        return JSONResponse(service.model_metadata()) if name == model else unknown_model(name)

    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str) -> JSONResponse:
        return JSONResponse({"name": model, "ready": True}) if name == model else unknown_model(name)

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> JSONResponse:
        if name != model:
            return unknown_model(name)
        return await answer(V2, request)

    @app.post("/invocations")
    async def invocations(request: Request) -> JSONResponse:
        return await answer(MLFLOW, request)

    async def answer(endpoint: str, request: Request) -> JSONResponse:
        body, oversize = await read_body(request, service.limits.max_bytes)
        headers = {name.lower(): value for name, value in request.headers.items()}
        return respond(await run_in_threadpool(service.infer, endpoint, headers, body, oversize))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        reason = {404: "not_found", 405: "method"}.get(error.status_code, "http")
        detail = error.detail if isinstance(error.detail, str) else "refused"
        if error.status_code == 404:
            detail = f"no such endpoint: {request.method} {request.url.path}"
        return respond(error_reply(error.status_code, detail, reason))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return respond(error_reply(422, f"{where}: {first.get('msg', 'invalid')}", "invalid"))

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception) -> JSONResponse:
        log.error("%s %s failed: %s", request.method, request.url.path, type(error).__name__)
        return respond(error_reply(500, "the server failed to answer this request", "server"))

    return app


async def read_body(request: Request, limit: int) -> tuple[bytes, bool]:
    """(the body, whether it passed `limit` bytes): a declared Content-Length over the limit is not read at all, and
    a body that runs past it (chunked, or longer than declared) is read no further."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return b"", True
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return b"", True
        chunks.append(chunk)
    return b"".join(chunks), False


def respond(reply: Reply) -> JSONResponse:
    return JSONResponse(reply.body, status_code=reply.status, headers=dict(reply.headers))
