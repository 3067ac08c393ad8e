"""Spread jobs over several ComfyUI servers: each job goes to the server with the fewest prompts
running or waiting (its /queue), at most ``per_server`` of ours in flight on each; a server that
stops answering is dropped and its jobs go to the others. Used by batch_edit.py, locally and with
the Ray actors' servers alike.

Jobs run in daemon threads (a job is mostly waiting on HTTP), so Ctrl-C returns at once; what a
finished job produced has been handed to ``on_done`` on the calling thread before that.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections import deque
from typing import Any, Callable, Iterable

from comfy_client import Server, ServerError, ServerUnreachable


class AllServersDown(ServerError):
    pass


RunJob = Callable[[Server, Any], Any]  # runs one job on a server; raises ServerUnreachable when it cannot reach it


def dispatch(servers: list[Server], jobs: Iterable[Any], run_job: RunJob,
             on_done: Callable[[Any, Server, Any], None], on_error: Callable[[Any, Exception], None],
             per_server: int = 2, log: Callable[[str], None] = lambda text: print(text, file=sys.stderr)) -> None:
    """Run every job; ``on_done(job, server, result)`` or ``on_error(job, error)`` for each, on this
    thread, as they finish. Raises AllServersDown when no server is left while jobs remain."""
    pending = deque(jobs)
    alive = list(servers)
    in_flight = {server.url: 0 for server in servers}
    finished: queue.Queue = queue.Queue()
    running = 0

    def worker(server: Server, job: Any) -> None:
        try:
            finished.put((job, server, run_job(server, job), None))
        except BaseException as error:  # handed to the dispatching thread, which decides
            finished.put((job, server, None, error))

    def drop(server: Server, why: str) -> None:
        if server in alive:
            alive.remove(server)
            others = ", ".join(s.url for s in alive) or "none"
            log(f"{server.url} stopped answering ({why}); its jobs go to the other servers ({others})")

    while pending or running:
        while pending:
            free = [s for s in alive if in_flight[s.url] < per_server]
            loads = {}
            for server in free:
                try:
                    loads[server.url] = (max(server.queue_length(), in_flight[server.url]), server)
                except ServerUnreachable as error:
                    drop(server, str(error))
            if not loads:
                break
            _, server = min(loads.values(), key=lambda pair: (pair[0], in_flight[pair[1].url]))
            in_flight[server.url] += 1
            running += 1
            threading.Thread(target=worker, args=(server, pending.popleft()), daemon=True).start()
        if not alive and pending:
            raise AllServersDown(f"no server is left to run {len(pending) + running} job(s): "
                                 f"{', '.join(s.url for s in servers)} all stopped answering")
        if not running:
            continue
        job, server, result, error = finished.get()
        running -= 1
        in_flight[server.url] -= 1
        if isinstance(error, ServerUnreachable):
            drop(server, str(error))
            pending.appendleft(job)
        elif isinstance(error, Exception):
            on_error(job, error)
        elif error is not None:
            raise error
        else:
            on_done(job, server, result)
