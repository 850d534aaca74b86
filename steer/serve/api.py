"""The OpenAI-compatible HTTP face of a SteeringService (FastAPI).

    GET  /v1/models              the one model served
    POST /v1/chat/completions    chat messages -> reply (chat template as `steer generate`)
    POST /v1/completions         a text prompt -> its continuation (no chat template)

Both POSTs stream with `"stream": true` (server-sent events: `data: {chunk}` lines in
OpenAI's chunk shape, then `data: [DONE]`). Steering per request: a top-level `"steer"`
field (the openai client's `extra_body={"steer": EXPR}`); absent: the server's default;
`""` or `null`: the baseline. Every error is an OpenAI error body
`{"error": {"message", "type", "param", "code"}}` with a 4xx status (5xx for a fault of
the server itself), never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException

from .service import Job, Piece, SteeringService
from .steering import SteeringError

log = logging.getLogger("steer.serve")


# ---------------------------------------------------------------- requests
class _Sampling(BaseModel):
    """What both POSTs share. OpenAI fields not listed here are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stop: str | list[str] | None = None
    n: int = 1
    stream: bool = False
    stream_options: dict | None = None
    steer: str | None = None
    """A steering expression; absent: the server's default, "" or null: the baseline."""


class ChatRequest(_Sampling):
    messages: list[dict] = Field(min_length=1)


class CompletionRequest(_Sampling):
    prompt: str | list[str]


class ApiError(Exception):
    """An error the client caused (or must hear about), in OpenAI's shape."""

    def __init__(self, status: int, message: str, param=None, code=None, kind=None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.kind = kind or ("invalid_request_error" if status < 500 else "server_error")

    def response(self) -> JSONResponse:
        return JSONResponse(error_body(self.message, self.kind, self.param, self.code), self.status)


def error_body(message: str, kind: str, param=None, code=None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# ---------------------------------------------------------------- the app
def create_app(service: SteeringService, api_key: str | None = None) -> FastAPI:
    """The FastAPI app serving `service`; with api_key, every /v1 call needs
    `Authorization: Bearer <api_key>`."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.close()  # the model thread ends with the server

    app = FastAPI(
        title="steer serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    _install_error_handlers(app)

    @app.middleware("http")
    async def bearer_token(request: Request, call_next):
        if api_key is not None and request.url.path.startswith("/v1"):
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or token.strip() != api_key:
                return ApiError(
                    401,
                    "invalid or missing API key: send 'Authorization: Bearer <key>'",
                    code="invalid_api_key",
                ).response()
        return await call_next(request)

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [_model_card(service)]}

    @app.post("/v1/chat/completions")
    @_contained
    async def chat_completions(request: Request):
        req = await _read(request, ChatRequest)
        messages = [_message(m, i) for i, m in enumerate(req.messages)]
        job = _prepare(service, req, messages, chat=None)
        return await _respond(service, req, job, _ChatShape(service.model_id, job))

    @app.post("/v1/completions")
    @_contained
    async def completions(request: Request):
        req = await _read(request, CompletionRequest)
        prompt = req.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise ApiError(400, "give one prompt (a string)", param="prompt")
            prompt = prompt[0]
        job = _prepare(service, req, prompt, chat=False)
        return await _respond(service, req, job, _CompletionShape(service.model_id, job))

    return app


def _contained(route):
    """A fault of the server inside a route becomes a 500 error body here, logged with its
    traceback; escaping the app instead, it would also drop the client's connection."""

    @functools.wraps(route)
    async def wrapper(*args, **kwargs):
        try:
            return await route(*args, **kwargs)
        except (ApiError, asyncio.CancelledError):
            raise
        except Exception as err:
            log.error("request failed", exc_info=err)
            raise ApiError(500, "the server failed on this request (see its log)") from None

    return wrapper


async def _read(request: Request, model: type[_Sampling]) -> _Sampling:
    """The body as a request of `model`, whatever its Content-Type says (`curl -d` sends
    form-encoded): JSON or a 400."""
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as err:
        raise _invalid(err.errors()) from None


def _invalid(errors: list) -> ApiError:
    """The first pydantic error as an OpenAI error naming the field."""
    first = (errors or [{}])[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    message = first.get("msg", "invalid request")
    return ApiError(400, f"{param}: {message}" if param else message, param=param)


def _model_card(service: SteeringService) -> dict:
    sae = service.sae
    return {
        "id": service.model_id,
        "object": "model",
        "created": 0,
        "owned_by": "steer",
        "sae": None if sae is None else {"hookpoint": sae.cfg.hookpoint, "latents": sae.n_latents},
        "steer": service.default_steer,
    }


def _message(message: dict, index: int) -> dict:
    """An OpenAI chat message -> {"role", "content": str} (text parts joined)."""
    content = message.get("content")
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
            raise ApiError(400, "only text content parts are supported", f"messages[{index}]")
        content = "".join(str(p.get("text", "")) for p in content)
    if not isinstance(message.get("role"), str) or not isinstance(content, str):
        raise ApiError(
            400, "a message needs a string 'role' and text 'content'", f"messages[{index}]"
        )
    return {"role": message["role"], "content": content}


def _prepare(service: SteeringService, req: _Sampling, prompt, chat) -> Job:
    if req.model != service.model_id:
        raise ApiError(
            404,
            f"the model {req.model!r} does not exist: this server serves {service.model_id!r}",
            param="model",
            code="model_not_found",
        )
    if req.n != 1:
        raise ApiError(400, "n must be 1 (one completion per request)", param="n")
    steer = req.steer if "steer" in req.model_fields_set else service.default_steer
    stop = [req.stop] if isinstance(req.stop, str) else req.stop
    try:
        steer_job = service.prepare(
            prompt,
            chat=chat,
            steer=steer or "",
            max_tokens=req.max_tokens or req.max_completion_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            seed=req.seed,
            stop=stop,
        )
    except SteeringError as err:
        raise ApiError(400, _one_line(err), param="steer") from None
    except ValueError as err:
        raise ApiError(400, _one_line(err)) from None
    return steer_job


def _one_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# ---------------------------------------------------------------- responses
class _ChatShape:
    """Chat completion objects and chunks."""

    object, chunk_object = "chat.completion", "chat.completion.chunk"

    def __init__(self, model: str, job: Job):
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created, self.model, self.job = int(time.time()), model, job

    def _head(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def full(self, piece: Piece) -> dict:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": piece.text},
            "logprobs": None,
            "finish_reason": piece.finish_reason,
        }
        return {**self._head(self.object), "choices": [choice], **self.extras(piece)}

    def first_chunk(self) -> dict | None:
        delta = {"role": "assistant", "content": ""}
        return self.chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])

    def piece_chunk(self, piece: Piece) -> dict:
        delta = {"content": piece.text} if piece.text else {}
        choice = {"index": 0, "delta": delta, "logprobs": None}
        return self.chunk([{**choice, "finish_reason": piece.finish_reason}])

    def chunk(self, choices: list) -> dict:
        return {**self._head(self.chunk_object), "choices": choices, "steer": self.job.steer}

    def extras(self, piece: Piece) -> dict:
        return {"usage": self.usage(piece), "steer": self.job.steer}

    def usage(self, piece: Piece) -> dict:
        n_prompt = self.job.prompt_tokens
        return {
            "prompt_tokens": n_prompt,
            "completion_tokens": piece.completion_tokens,
            "total_tokens": n_prompt + piece.completion_tokens,
        }


class _CompletionShape(_ChatShape):
    """Text completion objects and chunks (the same stream, another shape)."""

    object = chunk_object = "text_completion"

    def __init__(self, model: str, job: Job):
        super().__init__(model, job)
        self.id = f"cmpl-{uuid.uuid4().hex}"

    def full(self, piece: Piece) -> dict:
        choice = {"index": 0, "text": piece.text, "logprobs": None}
        choice["finish_reason"] = piece.finish_reason
        return {**self._head(self.object), "choices": [choice], **self.extras(piece)}

    def first_chunk(self) -> dict | None:
        return None

    def piece_chunk(self, piece: Piece) -> dict:
        choice = {"index": 0, "text": piece.text, "logprobs": None}
        return self.chunk([{**choice, "finish_reason": piece.finish_reason}])


async def _respond(service: SteeringService, req: _Sampling, job: Job, shape: _ChatShape):
    if req.stream:
        usage = bool((req.stream_options or {}).get("include_usage"))
        return StreamingResponse(
            _events(service, job, shape, usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
    pieces: list[Piece] = []
    gone = threading.Event()  # the client left: a queued job is skipped
    try:
        await asyncio.wrap_future(service.submit(job, pieces.append, gone.is_set))
    except asyncio.CancelledError:
        gone.set()
        raise
    except ValueError as err:
        raise ApiError(400, _one_line(err)) from None
    text = "".join(p.text for p in pieces)
    last = pieces[-1] if pieces else Piece("", "length", 0)
    return shape.full(Piece(text, last.finish_reason, last.completion_tokens))


_END = object()


async def _events(
    service: SteeringService, job: Job, shape: _ChatShape, usage: bool
) -> AsyncIterator[str]:
    """The job's pieces as server-sent events, as the model thread makes them."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    gone = threading.Event()

    def put(item) -> None:  # called on the model thread
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the event loop is closed: the server is stopping
            gone.set()

    future = service.submit(job, put, gone.is_set)
    future.add_done_callback(lambda _: put(_END))
    last = Piece("", None, 0)
    try:
        first = shape.first_chunk()
        if first is not None:
            yield _sse(first)
        while (item := await queue.get()) is not _END:
            last = item
            yield _sse(shape.piece_chunk(item))
        if future.exception() is not None:
            err = future.exception()
            kind = "invalid_request_error" if isinstance(err, ValueError) else "server_error"
            if kind == "server_error":
                log.error("generation failed", exc_info=err)
            message = _one_line(err) if kind != "server_error" else "generation failed"
            yield _sse(error_body(message, kind))
        elif usage:
            yield _sse({**shape.chunk([]), "usage": shape.usage(last)})
        yield "data: [DONE]\n\n"
    finally:
        gone.set()  # the client left (or the stream ended): stop between tokens


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


# ---------------------------------------------------------------- errors
def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        return err.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        return _invalid(err.errors()).response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
        return ApiError(err.status_code, str(err.detail), code=code).response()

    @app.exception_handler(Exception)
    async def fault(request: Request, err: Exception):
        log.error("request failed", exc_info=err)
        return ApiError(500, "the server failed on this request (see its log)").response()
