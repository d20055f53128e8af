"""The tradingd process: one trio run, one root supervisor, one control socket.

`Daemon` owns what is process-wide — the config, the bus, the actor
registry, health, the systemd notifier, the command table — and runs the
actor tree of DESIGN §1 under a root supervisor (one_for_all). Its life:

1. start the core actors in order; each reports ready through
   ``task_status.started()``;
2. report READY (log line ``event=daemon.ready`` and ``READY=1``);
3. run until a stop is asked for: ``tradectl shutdown``, SIGTERM or SIGINT
   (graceful, within ``daemon.graceful_stop_timeout``); a second SIGINT
   escalates to the emergency stop; SIGHUP reloads the config;
4. stop the actors in reverse order and exit 0 — or exit 1 when the root
   supervisor gave up on a core actor, after the emergency stop.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from daemon import config as config_mod
from daemon.bus import Bus
from daemon.config import Config, ConfigError
from daemon.control import Commands, ControlServer
from daemon.health import Health
from daemon.logs import Level as LogLevel
from daemon.logs import describe_error, get_logger, sink
from daemon.messages import ReloadRequested, ShutdownRequested
from daemon.model import TradingState
from daemon.notify import Notifier
from daemon.paths import control_socket
from daemon.supervisor import ChildSpec, Registry, Restart, Strategy, Supervisor, SupervisorGaveUp

VERSION = "0.1.0"
log = get_logger("daemon")

EmergencyHook = Callable[[str], Awaitable[Any]]
ReloadHook = Callable[[Config], Any]
ChildFactory = Callable[["Daemon"], list[ChildSpec]]


class Daemon:
    def __init__(
        self,
        cfg: Config,
        *,
        config_path: str | Path | None = None,
        socket_path: str | Path | None = None,
        log_format: str | None = None,
    ) -> None:
        self.config = cfg
        self.log_format = log_format
        self.config_path = Path(config_path) if config_path else None
        self.socket_path = Path(socket_path) if socket_path else control_socket(cfg.daemon.control_socket)
        self.bus = Bus()
        self.registry = Registry()
        self.health = Health(self.registry)
        self.notifier = Notifier()
        self.commands = Commands()
        self.trading_state = TradingState.ACTIVE
        self.started_at = 0.0
        self.exit_code = 0
        self.root: Supervisor | None = None
        self.emergency_hooks: list[EmergencyHook] = []
        self.reload_hooks: list[ReloadHook] = []
        self.status_extras: dict[str, Callable[[], Any]] = {}
        self.services: dict[str, Any] = {}  # actors' public handles, by name (journal, risk, ...)
        # parts of the daemon add their actors (in start order); see daemon.components
        self.child_factories: list[ChildFactory] = []
        self._stop = trio.Event()
        self._stop_reason = ""
        self._cancel_orders_on_stop = False
        self._sigint_count = 0
        self._emergency_done = False
        self.ready = trio.Event()
        apply_log_config(cfg, fmt=log_format)

    # the actor tree ---------------------------------------------------------------------
    def children(self) -> list[ChildSpec]:
        from daemon.monitor import monitor_child

        specs: list[ChildSpec] = []
        for factory in self.child_factories:
            specs.extend(factory(self))
        specs.append(ChildSpec("control", self._run_control, restart=Restart.PERMANENT, core=True))
        specs.append(monitor_child(self))
        return specs

    async def _run_control(self, *, task_status: trio.TaskStatus[None]) -> None:
        d = self.config.daemon
        server = ControlServer(
            self.socket_path,
            self.commands,
            group=d.socket_group,
            max_clients=d.max_clients,
            idle_timeout=d.client_idle_timeout,
            max_line_bytes=d.max_line_bytes,
            audit=self.services.get("audit"),
        )
        self.services["control"] = server
        await server.run(task_status=task_status)

    # running ----------------------------------------------------------------------------
    async def run(self) -> int:
        from daemon.core_commands import register_core_commands

        register_core_commands(self)
        self.started_at = trio.current_time()
        log.info("daemon.starting", version=VERSION, pid=os.getpid(), config=self.config.source)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_signals, signals)
                started = await self._start_root(nursery)
                if started:
                    self._announce_ready()
                    await self._stop.wait()
                    await self._stop_everything()
                nursery.cancel_scope.cancel()
        self.notifier.close()
        self.bus.close()
        log.info("daemon.exit", code=self.exit_code, reason=self._stop_reason)
        return self.exit_code

    async def _start_root(self, nursery: trio.Nursery) -> bool:
        d = self.config
        self.root = Supervisor(
            "root",
            self.children(),
            strategy=Strategy.ONE_FOR_ALL,
            intensity=d.supervisor.intensity,
            backoff=d.supervisor.backoff,
            registry=self.registry,
        )
        try:
            await nursery.start(self._supervise_root)
        except Exception as exc:
            self.exit_code = 1
            self._stop_reason = f"start failed: {describe_error(exc)}"
            log.critical("daemon.start_failed", error=describe_error(exc))
            return False
        return True

    async def _supervise_root(self, *, task_status: trio.TaskStatus[None]) -> None:
        assert self.root is not None
        try:
            await self.root.run(task_status=task_status)
        except SupervisorGaveUp as exc:
            self.exit_code = 1
            log.critical("daemon.root_gave_up", error=str(exc))
            await self.emergency_stop(f"root supervisor gave up: {exc.last_error}")
            self.request_stop("root supervisor gave up")

    def _announce_ready(self) -> None:
        line = self.health.line()
        self.ready.set()
        self.notifier.ready(f"ready; {line}")
        log.info(
            "daemon.ready",
            socket=str(self.socket_path),
            actors=len(self.registry.actors),
            startup_s=round(trio.current_time() - self.started_at, 3),
        )

    async def _watch_signals(self, signals: Any) -> None:
        async for signum in signals:
            if signum == signal.SIGHUP:
                await self.reload()
            elif signum == signal.SIGINT:
                self._sigint_count += 1
                if self._sigint_count == 1:
                    self.request_stop("SIGINT")
                else:
                    log.warning("daemon.second_sigint", action="emergency stop")
                    await self.emergency_stop("second SIGINT")
            elif signum == signal.SIGTERM:
                self.request_stop("SIGTERM")

    # stopping ---------------------------------------------------------------------------
    def request_stop(self, reason: str, *, cancel_orders: bool = False) -> None:
        if not self._stop.is_set():
            self._stop_reason = reason
            self._cancel_orders_on_stop = cancel_orders
            log.info("daemon.stopping", reason=reason, cancel_orders=cancel_orders)
            if not self.bus.closed:
                self.bus.publish_nowait("lifecycle", ShutdownRequested(reason=reason, cancel_orders=cancel_orders))
            self._stop.set()

    async def _stop_everything(self) -> None:
        deadline = self.config.daemon.graceful_stop_timeout
        self.notifier.stopping(f"stopping: {self._stop_reason}")
        with trio.move_on_after(deadline) as scope:
            if self._cancel_orders_on_stop and not self._emergency_done:
                await self.emergency_stop(f"shutdown --cancel-orders ({self._stop_reason})")
            if self.root is not None:
                await self.root.stop()
        if scope.cancelled_caught:
            log.error("daemon.stop_deadline_passed", deadline=deadline)

    async def emergency_stop(self, reason: str) -> Any:
        """The kill procedure of DESIGN §6; the risk part registers the real work."""
        self._emergency_done = True
        results = []
        for hook in self.emergency_hooks:
            try:
                results.append(await hook(reason))
            except Exception as exc:
                log.error("kill.hook_failed", error=describe_error(exc))
        if not self.emergency_hooks:  # a hook logs its own kill.started / kill.done
            log.warning("kill.started", reason=reason)
            log.warning("kill.done", reason=reason, detail="no venues configured: nothing to cancel")
        return results[0] if len(results) == 1 else results

    # reloading --------------------------------------------------------------------------
    async def reload(self) -> tuple[bool, str]:
        if self.config_path is None:
            log.warning("config.reload_refused", reason="started without a config file")
            return False, "started without a config file"
        self.notifier.reloading()
        try:
            try:
                new = await trio.to_thread.run_sync(config_mod.load, self.config_path)
            except ConfigError as exc:
                log.error("config.reload_refused", error=str(exc))
                return False, str(exc)
            self.config = new
            apply_log_config(new, fmt=self.log_format)
            for hook in self.reload_hooks:
                hook(new)
            self.bus.publish_nowait("lifecycle", ReloadRequested())
            log.info("config.reloaded", config=str(self.config_path))
            return True, "reloaded"
        finally:
            self.notifier.ready(self.health.line())

    # introspection ----------------------------------------------------------------------
    def uptime(self) -> float:
        return trio.current_time() - self.started_at


def apply_log_config(cfg: Config, *, fmt: str | None = None) -> None:
    sink.configure(
        fmt=fmt or cfg.log.format,
        level=LogLevel.parse(cfg.log.level),
        actor_levels={name: LogLevel.parse(level) for name, level in cfg.log.actors.items()},
    )
