"""Assembles the actor tree of DESIGN §1 for one configuration.

Each part of the daemon contributes child specs (in start order) and its
control commands. The order matters: the journal starts first so that
everything after it can write; the control socket and monitor come last so
that a client never talks to a half-started daemon.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import actors.executions
import actors.risk
import actors.venues
from actors.positions import install as install_positions
from daemon.journal_service import install_journal

if TYPE_CHECKING:
    from daemon.app import Daemon


def install(daemon: Daemon) -> None:
    """Register every part's children and commands on `daemon`."""
    install_journal(daemon)  # first: everything after it can write
    install_positions(daemon)  # replays the journal before risk asks for positions
    actors.risk.install(daemon)  # risk sentinel + emergency stop: after journal and positions, before venues
    actors.venues.install(daemon)  # venue supervisor: gateway[v] + feed[v] per configured venue
    actors.executions.install(daemon)  # execution supervisor + exec commands: last, after the venues
