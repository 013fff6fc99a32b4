"""Request checks that run in the HTTP server before a request is queued: bad input costs a 4xx, never a batch.

LitServe decodes the requests of a batch together in its worker, so one malformed request raising there would fail
every request batched with it. This ASGI middleware reads the body of `POST /predict` (refusing an oversized one
before it is read whole), parses and checks it, and answers 4xx with a one-line JSON error; only valid bodies go on.
`ApiKey`, in front of it when `--api_key` is set, answers 401 to any request but the health check without the key.

Two request shapes are accepted (docs/serve.md): the server's own `{"inputs": [...], "top_k": 1, "threshold": 0.3}`
(`threshold`, multi-label only: a number for every label or `{label: number}` for some), and Hugging Face's
`{"inputs": ..., "parameters": {"top_k": ..., "function_to_apply": ...}}` (what `InferenceClient` sends). A request
with `parameters` is answered in Hugging Face's shape (`request_options`): every label's score, no threshold applied,
so it takes none.
"""

import hmac
import json
from dataclasses import dataclass
from typing import Any, NamedTuple

Scope = dict[str, Any]
FUNCTIONS = ("sigmoid", "softmax", "none")  # Hugging Face's `function_to_apply` values


@dataclass(frozen=True)
class Limits:
    """Per-request limits; each is a `main.py serve` option."""

    max_body_bytes: int = 1 << 20
    max_inputs: int = 64
    max_chars: int = 20_000
    multi_label: bool = False  # the model is multi-label: a request may set its own `threshold`
    labels: tuple[str, ...] = ()  # the model's labels, which a request's `{label: threshold}` may name


class RequestError(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_payload(body: bytes, limits: Limits) -> dict:
    """The parsed body, or a RequestError naming what is wrong and what is expected."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RequestError(400, f"the body is not JSON: {error}") from None
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise RequestError(422, 'expected a JSON object {"inputs": ["text", ...]}')
    hugging_face = "parameters" in payload
    parameters = payload.get("parameters")
    if hugging_face and ("threshold" in payload or isinstance(parameters, dict) and "threshold" in parameters):
        raise RequestError(
            422,
            "`threshold` applies to the server's own shape (without `parameters`); Hugging Face's shape answers "
            "every label's score and the client decides",
        )
    unknown = set(payload) - ({"inputs", "parameters"} if hugging_face else {"inputs", "top_k", "threshold"})
    if unknown and hugging_face:
        raise RequestError(
            422, f"unknown field(s) {sorted(unknown)}: with `parameters` (Hugging Face's shape) `top_k` goes inside it"
        )
    if unknown:
        raise RequestError(
            422,
            f"unknown field(s) {sorted(unknown)}: expected `inputs` and optionally `top_k` and `threshold` "
            "(or `parameters`)",
        )
    inputs = payload["inputs"]
    if isinstance(inputs, str):
        inputs = payload["inputs"] = [inputs]  # one text without the list around it (a pair always goes in a list)
    if not isinstance(inputs, list) or not inputs:
        raise RequestError(422, "`inputs` must be a non-empty list")
    if len(inputs) > limits.max_inputs:
        raise RequestError(413, f"{len(inputs)} inputs in one request; the limit is {limits.max_inputs} (--max_inputs)")
    for i, item in enumerate(inputs):
        if not isinstance(item, str) and not is_pair(item):
            raise RequestError(
                422, f'inputs[{i}]: expected a string or a pair ["first", "second"], got {json.dumps(item)[:80]}'
            )
        for text in [item] if isinstance(item, str) else item:
            if not text.strip():
                raise RequestError(422, f"inputs[{i}] is empty")
            if len(text) > limits.max_chars:
                raise RequestError(
                    413, f"inputs[{i}] has {len(text)} characters; the limit is {limits.max_chars} (--max_chars)"
                )
    top_k = _checked_parameters(payload["parameters"]) if hugging_face else payload.get("top_k", 1)
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise RequestError(422, "`top_k` must be a positive integer, or null for every label's score")
    if "threshold" in payload:
        _check_threshold(payload["threshold"], limits)
    return payload


def _check_threshold(threshold: object, limits: Limits) -> None:
    """A request's own multi-label threshold: a number strictly between 0 and 1 for every label, or `{label: number}`
    for some labels (the others keep the server's)."""
    if isinstance(threshold, dict):
        unknown = sorted(set(threshold) - set(limits.labels))
        if limits.multi_label and unknown:
            raise RequestError(
                422, f"`threshold` names unknown label(s) {unknown}: this model's labels are {list(limits.labels)}"
            )
        if not threshold:
            raise RequestError(422, "`threshold` is an empty object: name at least one label, or give a number")
        for label, value in threshold.items():
            if not _probability(value):
                raise RequestError(
                    422,
                    f"`threshold` of {json.dumps(label)} must be a number between 0 and 1 (exclusive), got "
                    f"{json.dumps(value)}",
                )
    elif not _probability(threshold):
        raise RequestError(
            422,
            "`threshold` must be a number between 0 and 1 (exclusive) or an object {label: number}, got "
            f"{json.dumps(threshold)}",
        )
    if not limits.multi_label:
        raise RequestError(422, "`threshold` applies to a multi-label model; this one picks the top label")


def _probability(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1


def _checked_parameters(parameters: object) -> object:
    """Hugging Face's `parameters` checked; returns its `top_k`."""
    if parameters is None:
        return None
    if not isinstance(parameters, dict):
        raise RequestError(422, "`parameters` must be a JSON object")
    unknown = set(parameters) - {"top_k", "function_to_apply"}
    if unknown:
        raise RequestError(422, f"unknown parameter(s) {sorted(unknown)}: expected `top_k` and `function_to_apply`")
    if parameters.get("function_to_apply") not in (None, *FUNCTIONS):
        raise RequestError(422, f"`function_to_apply` must be one of {', '.join(FUNCTIONS)}")
    return parameters.get("top_k")


class Options(NamedTuple):
    """What one checked request asks for."""

    inputs: list  # texts and pairs
    top_k: int | None  # labels per answer; None: every label
    function_to_apply: str | None  # None: the task's own (softmax, sigmoid, or the value for regression)
    hugging_face: bool  # answer in Hugging Face's shape
    threshold: float | dict[str, float] | None = None  # multi-label: the request's own, for every label or some
    # (`{label: number}`); None: the server's


def request_options(payload: dict) -> Options:
    """The options of a payload `check_payload` passed. With `parameters` (Hugging Face's shape) the answer is a list
    of `{"label", "score"}` per input, every label unless `top_k`; without, the server's own, the top label."""
    inputs = [payload["inputs"]] if isinstance(payload["inputs"], str) else payload["inputs"]
    if "parameters" in payload:
        parameters = payload["parameters"] or {}
        return Options(inputs, parameters.get("top_k"), parameters.get("function_to_apply"), True)
    return Options(inputs, payload.get("top_k", 1), None, False, payload.get("threshold"))


def is_pair(item: object) -> bool:
    """A sentence pair as a request gives it: `["first", "second"]`."""
    return isinstance(item, list) and len(item) == 2 and all(isinstance(t, str) for t in item)


class RequestLimits:
    """ASGI middleware: checks `POST <path>` bodies with `check_payload` before the app sees them."""

    def __init__(self, app: Any, limits: Limits, path: str = "/predict") -> None:
        self.app, self.limits, self.path = app, limits, path

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read_body(scope, receive)
            check_payload(body, self.limits)
        except RequestError as error:
            await _json_error(send, error.status, str(error))
            return
        replayed = False
        # The body is JSON (checked): say so, whatever the client sent (curl's default is a form's content type).
        headers = [(k, v) for k, v in scope.get("headers") or [] if k != b"content-type"]
        scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect message, when it comes

        await self.app(scope, replay, send)

    async def _read_body(self, scope: Scope, receive: Any) -> bytes:
        limit = self.limits.max_body_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RequestError(413, f"the body has {int(declared)} bytes; the limit is {limit} (--max_body_bytes)")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestError(400, "the client disconnected before sending the body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"the body is over {limit} bytes (--max_body_bytes)")
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)


class ApiKey:
    """ASGI middleware: every HTTP request but `open_paths` (the health check, for load balancers) must carry
    `Authorization: Bearer <key>`; others get 401 before anything else reads them."""

    def __init__(self, app: Any, key: str, open_paths: tuple[str, ...] = ("/health",)) -> None:
        self.app, self.key, self.open_paths = app, key.encode(), open_paths

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] not in self.open_paths:
            scheme, _, token = dict(scope.get("headers") or []).get(b"authorization", b"").partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
                message = "this server needs an API key: send the header `Authorization: Bearer KEY`"
                await _json_error(send, 401, message, [(b"www-authenticate", b"Bearer")])
                return
        await self.app(scope, receive, send)


async def _json_error(send: Any, status: int, message: str, headers: list | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
