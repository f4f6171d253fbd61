"""The OpenAI Responses API, for the stand-in (Codex CLI): ``POST /v1/responses`` answered
as Server-Sent Events, and the WebSocket Codex tries first, ``GET /v1/responses`` with
``Upgrade: websocket`` (a minimal RFC 6455 server: refused, Codex retries it and falls back
to HTTP only after seconds, on every turn).

What Codex 0.171.0 sends (seen with it, ``tests/fixtures/codex-subagent``):

- No ``tools`` field: the tools are listed in an input item ``{"type": "additional_tools",
  "tools": [...]}``, grouped in namespaces (``functions``: the code-mode ``exec``, a custom
  tool whose input is JavaScript; ``collaboration``: ``spawn_agent``, ``wait_agent`` ...).
- Who asks, in ``client_metadata["x-codex-turn-metadata"]`` (JSON): ``agent_name``
  (``/root``, a sub-agent ``/root/<task_name>``), ``thread_source`` (``user``,
  ``thread_title``: the title request, ``subagent``), ``request_kind`` (``prewarm``,
  ``turn``).
- A prewarm (``"generate": false``) wants ``response.created`` + ``response.completed``
  only: it is no turn, and the brain is not asked.
- On the WebSocket, a request continues an earlier response (``previous_response_id``)
  and sends only the new items: the stand-in keeps each response's whole conversation, so
  that the brain sees it whole (the prompt, the calls it made, their outputs).
- A sub-agent's task is an ``agent_message`` item addressed to it; its text is that task.

A reply's call is encoded by the kind of tool offered under that name: a custom tool's
(``exec``) as a ``custom_tool_call`` whose input is ``arguments["input"]``, a function's as a
``function_call`` (with its namespace, other than ``functions``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import threading
from collections.abc import Callable
from typing import Any

import standin
from standin import ModelStandIn, Reply, Request

Send = Callable[[str, dict[str, Any]], None]
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_OUTPUTS = ("function_call_output", "custom_tool_call_output")
_CALLS = ("function_call", "custom_tool_call")
_store_lock = threading.RLock()


# -- reading a request -------------------------------------------------------------------


def turn_metadata(body: dict[str, Any]) -> dict[str, Any]:
    """Codex's ``x-codex-turn-metadata`` (agent_name, thread_source, request_kind ...)."""
    metadata = body.get("client_metadata") or {}
    try:
        found = json.loads(metadata.get("x-codex-turn-metadata") or "{}")
    except (TypeError, ValueError):
        found = {}
    return found if isinstance(found, dict) else {}


def _texts(item: dict[str, Any]) -> list[str]:
    content = item.get("content")
    if isinstance(content, str):
        return [content]
    out = []
    for part in content if isinstance(content, list) else []:
        if isinstance(part, dict):
            value = part.get("text") or part.get("encrypted_content")
            if isinstance(value, str):
                out.append(value)
    return out


def _is_prompt(item: dict[str, Any]) -> bool:
    """A user's own message (Codex's context items are user messages too: ``<...>``)."""
    return item.get("role") == "user" and any(not t.lstrip().startswith("<") for t in _texts(item))


def _last_prompt(items: list[dict[str, Any]]) -> int | None:
    return next((i for i in range(len(items) - 1, -1, -1) if _is_prompt(items[i])), None)


def _agent_task(items: list[dict[str, Any]], agent: str) -> str:
    """The newest task a parent sent ``agent``: ``Message Type: NEW_TASK ... Payload:\\n``
    then the task."""
    for item in reversed(items):
        if item.get("type") != "agent_message" or item.get("recipient") not in (None, agent):
            continue
        text = "".join(_texts(item))
        return text.split("Payload:", 1)[1].strip() if "Payload:" in text else text.strip()
    return ""


def _walk_tools(tools: Any, namespace: str | None, out: dict[str, dict[str, Any]]) -> None:
    for tool in tools if isinstance(tools, list) else []:
        if not isinstance(tool, dict):
            continue
        if tool.get("type") == "namespace":
            _walk_tools(tool.get("tools"), str(tool.get("name") or ""), out)
        elif tool.get("name"):
            out[str(tool["name"])] = {**tool, "namespace": namespace}


def offered_tools(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """name -> the tool's definition (with its ``namespace``): the ``tools`` field and the
    ``additional_tools`` items."""
    found: dict[str, dict[str, Any]] = {}
    _walk_tools(body.get("tools"), None, found)
    for item in body.get("input") or []:
        if isinstance(item, dict) and item.get("type") == "additional_tools":
            _walk_tools(item.get("tools"), None, found)
    return found


def answered_call(req: Request) -> str | None:
    """The name of the call that the request's newest tool output answers."""
    items = [i for i in req.body.get("input") or [] if isinstance(i, dict)]
    names = {i.get("call_id"): i.get("name") for i in items if i.get("type") in _CALLS}
    for item in reversed(items):
        if item.get("type") in _OUTPUTS:
            name = names.get(item.get("call_id"))
            return str(name) if name else None
    return None


def responses_request(path: str, body: dict[str, Any]) -> Request:
    """The request, ``body["input"]`` being the whole conversation."""
    items = [i for i in body.get("input") or [] if isinstance(i, dict)]
    meta = turn_metadata(body)
    agent = str(meta.get("agent_name") or "/root")
    developer = [t for i in items if i.get("role") in ("developer", "system") for t in _texts(i)]
    system = "\n".join([str(body.get("instructions") or ""), *developer]).strip()
    prompt_at = _last_prompt(items)
    if agent != "/root":
        user_text = _agent_task(items, agent)
    elif prompt_at is not None:
        user_text = next(
            (t for t in reversed(_texts(items[prompt_at])) if not t.lstrip().startswith("<")), ""
        )
    else:
        user_text = body["input"] if isinstance(body.get("input"), str) else ""
    since = items[prompt_at + 1 :] if prompt_at is not None else items
    tools = {
        name: tool.get("parameters") or tool.get("format") or {}
        for name, tool in offered_tools(body).items()
    }
    return Request(
        api="responses",
        path=path,
        body=body,
        model=body.get("model"),
        system=system,
        user_text=user_text,
        after_tool=any(i.get("type") in _OUTPUTS for i in since),
        tools=tools,
        stream=body.get("stream", True) is not False,
    )


# -- answering ---------------------------------------------------------------------------


def _conversations(model: ModelStandIn) -> dict[str, list[dict[str, Any]]]:
    """response id -> the conversation it ended (its input, then its output)."""
    with _store_lock:
        found = model.__dict__.setdefault("responses_conversations", {})
    return found  # type: ignore[no-any-return]


def _expanded(model: ModelStandIn, body: dict[str, Any]) -> dict[str, Any]:
    new = body.get("input")
    items = [i for i in new if isinstance(i, dict)] if isinstance(new, list) else []
    if isinstance(new, str):
        items = [{"type": "message", "role": "user", "content": new}]
    before = _conversations(model).get(str(body.get("previous_response_id") or ""), [])
    return {**body, "input": [*before, *items]}


def _usage() -> dict[str, Any]:
    return {
        "input_tokens": 1200,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 12,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 1212,
    }


def _message(item_id: str, text: str, phase: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "message",
        "id": item_id,
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    if phase:
        item["phase"] = phase
    return item


def _call(req: Request, n: int, call: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    name, arguments = call
    tool = offered_tools(req.body).get(name, {})
    if tool.get("type") == "custom":
        return {
            "type": "custom_tool_call",
            "id": f"ctc_{n}",
            "status": "completed",
            "call_id": f"call_{n}",
            "name": name,
            "input": str(arguments.get("input", json.dumps(arguments))),
        }
    item: dict[str, Any] = {
        "type": "function_call",
        "id": f"fc_{n}",
        "status": "completed",
        "call_id": f"call_{n}",
        "name": name,
        "arguments": json.dumps(arguments),
    }
    namespace = tool.get("namespace")
    if namespace and namespace != "functions":
        item["namespace"] = namespace
    return item


def _stream(model: ModelStandIn, path: str, body: dict[str, Any], send: Send) -> None:
    """One response: ``response.created``, the brain's answer (held if it says so), its
    items, ``response.completed``."""
    n = model.next_id()
    response_id = f"resp_{n}"
    expanded = _expanded(model, body)
    send("response.created", {"type": "response.created", "response": {"id": response_id}})
    output: list[dict[str, Any]] = []
    if body.get("generate") is not False:  # a prewarm asks for nothing
        req = responses_request(path, expanded)
        reply: Reply = model.answer(req)
        if reply.text:
            output.append(_message(f"msg_{n}", reply.text, "commentary" if reply.call else None))
        if reply.call:
            output.append(_call(req, n, reply.call))
    for index, item in enumerate(output):
        pending = {**item, "status": "in_progress"}
        if item["type"] == "message":
            pending["content"] = []
        elif item["type"] == "function_call":
            pending["arguments"] = ""
        else:
            pending["input"] = ""
        send(
            "response.output_item.added",
            {"type": "response.output_item.added", "output_index": index, "item": pending},
        )
        if item["type"] == "message":
            send(
                "response.output_text.delta",
                {
                    "type": "response.output_text.delta",
                    "item_id": item["id"],
                    "output_index": index,
                    "content_index": 0,
                    "delta": item["content"][0]["text"],
                },
            )
        send(
            "response.output_item.done",
            {"type": "response.output_item.done", "output_index": index, "item": item},
        )
    with _store_lock:
        _conversations(model)[response_id] = [*expanded["input"], *output]
    send(
        "response.completed",
        {
            "type": "response.completed",
            "response": {"id": response_id, "status": "completed", "usage": _usage()},
        },
    )


def _responses(model: ModelStandIn, handler: Any, body: dict[str, Any]) -> None:
    """``POST /v1/responses``: the events as SSE."""
    with handler.sse() as send:
        _stream(model, handler.path, body, send)


# -- the WebSocket -----------------------------------------------------------------------


def _ws_send(wfile: Any, payload: bytes, opcode: int = 0x1) -> None:
    """One unmasked frame (a server's)."""
    size = len(payload)
    if size < 126:
        head = struct.pack(">BB", 0x80 | opcode, size)
    elif size < 1 << 16:
        head = struct.pack(">BBH", 0x80 | opcode, 126, size)
    else:
        head = struct.pack(">BBQ", 0x80 | opcode, 127, size)
    wfile.write(head + payload)
    wfile.flush()


def _ws_recv(rfile: Any) -> tuple[int, bytes] | None:
    """One whole message (fragments joined) or control frame: (opcode, payload); None at
    the end of the connection."""
    chunks: list[bytes] = []
    first: int | None = None
    while True:
        head = rfile.read(2)
        if len(head) < 2:
            return None
        fin, opcode = head[0] & 0x80, head[0] & 0x0F
        masked, size = head[1] & 0x80, head[1] & 0x7F
        if size == 126:
            size = struct.unpack(">H", rfile.read(2))[0]
        elif size == 127:
            size = struct.unpack(">Q", rfile.read(8))[0]
        mask = rfile.read(4) if masked else b"\0\0\0\0"
        data = rfile.read(size)
        if len(data) < size:
            return None
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        if opcode >= 0x8:
            return opcode, data
        first = opcode if first is None else first
        chunks.append(data)
        if fin:
            return first, b"".join(chunks)


def _websocket(model: ModelStandIn, handler: Any) -> None:
    """``GET /v1/responses`` upgraded: each text frame ``{"type": "response.create", ...}``
    is a request, answered with the same events as the SSE stream, one frame each."""
    if (handler.headers.get("Upgrade") or "").lower() != "websocket":
        handler.json(404, {"error": {"message": "a WebSocket upgrade is expected"}})
        return
    key = handler.headers.get("Sec-WebSocket-Key", "")
    accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
    handler.send_response(101)
    handler.send_header("Upgrade", "websocket")
    handler.send_header("Connection", "Upgrade")
    handler.send_header("Sec-WebSocket-Accept", accept)
    handler.end_headers()
    handler.wfile.flush()

    def send(event: str, data: dict[str, Any]) -> None:
        _ws_send(handler.wfile, json.dumps(data).encode())

    try:
        while True:
            message = _ws_recv(handler.rfile)
            if message is None:
                break
            opcode, payload = message
            if opcode == 0x8:  # close: answer it
                _ws_send(handler.wfile, payload[:2], opcode=0x8)
                break
            if opcode == 0x9:  # ping
                _ws_send(handler.wfile, payload, opcode=0xA)
                continue
            if opcode not in (0x1, 0x2):
                continue
            try:
                body = json.loads(payload)
            except ValueError:
                continue
            if isinstance(body, dict) and body.get("type") in (None, "response.create"):
                body.pop("type", None)
                _stream(model, handler.path, body, send)
    except OSError:
        pass  # the agent went away
    handler.close_connection = True


standin.register("/responses", _responses)
standin.register_get("/responses", _websocket)
