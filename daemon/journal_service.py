"""The journal as a part of the daemon: the first core actor, and the audit trail.

``[journal]`` has one optional key, ``path``; without it the journal is
``journal.sqlite`` in the state directory (``$STATE_DIRECTORY`` under
systemd, ``./state`` in a development checkout). The journal starts before
every other actor, so everything after it can write, and stops after them.

It also answers the control server's audit hook: every audited command
(``shutdown``, ``ack-balances``, ...) is journaled with who sent it, its
arguments and its outcome.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from daemon.config import register_section
from daemon.control import Caller
from daemon.journal import Journal, JournalError, journal_path
from daemon.logs import describe_error, get_logger
from daemon.supervisor import ChildSpec, Restart

if TYPE_CHECKING:
    from daemon.app import Daemon

log = get_logger("journal")


class JournalConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    path: str | None = None  # default: journal.sqlite in the state directory


register_section("journal", JournalConfig)


def install_journal(daemon: Daemon) -> None:
    """Start the journal as the first core child; publish it as ``daemon.services["journal"]``."""
    cfg: JournalConfig = daemon.config.section("journal")
    journal = Journal(journal_path(cfg.path))
    daemon.services["journal"] = journal

    async def audit(caller: Caller, command: str, args: dict[str, Any], ok: bool, summary: str) -> None:
        try:
            await journal.record_command(
                uid=caller.uid, user=caller.user, command=command, args=args, ok=ok, result=summary
            )
        except JournalError as exc:
            log.error("journal.audit_failed", command=command, user=caller.user, error=describe_error(exc))

    daemon.services["audit"] = audit
    daemon.child_factories.append(
        lambda d: [ChildSpec("journal", journal.run, restart=Restart.PERMANENT, core=True, shutdown_timeout=15.0)]
    )
    daemon.status_extras["journal"] = lambda: {"path": str(journal.path), **msgspec.to_builtins(journal.stats())}
