"""The control socket's commands on the queue: list the dead letters, requeue some."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from quintd.control import Handler
from quintd.protocol import RequeueRefusal, RequeueReply, RequeueRequest, from_json, to_json
from quintd.shipper import Shipper
from quintd.status_report import dead_letter_row
from quintd.store import Store

log = logging.getLogger("quintd.daemon")


def dead_letters_handler(store: Store) -> Handler:
    def dead_letters(_request: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [to_json(dead_letter_row(d)) for d in store.dead_letters()]

    return dead_letters


def requeue_handler(store: Store, shipper: Shipper) -> Handler:
    def requeue(request: Mapping[str, Any]) -> dict[str, Any]:
        ask = from_json(
            RequeueRequest, {k: v for k, v in request.items() if k != "command"}, "request"
        )
        moved, refused = store.requeue(ask.seqs, force=ask.force)
        log.info("requeued %d dead letter(s), refused %d", moved, len(refused))
        shipper.wake()
        reply: dict[str, Any] = to_json(
            RequeueReply(requeued=moved, refused=[RequeueRefusal(s, r) for s, r in refused])
        )
        return reply

    return requeue
