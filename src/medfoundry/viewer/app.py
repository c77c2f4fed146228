"""The HTTP API and page of ``medfoundry view`` (FastAPI); every route needs the session token.

Routes (documented in docs/viewer.md): ``GET /`` page, ``GET /static/{name}`` bundled files (a fixed list),
``GET /api/info``, ``GET /api/volume``, ``GET /api/labels``, ``GET /api/stats``, ``POST /api/prompt``,
``POST /api/propagate``, ``POST /api/erase``, ``POST /api/undo``, ``POST /api/save``.
Errors come back as JSON ``{"error": "..."}`` with a 4xx status; the server keeps running.
"""

from __future__ import annotations

import importlib.resources
import secrets
from typing import Annotated, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from medfoundry.errors import InputError, MedfoundryError, OutputExistsError
from medfoundry.io.numbers import MAX_COORDINATE, check_number
from medfoundry.viewer.session import MAX_POINTS, ViewerSession

TOKEN_HEADER = "x-medfoundry-token"
# the only files /static serves: name -> media type (request paths are never joined to the file system)
STATIC_FILES = {
    "niivue.umd.js": "text/javascript",
    "viewer.js": "text/javascript",
    "viewer.css": "text/css",
    "LICENSE-niivue.txt": "text/plain",
}


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _coordinate(value: float) -> float:
    """A voxel coordinate: the shared number check (finite, float32) and at most ``MAX_COORDINATE``."""
    return check_number(value, None, lo=-MAX_COORDINATE, hi=MAX_COORDINATE)


# JSON numbers are checked while the request is parsed: a refused request (422) never reaches the session
Coordinate = Annotated[float, AfterValidator(_coordinate)]
Index = Annotated[int, AfterValidator(lambda v: check_number(v, None, integer=True))]


class PromptRequest(_Request):
    object: int = Field(1, ge=1, le=65535, description="label value of the object")
    axis: Literal["z", "y", "x"] = "z"
    index: Index = Field(..., ge=0, description="slice index along axis")
    box: list[Coordinate] | None = Field(None, min_length=4, max_length=4)
    points: list[Annotated[list[Coordinate], Field(min_length=2, max_length=2)]] | None = Field(
        None, max_length=MAX_POINTS, description="[[u, v], ...]"
    )
    point_labels: list[Literal[0, 1]] | None = Field(None, max_length=MAX_POINTS)


class PropagateRequest(_Request):
    object: int = Field(1, ge=1, le=65535)
    box: list[Coordinate] | None = Field(None, min_length=6, max_length=6, description="[x0, y0, z0, x1, y1, z1]")
    start_z: Index | None = None
    from_slice: Index | None = None
    z_range: list[Index] | None = Field(None, min_length=2, max_length=2, description="with from_slice: [z0, z1]")


class EraseRequest(_Request):
    object: int = Field(..., ge=1, le=65535)
    axis: Literal["z", "y", "x"] | None = None
    index: Index | None = None
    all: bool = Field(False, description="erase the object on every slice (instead of one slice: axis, index)")

    @model_validator(mode="after")
    def _one_scope(self) -> EraseRequest:
        if (self.index is None) != self.all:
            raise ValueError('give either the slice to erase ("axis", "index") or "all": true')
        return self


class SaveRequest(_Request):
    confirm: bool = False


def _static(name: str) -> bytes:
    return importlib.resources.files("medfoundry.viewer").joinpath("static", name).read_bytes()


def create_app(session: ViewerSession, token: str | None = None) -> FastAPI:
    """The app serving ``session``; ``token`` (random if None, see ``app.state.token``) is required everywhere."""
    token = token or secrets.token_urlsafe(24)
    app = FastAPI(title="medfoundry view", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.token = token
    app.state.session = session

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        given = request.headers.get(TOKEN_HEADER) or request.query_params.get("token")
        if not given:
            return JSONResponse({"error": "missing token (add ?token=... or the X-Medfoundry-Token header)"}, 401)
        if not secrets.compare_digest(given.encode(), token.encode()):
            return JSONResponse({"error": "wrong token"}, 403)
        response = await call_next(request)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.exception_handler(OutputExistsError)
    async def exists(_request: Request, exc: OutputExistsError):
        return JSONResponse({"error": f"{exc.path}: output exists; save again with confirm=true to replace it"}, 409)

    @app.exception_handler(MedfoundryError)
    async def bad_input(_request: Request, exc: MedfoundryError):
        return JSONResponse({"error": str(exc)}, 400)

    @app.exception_handler(RequestValidationError)
    async def bad_json(_request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": f"bad request: {problems}"}, 422)

    @app.exception_handler(Exception)
    async def crashed(_request: Request, exc: Exception):
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, 500)

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        html = _static("index.html").decode().replace("__TOKEN__", token)
        return HTMLResponse(html)

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC_FILES:
            return JSONResponse({"error": f"no such file: {name!r}"}, 404)
        return Response(_static(name), media_type=STATIC_FILES[name])

    @app.get("/api/info")
    def info() -> dict:
        return session.info()

    @app.get("/api/volume")
    def volume() -> Response:
        return Response(session.image_nifti(), media_type="application/gzip")

    @app.get("/api/labels")
    def labels() -> Response:
        return Response(session.labels_nifti(), media_type="application/gzip")

    @app.get("/api/stats")
    def stats() -> dict:
        return {"labels": session.stats()}

    @app.post("/api/prompt")
    def prompt(req: PromptRequest) -> dict:
        return session.prompt(req.object, req.index, req.axis, req.box, req.points, req.point_labels)

    @app.post("/api/propagate")
    def propagate(req: PropagateRequest) -> dict:
        if (req.box is None) == (req.from_slice is None):
            raise InputError(None, "give either box [x0, y0, z0, x1, y1, z1] or from_slice")
        return session.propagate(req.object, req.box, req.start_z, req.from_slice, req.z_range)

    @app.post("/api/erase")
    def erase(req: EraseRequest) -> dict:
        return session.erase(req.object, req.axis, None if req.all else req.index, everywhere=req.all)

    @app.post("/api/undo")
    def undo() -> dict:
        return session.undo()

    @app.post("/api/save")
    def save(req: SaveRequest) -> dict:
        return session.save(req.confirm)

    return app
