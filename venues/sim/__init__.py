"""The simulated venue: the embedded default, deterministic under a seed.

- `engine`: the matching engine (pure): books, accounts, fees, filters, events.
- `book`, `accounts`: its integer-unit data structures.
- `market`: the synthetic market (pure): prices, resting liquidity, other traders.
- `config`: the ``[venues.NAME] type = "sim"`` table.
- `world`: engine + market + accounts, and the trio driver (`SimWorld.run`).
- `adapter`: `SimVenue`, the `venues.base.VenueAdapter` of one account.

Nothing is imported here, so the pure modules stay free of trio.
"""
