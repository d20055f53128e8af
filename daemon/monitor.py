"""The monitor actor: answers `status`, feeds the systemd watchdog, logs a heartbeat.

It is the one actor that looks at the whole process, so the three jobs that
need that view live together: the status reply (served on the bus topic
``status``), ``STATUS=`` on every change of the health line, ``WATCHDOG=1``
at half of ``$WATCHDOG_USEC`` only while the core actors are healthy, and a
periodic ``event=heartbeat`` line summarising health for an operator tailing
the logs.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import trio

from daemon.logs import describe_error, get_logger
from daemon.messages import StatusReply
from daemon.notify import watchdog_interval
from daemon.supervisor import ChildSpec, Restart

if TYPE_CHECKING:
    from daemon.app import Daemon

log = get_logger("monitor")
STATUS_TICK = 1.0


def monitor_child(daemon: Daemon) -> ChildSpec:
    async def run(*, task_status: trio.TaskStatus[None]) -> None:
        await monitor(daemon, task_status=task_status)

    return ChildSpec("monitor", run, restart=Restart.PERMANENT, core=True)


def status_reply(daemon: Daemon) -> StatusReply:
    from daemon.app import VERSION

    level, reasons = daemon.health.summary()
    extra = {}
    for name, fn in daemon.status_extras.items():
        try:
            extra[name] = fn()
        except Exception as exc:  # one broken section must not hide the rest
            extra[name] = {"error": describe_error(exc)}
    return StatusReply(
        pid=os.getpid(),
        version=VERSION,
        uptime=round(daemon.uptime(), 3),
        trading_state=daemon.trading_state,
        health=level.name,
        reasons=tuple(reasons),
        actors=daemon.registry.statuses(),
        extra=extra,
    )


async def monitor(daemon: Daemon, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    with daemon.bus.serve("status") as requests:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_answer_status, daemon, requests)
            nursery.start_soon(_status_line, daemon)
            nursery.start_soon(_heartbeat, daemon)
            interval = watchdog_interval()
            if interval is not None:
                nursery.start_soon(_watchdog, daemon, interval)
            task_status.started()


async def _answer_status(daemon: Daemon, requests) -> None:
    async for request in requests:
        request.reply(status_reply(daemon))


async def _status_line(daemon: Daemon) -> None:
    while True:
        if daemon.ready.is_set():
            daemon.notifier.status(f"{daemon.trading_state.value}; {daemon.health.line()}")
        await trio.sleep(STATUS_TICK)


async def _heartbeat(daemon: Daemon) -> None:
    interval = daemon.config.daemon.heartbeat_interval
    while True:
        await trio.sleep(interval)
        level, reasons = daemon.health.summary()
        log.info(
            "heartbeat",
            health=level.name,
            trading_state=daemon.trading_state,
            uptime_s=int(daemon.uptime()),
            actors=len(daemon.registry.actors),
            restarts=sum(r.restarts for r in daemon.registry.actors.values()),
            reasons="; ".join(reasons) or None,
            **{k: v for k, v in _heartbeat_extras(daemon).items()},
        )


def _heartbeat_extras(daemon: Daemon) -> dict[str, object]:
    fn = daemon.status_extras.get("heartbeat")
    if fn is None:
        return {}
    try:
        return dict(fn())
    except Exception:
        return {}


async def _watchdog(daemon: Daemon, interval: float) -> None:
    while True:
        if daemon.registry.core_healthy():
            daemon.notifier.watchdog()
        else:
            log.warning("watchdog.withheld", reason="a core actor is not running")
        await trio.sleep(interval)
