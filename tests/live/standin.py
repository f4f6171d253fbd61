"""A loopback stand-in for the agents' model APIs, run inside the test process.

The real CLIs talk to it exactly as they would to their vendor's API: OpenAI Chat
Completions (Qwen Code, Copilot CLI, OpenCode, Cline, Crush), OpenAI Responses (Codex),
Anthropic Messages (Claude Code) and the Gemini API (Gemini CLI). Each API's request is
read into one :class:`Request`; a :class:`Brain` (one per agent, in its test module)
decides the :class:`Reply`; the API's own encoder streams it back. Chat Completions is
here; each other API is a module of its own (``api_<name>.py``) that adds its routes to
:data:`ENDPOINTS` when imported (``register``).

A turn is made to wait for the test, not for a clock: a prompt containing ``HOLD-<tag>``
is answered only after ``standin.release("<tag>")``, and ``standin.holding("<tag>")``
says that the agent's request has arrived. So "busy while the model works" is observed
without a race, on a loaded machine as on an idle one.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "stand-in-coder"
HOLD = re.compile(r"HOLD-([A-Za-z0-9]+)")
MARKERS = re.compile(r"\s*(HOLD-[A-Za-z0-9]+|BASH:.*|DELEGATE)", re.S)
# The longest a held turn waits for its release: a test that forgot one fails, it never hangs.
HOLD_LIMIT_S = 120.0


@dataclass
class Request:
    """One model request, whatever the API it came in."""

    api: str  # "chat", "responses", "anthropic", "gemini"
    path: str
    body: dict[str, Any]
    model: str | None
    system: str  # the system prompt's text
    user_text: str  # the latest text the user (or a parent agent) wrote
    after_tool: bool  # the newest message is a tool's result: the model owes the next step
    tools: dict[str, dict[str, Any]]  # offered tool name -> its parameters' JSON schema
    stream: bool = True
    headers: dict[str, str] = field(default_factory=dict)

    def offers(self, *names: str) -> str | None:
        """The first of ``names`` that the request offers as a tool."""
        return next((n for n in names if n in self.tools), None)


@dataclass
class Reply:
    text: str = ""
    call: tuple[str, dict[str, Any]] | None = None  # (tool name, arguments)
    hold: str | None = None  # wait for release(hold) before answering


def plain(text: str) -> str:
    """The prompt without the stand-in's markers: what a title is made of."""
    return " ".join(MARKERS.sub(" ", text).split())


class Brain:
    """What the model answers. The default: a text answer; ``BASH:<cmd>`` calls the shell
    tool; ``DELEGATE`` calls the sub-agent tool; a tool's result ends the turn with text;
    a request without tools that asks for a title gets one. Agents override the hooks."""

    shell_tools: tuple[str, ...] = (
        "run_shell_command",
        "bash",
        "Bash",
        "shell",
        "run_commands",
        "execute_command",
    )

    def __call__(self, req: Request) -> Reply:
        aux = self.auxiliary(req)
        if aux is not None:
            return aux
        if req.after_tool:
            return self.after_tool(req)
        hold = HOLD.search(req.user_text)
        tag = hold.group(1) if hold else None
        bash = re.search(r"BASH:(.+)", req.user_text)
        if bash:
            call = self.shell_call(req, bash.group(1).strip())
            if call is not None:
                return Reply("Running it.", call, tag)
        if "DELEGATE" in req.user_text:
            call = self.delegate_call(req)
            if call is not None:
                return Reply("Delegating to a sub-agent.", call, tag)
        return Reply(f"Done: {plain(req.user_text)[:60] or 'ok'}.", None, tag)

    def auxiliary(self, req: Request) -> Reply | None:
        """A request that is not the conversation's turn (a title, a classifier ...)."""
        if not req.tools and re.search(r"\btitle\b", req.system, re.I):
            return Reply(title_of(req.user_text))
        return None

    def after_tool(self, req: Request) -> Reply:
        return Reply("Finished.")

    def shell_call(self, req: Request, command: str) -> tuple[str, dict[str, Any]] | None:
        name = req.offers(*self.shell_tools)
        if name is None:
            return None
        return name, {"command": command, "description": "Run the command"}

    def delegate_call(self, req: Request) -> tuple[str, dict[str, Any]] | None:
        return None


def title_of(text: str) -> str:
    words = plain(text).split()
    return " ".join(words[:5]) or "Untitled"


class ModelStandIn:
    """The server. ``with ModelStandIn(brain) as model: model.url ...``"""

    def __init__(self, brain: Brain | None = None) -> None:
        self.brain = brain or Brain()
        self.requests: list[Request] = []
        self._released: set[str] = set()
        self._holding: set[str] = set()
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ModelStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._released.add("*")  # let every held turn go
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()

    # -- holds ------------------------------------------------------------------------

    def release(self, tag: str) -> None:
        with self._cond:
            self._released.add(tag)
            self._cond.notify_all()

    def holding(self, tag: str) -> bool:
        """Whether a request held on ``tag`` is waiting now."""
        with self._cond:
            return tag in self._holding

    def _hold(self, tag: str) -> None:
        deadline = time.monotonic() + HOLD_LIMIT_S
        with self._cond:
            self._holding.add(tag)
            try:
                while tag not in self._released and "*" not in self._released:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            finally:
                self._holding.discard(tag)

    def answer(self, req: Request) -> Reply:
        self.requests.append(req)
        reply = self.brain(req)
        if reply.hold:
            self._hold(reply.hold)
        return reply

    def next_id(self) -> int:
        return next(self._ids)

    # -- HTTP -------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0].rstrip("/")
                for suffix, api in GET_ENDPOINTS:
                    if path.endswith(suffix):
                        api(standin, self)
                        return
                if path.endswith("/models"):
                    self.json(200, {"object": "list", "data": [_model_entry()]})
                else:
                    self.json(404, {"error": {"message": f"not found: {self.path}"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                path = self.path.split("?", 1)[0].rstrip("/")
                for suffix, api in ENDPOINTS:
                    if path.endswith(suffix) or (suffix.startswith(":") and suffix in path):
                        api(standin, self, body)
                        return
                self.json(404, {"error": {"message": f"not found: {self.path}"}})

            def json(self, status: int, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            @contextlib.contextmanager
            def sse(self) -> Iterator[Callable[[str | None, Any], None]]:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()

                def send(event: str | None, data: Any) -> None:
                    head = f"event: {event}\n" if event else ""
                    payload = data if isinstance(data, str) else json.dumps(data)
                    self.wfile.write(f"{head}data: {payload}\n\n".encode())
                    self.wfile.flush()

                yield send
                self.close_connection = True

        return Handler


def _model_entry() -> dict[str, Any]:
    return {"id": MODEL, "object": "model", "created": 0, "owned_by": "stand-in"}


# -- OpenAI Chat Completions -----------------------------------------------------------


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") in ("text", "input_text"):
                parts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return ""


def chat_request(path: str, body: dict[str, Any]) -> Request:
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    system = "\n".join(_text(m.get("content")) for m in messages if m.get("role") == "system")
    user = next(
        (_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
    )
    last = messages[-1] if messages else {}
    tools = {}
    for tool in body.get("tools") or []:
        fn = tool.get("function") or tool
        if isinstance(fn, dict) and fn.get("name"):
            tools[str(fn["name"])] = fn.get("parameters") or {}
    return Request(
        api="chat",
        path=path,
        body=body,
        model=body.get("model"),
        system=system,
        user_text=user,
        after_tool=last.get("role") == "tool",
        tools=tools,
        stream=bool(body.get("stream")),
    )


def _chat(standin: ModelStandIn, handler: Any, body: dict[str, Any]) -> None:
    req = chat_request(handler.path, body)
    reply = standin.answer(req)
    n = standin.next_id()
    cid, call_id = f"chatcmpl-{n}", f"call_{n}"
    model = req.model or MODEL
    usage = {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}
    finish = "tool_calls" if reply.call else "stop"
    if not req.stream:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        if reply.call:
            message["tool_calls"] = [_chat_call(call_id, reply.call)]
        handler.json(
            200,
            {
                "id": cid,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": usage,
            },
        )
        return
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    with handler.sse() as send:
        send(None, chunk({"role": "assistant", "content": ""}))
        if reply.text:
            send(None, chunk({"content": reply.text}))
        if reply.call:
            call = _chat_call(call_id, reply.call)
            call["index"] = 0
            send(None, chunk({"tool_calls": [call]}))
        send(None, chunk({}, finish))
        send(None, {**chunk({}), "choices": [], "usage": usage})
        send(None, "[DONE]")


def _chat_call(call_id: str, call: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": call[0], "arguments": json.dumps(call[1])},
    }


# (path suffix, or ":method" contained in the path) -> the API's handler
Handler = Callable[[ModelStandIn, Any, dict[str, Any]], None]
ENDPOINTS: list[tuple[str, Handler]] = [
    ("/chat/completions", _chat),
]


# GET routes (a WebSocket upgrade, say): handler(standin, the request's handler)
GetHandler = Callable[[ModelStandIn, Any], None]
GET_ENDPOINTS: list[tuple[str, GetHandler]] = []


def register(suffix: str, handler: Handler) -> None:
    """Adds an API's POST route (an ``api_<name>.py`` module calls it when imported)."""
    if all(existing != suffix for existing, _ in ENDPOINTS):
        ENDPOINTS.append((suffix, handler))


def register_get(suffix: str, handler: GetHandler) -> None:
    """Adds an API's GET route."""
    if all(existing != suffix for existing, _ in GET_ENDPOINTS):
        GET_ENDPOINTS.append((suffix, handler))
