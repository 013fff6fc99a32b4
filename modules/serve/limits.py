"""Request checks that run in the HTTP server before a request is queued: bad input costs a 4xx, never a batch.

LitServe decodes the requests of a batch together in its worker, so one malformed request raising there would fail
every request batched with it. This ASGI middleware reads the body of `POST /predict` (refusing an oversized one
before it is read whole), parses and checks it, and answers 4xx with a one-line JSON error; only valid bodies go on.
"""

import json
from dataclasses import dataclass
from typing import Any

Scope = dict[str, Any]


@dataclass(frozen=True)
class Limits:
    """Per-request limits; each is a `python -m modules.serve` option."""

    max_body_bytes: int = 1 << 20
    max_inputs: int = 64
    max_chars: int = 20_000


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
    unknown = set(payload) - {"inputs", "top_k"}
    if unknown:
        raise RequestError(422, f"unknown field(s) {sorted(unknown)}: expected `inputs` and optionally `top_k`")
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
    top_k = payload.get("top_k", 1)
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise RequestError(422, "`top_k` must be a positive integer, or null for every label's score")
    return payload


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


async def _json_error(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
