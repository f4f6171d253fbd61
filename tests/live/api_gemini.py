"""The Gemini API (Generative Language API ``v1beta``) for the stand-in, as Gemini CLI calls
it with ``GOOGLE_GEMINI_BASE_URL`` pointing here (its bundled ``@google/genai`` appends
``/v1beta/models/<model>:<method>``; seen with 0.61.0).

- ``:streamGenerateContent?alt=sse``: a turn (the conversation's, or a sub-agent's): one
  ``GenerateContentResponse`` per ``data:`` chunk, the last with ``finishReason: STOP`` and
  ``usageMetadata``. A tool call is a part ``{"functionCall": {"name", "args"}}``; a tool's
  result comes back as a user part ``{"functionResponse": ...}``.
- ``:generateContent``: one JSON ``GenerateContentResponse`` (the CLI's utility requests: the
  model router's classifier, in JSON mode with a ``responseJsonSchema``; the summary that
  titles a session).
- ``:countTokens``: ``{"totalTokens": N}`` (not a model request: not recorded).

Importing this module adds the routes (``standin.register``).
"""

from __future__ import annotations

import json
from typing import Any

import standin
from standin import ModelStandIn, Request


def _parts_text(parts: Any) -> str:
    if not isinstance(parts, list):
        return ""
    return "\n".join(
        str(p["text"]) for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)
    )


def gemini_request(path: str, body: dict[str, Any]) -> Request:
    """A ``generateContent``/``streamGenerateContent`` body as a :class:`Request`."""
    route = path.split("?", 1)[0]
    model = route.rsplit("/", 1)[-1].split(":", 1)[0] or None
    contents = [c for c in body.get("contents") or [] if isinstance(c, dict)]
    users = [c for c in contents if c.get("role", "user") == "user"]
    last_user = users[-1] if users else {}
    parts = last_user.get("parts") or []
    after_tool = (
        bool(contents)
        and contents[-1] is last_user
        and any(isinstance(p, dict) and isinstance(p.get("functionResponse"), dict) for p in parts)
    )
    system = body.get("systemInstruction")
    if isinstance(system, dict):
        system_text = _parts_text(system.get("parts"))
    else:
        system_text = system if isinstance(system, str) else ""
    tools: dict[str, dict[str, Any]] = {}
    for tool in body.get("tools") or []:
        if not isinstance(tool, dict):
            continue
        for decl in tool.get("functionDeclarations") or []:
            if isinstance(decl, dict) and decl.get("name"):
                schema = decl.get("parametersJsonSchema") or decl.get("parameters") or {}
                tools[str(decl["name"])] = schema if isinstance(schema, dict) else {}
    return Request(
        api="gemini",
        path=path,
        body=body,
        model=model,
        system=system_text,
        user_text=_parts_text(parts),
        after_tool=after_tool,
        tools=tools,
        stream=":streamGenerateContent" in route,
    )


def json_schema(req: Request) -> dict[str, Any] | None:
    """The schema of a JSON-mode request (``responseMimeType: application/json``)."""
    config = req.body.get("generationConfig") or {}
    if not isinstance(config, dict) or config.get("responseMimeType") != "application/json":
        return None
    schema = config.get("responseJsonSchema") or config.get("responseSchema") or {}
    return schema if isinstance(schema, dict) else {}


def from_schema(schema: Any, name: str = "") -> Any:
    """A value that fits a JSON schema: the smallest, a flash model where one is offered."""
    if not isinstance(schema, dict):
        return "ok"
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        enum = schema["enum"]
        return next((e for e in enum if isinstance(e, str) and "flash" in e), enum[0])
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return from_schema(schema[key][0], name)
    kind = str(schema.get("type", "object")).lower()
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: from_schema(v, k) for k, v in props.items()} if isinstance(props, dict) else {}
    if kind == "array":
        return []
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return False
    return f"stand-in {name or 'value'}"


def _usage() -> dict[str, int]:
    return {"promptTokenCount": 100, "candidatesTokenCount": 10, "totalTokenCount": 110}


def _response(parts: list[dict[str, Any]], model: str, n: int, last: bool) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    found: dict[str, Any] = {
        "candidates": [candidate],
        "modelVersion": model,
        "responseId": f"resp-{n}",
    }
    if last:
        candidate["finishReason"] = "STOP"
        found["usageMetadata"] = _usage()
    return found


def _generate(standin_: ModelStandIn, handler: Any, body: dict[str, Any]) -> None:
    req = gemini_request(handler.path, body)
    reply = standin_.answer(req)
    n = standin_.next_id()
    model = req.model or standin.MODEL
    chunks: list[list[dict[str, Any]]] = []
    if reply.text:
        chunks.append([{"text": reply.text}])
    if reply.call:
        chunks.append([{"functionCall": {"name": reply.call[0], "args": reply.call[1]}}])
    if not chunks:
        chunks.append([{"text": ""}])
    if not req.stream:
        parts = [part for chunk in chunks for part in chunk]
        handler.json(200, _response(parts, model, n, last=True))
        return
    with handler.sse() as send:
        for i, parts in enumerate(chunks):
            send(None, _response(parts, model, n, last=i == len(chunks) - 1))


def _count_tokens(standin_: ModelStandIn, handler: Any, body: dict[str, Any]) -> None:
    handler.json(200, {"totalTokens": 100})


def json_reply(req: Request, overrides: dict[str, Any] | None = None) -> str | None:
    """The answer to a JSON-mode request, built from its schema (None: not JSON mode)."""
    schema = json_schema(req)
    if schema is None:
        return None
    value = from_schema(schema)
    if isinstance(value, dict) and overrides:
        value.update({k: v for k, v in overrides.items() if k in value})
    return json.dumps(value)


standin.register(":streamGenerateContent", _generate)
standin.register(":generateContent", _generate)
standin.register(":countTokens", _count_tokens)
