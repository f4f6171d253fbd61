"""`quintd run` SIGKILLed at random moments, 12 times (``QUINTD_CRASH_KILLS`` for more),
while agents come and go and the server misbehaves. Afterwards: delivered + queued +
dead-lettered = produced, nothing missing, nothing announced twice under different keys,
each session's story whole."""

from __future__ import annotations

import itertools
import os
import random
import sqlite3
import threading
import time
from pathlib import Path

from conftest import TOKEN, Agents, wait_until, write_config
from ingest_server import Fault, IngestServer

# Each kill costs a daemon's start (about 2 s on a loaded 2-core machine): 12 keep the
# suite's time; a deeper run sets QUINTD_CRASH_KILLS (and QUINTD_CRASH_SEED to replay one).
KILLS = int(os.environ.get("QUINTD_CRASH_KILLS", "12"))


def chaos(rng: random.Random, lock: threading.Lock) -> Fault | None:
    with lock:
        roll = rng.random()
    if roll < 0.70:
        return None
    return [
        Fault(500),
        Fault(503, {"Retry-After": "1"}),
        Fault(429, {"Retry-After": "1"}),
        Fault(action="drop_before"),
        Fault(action="drop_after"),
        Fault(action="delay", delay=1.5),  # beyond the 1 s client timeout
    ][int((roll - 0.70) / 0.05) % 6]


CHURN = "churn"  # the fake agents' working directory, and so their sessions' name


def churn(
    agents: Agents,
    rng: random.Random,
    stop: threading.Event,
    cwd: Path,
    failures: list[BaseException],
) -> None:
    """Start and stop fake agents at random until told to stop."""
    try:
        _churn(agents, rng, stop, cwd)
    except BaseException as exc:  # reported by the test, not lost in a thread
        failures.append(exc)


def _churn(agents: Agents, rng: random.Random, stop: threading.Event, cwd: Path) -> None:
    running = []
    while not stop.is_set():
        if len(running) < 5 and (not running or rng.random() < 0.6):
            running.append(agents.binary(rng.choice(["claude", "codex", "gemini"]), cwd=cwd))
        else:
            victim = running.pop(rng.randrange(len(running)))
            agents.stop(victim)
        stop.wait(rng.uniform(0.05, 0.4))


def test_random_sigkills_lose_and_repeat_nothing(short_tmp: Path, agents: Agents, daemons) -> None:
    seed = int(os.environ.get("QUINTD_CRASH_SEED", time.time_ns() % 1_000_000))
    print(f"crash test seed: {seed} (set QUINTD_CRASH_SEED to replay)")
    rng = random.Random(seed)
    lock = threading.Lock()
    with IngestServer(token=TOKEN) as server:
        server.set_fault_source(lambda: chaos(rng, lock))
        config = write_config(short_tmp, endpoint=server.url, interval=0.1)
        config.write_text(config.read_text().replace("timeout = 5.0", "timeout = 1.0"))
        stop = threading.Event()
        workdir = short_tmp / CHURN
        workdir.mkdir()
        agents.prepare("claude", "codex", "gemini")
        failures: list[BaseException] = []
        worker = threading.Thread(
            target=churn, args=(agents, random.Random(seed + 1), stop, workdir, failures)
        )
        worker.start()
        try:
            for _ in range(KILLS):
                daemon = daemons(config).start()
                daemon.wait_ready()
                # A random moment to die at (this wait picks the moment; it synchronises
                # nothing).
                time.sleep(rng.uniform(0.1, 1.0))
                daemon.kill()
        finally:
            stop.set()
            worker.join()
        assert not failures, f"the agent churn failed: {failures!r}"
        agents.stop_all()
        server.set_fault_source(None)

        final = daemons(config).start()
        final.wait_ready()
        ours = {p.pid for p in agents.procs}  # other agents may run on this machine
        wait_until(
            lambda: (
                (s := final.status())
                and not [x for x in s["sessions"] if x["pid"] in ours]
                and s["queue"]["depth"] == 0
            ),
            timeout=60,
            what="every session ended and the queue drained",
        )
        assert final.terminate() == 0

    db = sqlite3.connect(short_tmp / "state" / "quintd.db")
    row = db.execute("SELECT value FROM meta WHERE key = 'produced'").fetchone()
    assert row is not None, "no event was ever produced"
    produced = int(row[0])
    queued = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    dead = db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
    delivered_keys = {r.idempotency_key for r in server.events}
    assert produced > 0
    # Other users' agents on the machine are reported too: their events were delivered and
    # set aside by the server (own_agents.py), and count in what the daemon produced.
    assert len(delivered_keys) + len(server.foreign_keys) + queued + dead == produced
    assert queued == 0 and dead == 0

    # Repeats only ever under the same key.
    for ident, keys in server.keys_by_event().items():
        assert len(keys) == 1, f"{ident} arrived under {keys}"

    # Each session, first arrival of each key: active first, ended once and last, and any
    # later `active` is a genuine update (it carries something the previous event lacked).
    stories: dict[str, list[dict]] = {}
    seen: set[str | None] = set()
    for r in server.events:
        if r.idempotency_key in seen:
            continue
        seen.add(r.idempotency_key)
        stories.setdefault(r.event["session_id"], []).append(r.event)
    assert stories
    stories = {k: v for k, v in stories.items() if v[0].get("session_name") == CHURN}
    assert stories
    for session_id, story in stories.items():
        states = [e["state"] for e in story]
        assert states[0] == "active", (session_id, states)
        assert states[-1] == "ended" and states.count("ended") == 1, (session_id, states)
        for before, after in itertools.pairwise(story[:-1]):
            if after["state"] == before["state"]:
                assert after != {**before, "timestamp": after["timestamp"]}, (
                    f"{session_id} announced again without news: {states}"
                )
    assert server.violations == []
