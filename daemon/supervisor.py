"""Supervisors in the Erlang/OTP sense, on top of trio nurseries.

A *worker* is an async function ``fn(*, task_status)`` that calls
``task_status.started()`` once it is ready and then runs until it returns,
raises, or is cancelled. A worker never restarts itself; its supervisor
decides, from the child's restart type:

- ``PERMANENT``: always restarted (a normal return counts too);
- ``TRANSIENT``: restarted only after a crash;
- ``TEMPORARY``: never restarted.

and from the supervisor's strategy:

- ``ONE_FOR_ONE``: only the child that died is restarted;
- ``ONE_FOR_ALL``: every child is stopped (in reverse order) and all are
  started again in order.

Restarts back off exponentially with jitter; a child's back-off resets only
once it has stayed up for ``reset_after`` seconds, so a child that crashes
right after each start does not restart in a tight loop. More than
``max_restarts`` restarts within ``period`` seconds (counted per supervisor,
as in OTP) makes the supervisor stop every child and raise
`SupervisorGaveUp` to its parent: that is escalation. At the root it means
emergency stop and a non-zero exit, after which systemd applies its own
restart policy.

Children start in order, each through ``nursery.start`` so the next one
starts only when the previous reported ready, and `stop()` stops them in
reverse order, each within its ``shutdown_timeout``. Every start, crash,
restart and escalation is logged with the actor's name and recorded in the
shared `Registry`, which is what ``tradectl status`` shows.
"""

from __future__ import annotations

import enum
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio

from daemon.logs import describe_error, get_logger
from daemon.messages import ActorStatus


class Restart(enum.StrEnum):
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


class Strategy(enum.StrEnum):
    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"


class SupervisorGaveUp(Exception):
    """Restart intensity exceeded: the supervisor stopped all its children."""

    def __init__(self, supervisor: str, restarts: int, period: float, last_error: str) -> None:
        super().__init__(
            f"supervisor {supervisor!r} gave up after {restarts} restarts in {period:g}s; last error: {last_error}"
        )
        self.supervisor = supervisor
        self.restarts = restarts
        self.period = period
        self.last_error = last_error


class ChildStartTimeout(Exception):
    """A child did not report ready within its start timeout."""


Worker = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class ChildSpec:
    name: str
    fn: Worker
    restart: Restart = Restart.PERMANENT
    shutdown_timeout: float = 5.0
    start_timeout: float = 30.0
    core: bool = False  # a core actor: the watchdog and health depend on it


class Backoff(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Exponential back-off with jitter. Also the ``[supervisor]`` config keys."""

    initial: float = 0.5
    multiplier: float = 2.0
    maximum: float = 30.0
    jitter: float = 0.2  # +/- fraction of the delay
    reset_after: float = 60.0  # up this long -> the next crash starts from `initial` again

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = min(self.maximum, self.initial * self.multiplier ** max(0, attempt))
        if self.jitter:
            base *= 1 + rng.uniform(-self.jitter, self.jitter)
        return max(0.0, base)


class Intensity(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    max_restarts: int = 5
    period: float = 60.0


# ---------------------------------------------------------------------------------------
# Registry: what status shows
# ---------------------------------------------------------------------------------------


@dataclass
class ActorRecord:
    name: str
    state: str = "starting"  # starting | running | restarting | stopped | failed
    restarts: int = 0
    last_error: str | None = None
    started_at: float | None = None
    core: bool = False

    def to_status(self) -> ActorStatus:
        return ActorStatus(
            name=self.name,
            state=self.state,
            restarts=self.restarts,
            last_error=self.last_error,
            started_at=self.started_at,
        )


class Registry:
    """Every actor's lifecycle state, shared by all supervisors of the process."""

    def __init__(self) -> None:
        self.actors: dict[str, ActorRecord] = {}
        self.escalations = 0
        self.listeners: list[Callable[[ActorRecord], None]] = []

    def record(self, name: str, *, core: bool = False) -> ActorRecord:
        rec = self.actors.get(name)
        if rec is None:
            rec = self.actors[name] = ActorRecord(name, core=core)
        return rec

    def set_state(self, name: str, state: str, *, error: str | None = None, core: bool = False) -> None:
        rec = self.record(name, core=core)
        rec.state = state
        if error is not None:
            rec.last_error = error
        if state == "running":
            rec.started_at = trio.current_time()
        for listener in list(self.listeners):
            listener(rec)

    def forget(self, name: str) -> None:
        self.actors.pop(name, None)

    def core_healthy(self) -> bool:
        return all(r.state == "running" for r in self.actors.values() if r.core)

    def statuses(self) -> tuple[ActorStatus, ...]:
        return tuple(r.to_status() for r in self.actors.values())


# ---------------------------------------------------------------------------------------
# The supervisor
# ---------------------------------------------------------------------------------------


@dataclass
class _Child:
    spec: ChildSpec
    scope: trio.CancelScope | None = None
    done: trio.Event = field(default_factory=trio.Event)
    running: bool = False
    attempt: int = 0  # consecutive quick crashes, drives the back-off
    started_at: float = 0.0


@dataclass(frozen=True)
class _Exit:
    child: _Child
    error: BaseException | None  # None: returned normally
    generation: int


class Supervisor:
    """Runs children under a restart strategy; see the module docstring."""

    def __init__(
        self,
        name: str,
        children: list[ChildSpec] | tuple[ChildSpec, ...] = (),
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        intensity: Intensity = Intensity(),
        backoff: Backoff = Backoff(),
        registry: Registry | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.strategy = strategy
        self.intensity = intensity
        self.backoff = backoff
        self.registry = registry if registry is not None else Registry()
        self.rng = rng if rng is not None else random.Random()
        self.log = get_logger(f"supervisor.{name}" if name != "root" else "supervisor")
        self._children: list[_Child] = [_Child(spec) for spec in children]
        self._restart_times: deque[float] = deque()
        self._nursery: trio.Nursery | None = None
        self._exits_send, self._exits_recv = trio.open_memory_channel[_Exit](math.inf)
        self._generation = 0  # bumped by one_for_all restarts: stale exits are ignored
        self._stopping = False
        self._stopped = trio.Event()
        self.restarts = 0

    # public -----------------------------------------------------------------------------
    @property
    def children(self) -> list[str]:
        return [c.spec.name for c in self._children]

    async def run(self, *, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the children in order, then supervise until stopped or given up."""
        gave_up: SupervisorGaveUp | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for child in list(self._children):
                    await self._start(child)
                task_status.started(self)
                try:
                    await self._supervise()
                except SupervisorGaveUp as exc:
                    gave_up = exc  # children are already stopped, in order
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            self._stopped.set()
        if gave_up is not None:
            raise gave_up

    async def stop(self) -> None:
        """Stop every child in reverse start order, then return."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        await self._stop_all()
        self._exits_send.close()
        await self._stopped.wait()

    async def start_child(self, spec: ChildSpec) -> None:
        """Add and start a child at run time (e.g. one scheduler per execution)."""
        if self._nursery is None or self._stopping:
            raise RuntimeError(f"supervisor {self.name!r} is not running")
        if any(c.spec.name == spec.name for c in self._children):
            raise ValueError(f"a child named {spec.name!r} already exists under {self.name!r}")
        child = _Child(spec)
        self._children.append(child)
        try:
            await self._start(child)
        except BaseException:
            if child in self._children:
                self._children.remove(child)
            raise

    async def terminate_child(self, name: str) -> None:
        """Stop a child and do not restart it."""
        child = self._find(name)
        if child is None:
            return
        self._children.remove(child)
        await self._stop_child(child)
        self.registry.forget(name)

    def has_child(self, name: str) -> bool:
        return self._find(name) is not None

    # internals --------------------------------------------------------------------------
    def _find(self, name: str) -> _Child | None:
        return next((c for c in self._children if c.spec.name == name), None)

    async def _start(self, child: _Child) -> None:
        if self._stopping or self._nursery is None:
            return
        spec = child.spec
        child.done = trio.Event()
        self.registry.set_state(spec.name, "starting", core=spec.core)
        generation = self._generation
        try:
            with trio.fail_after(spec.start_timeout):
                await self._nursery.start(self._run_child, child, generation)
        except trio.TooSlowError:
            error: BaseException = ChildStartTimeout(f"{spec.name} did not report ready within {spec.start_timeout:g}s")
            self._on_start_failure(child, error, generation)
            return
        except Exception as exc:
            self._on_start_failure(child, exc, generation)
            return
        child.started_at = trio.current_time()
        self.registry.set_state(spec.name, "running")
        self.log.info("actor.started", child=spec.name)

    def _on_start_failure(self, child: _Child, error: BaseException, generation: int) -> None:
        while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]
        child.running = False
        child.done.set()
        self._exits_send.send_nowait(_Exit(child, error, generation))

    async def _run_child(self, child: _Child, generation: int, *, task_status: trio.TaskStatus[None]) -> None:
        started = False

        class _Status:
            def started(self, value: Any = None) -> None:
                nonlocal started
                started = True
                task_status.started(value)

        error: BaseException | None = None
        with trio.CancelScope() as scope:
            child.scope = scope
            child.running = True
            try:
                await child.spec.fn(task_status=_Status())
            except Exception as exc:
                if not started:
                    child.running = False
                    child.done.set()
                    raise  # nursery.start re-raises it in the supervisor
                error = exc
        child.running = False
        child.scope = None
        child.done.set()
        if scope.cancelled_caught or not started:
            return  # stopped by us, or nursery.start reports the missing started()
        try:
            self._exits_send.send_nowait(_Exit(child, error, generation))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    async def _supervise(self) -> None:
        async for exit_ in self._exits_recv:
            if self._stopping:
                break
            if exit_.generation != self._generation or exit_.child not in self._children:
                continue
            await self._handle_exit(exit_)

    async def _handle_exit(self, exit_: _Exit) -> None:
        child, error = exit_.child, exit_.error
        spec = child.spec
        now = trio.current_time()
        if error is None:
            self.log.info("actor.stopped", child=spec.name, reason="normal")
            restart = spec.restart is Restart.PERMANENT
        else:
            text = describe_error(error)
            self.registry.set_state(spec.name, "failed", error=text)
            self.log.error("actor.crashed", child=spec.name, error=text)
            restart = spec.restart is not Restart.TEMPORARY
        if not restart:
            self._children.remove(child)
            if error is None:
                self.registry.set_state(spec.name, "stopped")
            return

        if self._intensity_exceeded(now):
            last_error = describe_error(error) if error else "exited"
            self.registry.escalations += 1
            self.log.critical("supervisor.gave_up", restarts=len(self._restart_times), period=self.intensity.period, last_error=last_error)
            await self._stop_all()
            raise SupervisorGaveUp(self.name, len(self._restart_times), self.intensity.period, last_error)
        if child.started_at and now - child.started_at >= self.backoff.reset_after:
            child.attempt = 0
        delay = self.backoff.delay(child.attempt, self.rng)
        child.attempt += 1
        self.restarts += 1
        record = self.registry.record(spec.name)
        record.restarts += 1
        self.registry.set_state(spec.name, "restarting")
        self.log.warning("actor.restarting", child=spec.name, restarts=record.restarts, delay=round(delay, 3))

        if self.strategy is Strategy.ONE_FOR_ALL:
            self._generation += 1
            await self._stop_all(except_=child)
            await trio.sleep(delay)
            for sibling in list(self._children):
                if sibling is not child:
                    self.registry.record(sibling.spec.name).restarts += 1
                await self._start(sibling)
        else:
            # each child sleeps out its own back-off: one slow restart never delays another's
            assert self._nursery is not None
            self._nursery.start_soon(self._restart_later, child, delay)

    async def _restart_later(self, child: _Child, delay: float) -> None:
        await trio.sleep(delay)
        if child in self._children:
            await self._start(child)

    def _intensity_exceeded(self, now: float) -> bool:
        times = self._restart_times
        times.append(now)
        while times and now - times[0] > self.intensity.period:
            times.popleft()
        return len(times) > self.intensity.max_restarts

    async def _stop_all(self, except_: _Child | None = None) -> None:
        for child in reversed(list(self._children)):
            if child is not except_:
                await self._stop_child(child)

    async def _stop_child(self, child: _Child) -> None:
        if child.running and child.scope is not None:
            child.scope.cancel()
            with trio.move_on_after(child.spec.shutdown_timeout) as scope:
                await child.done.wait()
            if scope.cancelled_caught:
                self.log.error("actor.stop_timeout", child=child.spec.name, timeout=child.spec.shutdown_timeout)
        self.registry.set_state(child.spec.name, "stopped")
        self.log.info("actor.stopped", child=child.spec.name, reason="shutdown")
