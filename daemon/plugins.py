"""Imports the modules that register config sections and venue types.

A part of the daemon with its own ``[section]`` calls
`daemon.config.register_section` at import time; listing the module here is
what makes the loader know the section.
"""

import venues.binance.config  # noqa: E402,F401  ([venues.NAME] type = "binance")
import venues.sim.config  # noqa: E402,F401  ([venues.NAME] type = "sim")
import venues.sim.server_config  # noqa: E402,F401  ([venue_server], for tradingd venue --config)
import actors.risk  # noqa: E402,F401  ([risk])
import actors.positions  # noqa: E402,F401  ([positions])
import daemon.journal_service  # noqa: E402,F401  ([journal])
import actors.venues  # noqa: E402,F401  ([feed], [gateway])
import actors.executions  # noqa: E402,F401  ([executions])
