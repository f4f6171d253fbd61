"""The Anthropic Messages API for the stand-in (Claude Code).

- ``POST /v1/messages`` (Claude Code adds ``?beta=true``): streamed as SSE
  (``message_start``, ``content_block_start/delta/stop``, ``message_delta`` with the
  ``stop_reason``, ``message_stop``) or, without ``"stream": true``, one JSON message. A
  tool call is a ``tool_use`` block whose input arrives as one ``input_json_delta``.
- ``POST /v1/messages/count_tokens``: ``{"input_tokens": N}``.

How a request reads (``messages_request``): the system prompt is the ``system`` blocks'
text; the user's text is the newest user text block that is not the CLI's own wrapping
(``<system-reminder>``, ``<command-name>`` ... all start with ``<``), else the newest user
text as it is (a title request's ``<session>...</session>``); the turn is owed after a tool
when a ``tool_result`` is newer than that text; the structured-output schema a request asks
for (``output_config.format``) is kept in ``Request.body`` for the brain to read.

Not served: Claude Code's ``HEAD /`` at start-up (the stand-in answers 501). It only warms
the connection (``fetch(base, {method: "HEAD"}).catch(() => {})``): its answer is ignored.

Importing this module adds the routes (``standin.register``).
"""

from __future__ import annotations

import json
import time
from typing import Any

import standin
from standin import ModelStandIn, Request


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    return []


def _texts(message: dict[str, Any]) -> list[str]:
    return [
        b["text"]
        for b in _blocks(message)
        if b.get("type") == "text" and isinstance(b.get("text"), str)
    ]


def _system(body: dict[str, Any]) -> str:
    system = body.get("system")
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "\n".join(str(b.get("text", "")) for b in system if isinstance(b, dict))
    return ""


def messages_request(path: str, body: dict[str, Any], headers: dict[str, str]) -> Request:
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    users = [m for m in messages if m.get("role") == "user"]
    user_text, after_tool = "", False
    for message in reversed(users):
        if any(b.get("type") == "tool_result" for b in _blocks(message)):
            after_tool = True
        typed = [t for t in _texts(message) if not t.lstrip().startswith("<")]
        if typed:
            user_text = typed[-1]
            break
    else:
        after_tool = bool(users) and any(b.get("type") == "tool_result" for b in _blocks(users[-1]))
        user_text = next((t for m in reversed(users) for t in reversed(_texts(m))), "")
    tools = {
        str(t["name"]): t.get("input_schema") or {}
        for t in body.get("tools") or []
        if isinstance(t, dict) and t.get("name")
    }
    return Request(
        api="anthropic",
        path=path,
        body=body,
        model=body.get("model"),
        system=_system(body),
        user_text=user_text,
        after_tool=after_tool,
        tools=tools,
        stream=bool(body.get("stream")),
        headers=headers,
    )


def json_schema(req: Request) -> dict[str, Any] | None:
    """The JSON schema a structured-output request asks the answer to follow."""
    for holder in (req.body.get("output_config"), req.body):
        if not isinstance(holder, dict):
            continue
        fmt = holder.get("format") if holder is not req.body else holder.get("output_format")
        if isinstance(fmt, dict) and isinstance(fmt.get("schema"), dict):
            return dict(fmt["schema"])
    return None


def _message(model: str, content: list[dict[str, Any]], stop: str | None) -> dict[str, Any]:
    return {
        "id": f"msg_{time.time_ns()}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 100,
            "output_tokens": 10,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def _messages(standin_: ModelStandIn, handler: Any, body: dict[str, Any]) -> None:
    headers = {
        k.lower(): v
        for k, v in handler.headers.items()
        if k.lower() not in ("x-api-key", "authorization")
    }
    req = messages_request(handler.path, body, headers)
    reply = standin_.answer(req)
    n = standin_.next_id()
    model = req.model or standin.MODEL
    content: list[dict[str, Any]] = []
    if reply.text:
        content.append({"type": "text", "text": reply.text})
    if reply.call:
        name, arguments = reply.call
        content.append(
            {"type": "tool_use", "id": f"toolu_standin_{n}", "name": name, "input": arguments}
        )
    stop = "tool_use" if reply.call else "end_turn"
    if not req.stream:
        handler.json(200, _message(model, content, stop))
        return
    with handler.sse() as send:
        start = _message(model, [], None)
        start["usage"]["output_tokens"] = 1
        send("message_start", {"type": "message_start", "message": start})
        send("ping", {"type": "ping"})
        for index, block in enumerate(content):
            if block["type"] == "text":
                opened: dict[str, Any] = {"type": "text", "text": ""}
                delta = {"type": "text_delta", "text": block["text"]}
            else:
                opened = {**block, "input": {}}
                delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
            send(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": opened},
            )
            send(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
            send("content_block_stop", {"type": "content_block_stop", "index": index})
        send(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": 10},
            },
        )
        send("message_stop", {"type": "message_stop"})


def _count_tokens(standin_: ModelStandIn, handler: Any, body: dict[str, Any]) -> None:
    handler.json(200, {"input_tokens": 100})


standin.register("/messages/count_tokens", _count_tokens)
standin.register("/v1/messages", _messages)
