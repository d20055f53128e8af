"""kill -9 at random moments: every acknowledged fill is in the journal exactly once.

A child process journals fills through the journal actor and prints each
acknowledgement after it was given; the test SIGKILLs it at a random moment
(mostly while it writes, sometimes while it is still starting up), restarts it a little *before*
the last acknowledged trade id so it records duplicates, and in the end checks
the file: intact, every acknowledged fill present with its exact content, and
no trade id ever acknowledged as new twice.
"""

from __future__ import annotations

import os
import random
import selectors
import signal
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from daemon.journal_store import JournalStore

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WRITER = HERE / "journal_crash_writer.py"
TRIALS = 10
REPLAY = 25  # each restart re-records this many trade ids before the last acknowledged one
STARTUP_LIMIT = 30.0  # seconds for the writer to acknowledge its first fill

pytestmark = pytest.mark.slow

sys.path.insert(0, str(HERE))
from journal_crash_writer import fill_for  # noqa: E402


def run_until_killed(path: Path, first: int, kill_after: float, *, from_first_ack: bool) -> list[tuple[int, bool]]:
    """Run the writer and SIGKILL it `kill_after` seconds after it started,
    or after its first acknowledgement (so a slow machine still gets to write)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen(
        [sys.executable, str(WRITER), str(path), str(first)], stdout=subprocess.PIPE, env=env, cwd=ROOT, bufsize=0
    )
    output = bytearray()
    deadline = time.monotonic() + (STARTUP_LIMIT if from_first_ack else kill_after)
    with selectors.DefaultSelector() as selector:
        selector.register(child.stdout, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if selector.select(left):
                chunk = os.read(child.stdout.fileno(), 65536)
                if not chunk:
                    break
                if from_first_ack and not output:
                    deadline = time.monotonic() + kill_after
                output += chunk
    child.send_signal(signal.SIGKILL)
    output += child.stdout.read()  # what was acknowledged before the kill
    child.wait(timeout=10)
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL, f"the writer ended on its own (exit {child.returncode})"
    acks = []
    for line in output.decode().splitlines():
        trade_id, new = line.split()
        acks.append((int(trade_id), new == "1"))
    return acks


def test_every_acknowledged_fill_survives_sigkill_exactly_once(tmp_path):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    path = tmp_path / "journal.sqlite"
    new_acks: dict[int, int] = {}
    acknowledged: set[int] = set()
    first = 0
    for trial in range(TRIALS):
        if trial % 4 == 1:  # sometimes while it starts: opening, creating or migrating the file
            acks = run_until_killed(path, first, rng.uniform(0.0, 0.6), from_first_ack=False)
        else:
            acks = run_until_killed(path, first, rng.uniform(0.0, 0.4), from_first_ack=True)
        for trade_id, new in acks:
            acknowledged.add(trade_id)
            new_acks[trade_id] = new_acks.get(trade_id, 0) + int(new)
        if acknowledged:
            first = max(0, max(acknowledged) - REPLAY)

    context = f"(seed {seed})"
    assert len(acknowledged) > 30, f"too few fills were acknowledged to test anything {context}"
    twice = sorted(t for t, n in new_acks.items() if n > 1)
    assert not twice, f"trade ids acknowledged as new more than once: {twice[:10]} {context}"

    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)], context
    raw.close()
    with JournalStore.open(path) as store:
        journaled = {int(f.fill.trade_id): f for f in store.fills()}
    missing = sorted(acknowledged - journaled.keys())
    assert not missing, f"acknowledged fills missing after kill -9: {missing[:10]} {context}"
    for trade_id in acknowledged:
        expected = fill_for(trade_id)
        found = journaled[trade_id]
        assert found.fill == expected, f"fill {trade_id} differs: {found.fill} {context}"
        assert found.exec_id == "crash"
        assert found.fill.qty == Decimal(1 + trade_id % 5) / 4
