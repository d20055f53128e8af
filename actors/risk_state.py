"""The trading state ACTIVE / REDUCING / HALTED, and the breaker trips that latch it.

Two rules make the state predictable for an operator:

1. Breakers only ever make the state *stricter*. A trip is latched: it stays on
   record, and the state it forced stays, until an operator acts.
2. Only an operator makes the state *looser*: `reduce` may lower HALTED to
   REDUCING (to flatten through the normal risk path, as the kill's flatten step
   does), and only `resume` returns to ACTIVE, clearing the latched trips.

Besides the global state each venue has its own, ACTIVE or REDUCING, for the
breakers that concern one venue (stale market data, order entry down). An order
is judged by the stricter of the two.

Every change is returned as messages (`TradingStateChanged`, `BreakerTripped`)
for the actor to journal and log; this class does no I/O.
"""

from __future__ import annotations

import msgspec

from daemon.messages import BreakerTripped, TradingStateChanged
from daemon.model import TradingState

_SEVERITY = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}

StateEvent = TradingStateChanged | BreakerTripped


def stricter(a: TradingState, b: TradingState) -> TradingState:
    return a if _SEVERITY[a] >= _SEVERITY[b] else b


class Trip(msgspec.Struct, frozen=True, kw_only=True):
    """One latched breaker trip. `at` is the monotonic time it tripped."""

    breaker: str
    detail: str
    action: TradingState
    at: float
    venue: str | None = None
    kill: bool = False


def _require_text(what: str, by: str, reason: str) -> None:
    if not by.strip():
        raise ValueError(f"{what} needs to say who asks for it (by)")
    if not reason.strip():
        raise ValueError(f"{what} needs a reason; it is journaled so the next operator knows why")


class TradingStateMachine:
    """Global and per-venue trading state with latched breaker trips."""

    def __init__(self) -> None:
        self._state = TradingState.ACTIVE
        self._venue_states: dict[str, TradingState] = {}
        self._trips: dict[tuple[str, str | None], Trip] = {}

    # --- reading ------------------------------------------------------------------------
    @property
    def state(self) -> TradingState:
        """The global state."""
        return self._state

    def venue_state(self, venue: str) -> TradingState:
        """The venue's own state (ACTIVE or REDUCING), regardless of the global one."""
        return self._venue_states.get(venue, TradingState.ACTIVE)

    def state_for(self, venue: str) -> TradingState:
        """The state an order for `venue` is judged by: the stricter of global and venue."""
        return stricter(self._state, self.venue_state(venue))

    @property
    def venue_states(self) -> dict[str, TradingState]:
        return {v: s for v, s in self._venue_states.items() if s is not TradingState.ACTIVE}

    @property
    def trips(self) -> list[Trip]:
        return list(self._trips.values())

    def is_latched(self, breaker: str, venue: str | None = None) -> bool:
        return (breaker, venue) in self._trips

    # --- breakers -----------------------------------------------------------------------
    def trip(
        self,
        breaker: str,
        detail: str,
        action: TradingState,
        *,
        at: float,
        venue: str | None = None,
        kill: bool = False,
    ) -> list[StateEvent]:
        """Latch a trip and make the state at least `action`.

        A breaker that is already latched (for the same venue) trips once: a
        condition that persists does not flood the journal. A venue trip can
        only put that venue in REDUCING; HALTED is always global.
        """
        if (breaker, venue) in self._trips:
            return []
        if venue is not None and action is not TradingState.REDUCING:
            raise ValueError("a venue breaker can only put its venue in REDUCING; halting is global")
        self._trips[(breaker, venue)] = Trip(breaker=breaker, detail=detail, action=action, at=at, venue=venue, kill=kill)
        events: list[StateEvent] = [BreakerTripped(breaker=breaker, detail=detail, action=action, venue=venue, kill=kill)]
        by = f"breaker:{breaker}"
        if venue is None:
            events += self._set_global(stricter(self._state, action), by, detail)
        else:
            events += self._set_venue(venue, stricter(self.venue_state(venue), action), by, detail)
        return events

    # --- operator commands --------------------------------------------------------------
    def halt(self, by: str, reason: str) -> list[StateEvent]:
        """Refuse every new order (cancels still pass) until `resume`."""
        _require_text("halt", by, reason)
        return self._set_global(TradingState.HALTED, by, reason)

    def reduce(self, by: str, reason: str, venue: str | None = None) -> list[StateEvent]:
        """Let only position-reducing orders through, globally or for one venue.

        Globally this also lowers HALTED to REDUCING: the operator's explicit
        way to flatten after a halt without clearing the latched trips.
        """
        _require_text("reduce", by, reason)
        if venue is None:
            return self._set_global(TradingState.REDUCING, by, reason)
        return self._set_venue(venue, TradingState.REDUCING, by, reason)

    def resume(self, by: str, reason: str, venue: str | None = None) -> list[StateEvent]:
        """Back to ACTIVE, clearing latched trips: all of them, or one venue's.

        A venue resume clears only that venue's trips and state; the global
        state stays as it is.
        """
        _require_text("resume", by, reason)
        events: list[StateEvent] = []
        if venue is None:
            self._trips.clear()
            events += self._set_global(TradingState.ACTIVE, by, reason)
            for v in list(self._venue_states):
                events += self._set_venue(v, TradingState.ACTIVE, by, reason)
        else:
            for key in [k for k in self._trips if k[1] == venue]:
                del self._trips[key]
            events += self._set_venue(venue, TradingState.ACTIVE, by, reason)
        return events

    # --- transitions --------------------------------------------------------------------
    def _set_global(self, state: TradingState, by: str, reason: str) -> list[StateEvent]:
        previous = self._state
        if state is previous:
            return []
        self._state = state
        return [TradingStateChanged(state=state, previous=previous, reason=reason, by=by)]

    def _set_venue(self, venue: str, state: TradingState, by: str, reason: str) -> list[StateEvent]:
        previous = self.venue_state(venue)
        if state is previous:
            return []
        if state is TradingState.ACTIVE:
            del self._venue_states[venue]
        else:
            self._venue_states[venue] = state
        return [TradingStateChanged(state=state, previous=previous, reason=reason, by=by, venue=venue)]
