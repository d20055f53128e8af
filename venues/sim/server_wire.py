"""Binance Spot JSON shapes, built from the sim engine's values.

Pure functions from engine values (`OrderState`, `AccountTrade`, `Balance`,
`BookSnapshot`, events) to the dicts Binance sends, with field names,
zero-padded decimal strings and conditional fields as the documentation
gives them. Decimals are padded to the asset's precision (8, or more where an
instrument needs it), as Binance pads to its asset precision.

The shapes are plain dicts encoded once with msgspec: the server builds each
answer once, and a dict reads exactly like the documentation's examples.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

from daemon.messages import BalanceUpdate, Fill, OrderUpdate
from daemon.model import Instrument, OrderType
from venues.base import AccountTrade, Balance, BookSnapshot, OrderState, PublicTrade
from venues.sim.engine import SimEngine

ENCODER = msgspec.json.Encoder(decimal_format="string")
STP_MODE = "NONE"
ORDER_TYPES = ["LIMIT", "LIMIT_MAKER", "MARKET"]


def encode(value: Any) -> bytes:
    return ENCODER.encode(value)


def padded(value: Decimal | None, decimals: int) -> str:
    """`value` with exactly `decimals` places ("0.10000000"); None is zero."""
    if value is None:
        value = Decimal(0)
    return f"{value:.{decimals}f}"


class Shapes:
    """Binance's JSON for one engine: knows each asset's precision."""

    def __init__(self, engine: SimEngine) -> None:
        self.engine = engine
        self.instruments: dict[str, Instrument] = {i.symbol: i for i in engine.instruments()}

    def decimals(self, asset: str) -> int:
        return self.engine.asset_decimals(asset)

    def px(self, symbol: str, value: Decimal | None) -> str:
        return padded(value, self.decimals(self.instruments[symbol].quote))

    def qty(self, symbol: str, value: Decimal | None) -> str:
        return padded(value, self.decimals(self.instruments[symbol].base))

    # --- reference data ------------------------------------------------------------------

    def exchange_info(self, symbols: list[str], rate_limits: list[dict], server_ms: int) -> dict:
        return {
            "timezone": "UTC",
            "serverTime": server_ms,
            "rateLimits": rate_limits,
            "exchangeFilters": [],
            "symbols": [self.symbol_info(s) for s in symbols],
        }

    def symbol_info(self, symbol: str) -> dict:
        ins = self.instruments[symbol]
        base_dec, quote_dec = self.decimals(ins.base), self.decimals(ins.quote)
        px = lambda v: padded(v, quote_dec)  # noqa: E731
        qty = lambda v: padded(v, base_dec)  # noqa: E731
        return {
            "symbol": symbol,
            "status": "TRADING" if self.engine.is_trading(symbol) else "BREAK",
            "baseAsset": ins.base,
            "baseAssetPrecision": base_dec,
            "quoteAsset": ins.quote,
            "quotePrecision": quote_dec,
            "quoteAssetPrecision": quote_dec,
            "baseCommissionPrecision": base_dec,
            "quoteCommissionPrecision": quote_dec,
            "orderTypes": ORDER_TYPES,
            "icebergAllowed": False,
            "ocoAllowed": False,
            "otoAllowed": False,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": False,
            "cancelReplaceAllowed": False,
            "amendAllowed": False,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": px(ins.min_price),
                    "maxPrice": px(ins.max_price),
                    "tickSize": px(ins.tick_size),
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": qty(ins.min_qty),
                    "maxQty": qty(ins.max_qty),
                    "stepSize": qty(ins.step_size),
                },
                {
                    "filterType": "MARKET_LOT_SIZE",
                    "minQty": qty(ins.min_qty),
                    "maxQty": qty(ins.max_qty),
                    "stepSize": qty(ins.step_size),
                },
                {
                    "filterType": "NOTIONAL",
                    "minNotional": px(ins.min_notional),
                    "applyMinToMarket": True,
                    "maxNotional": px(ins.max_notional),
                    "applyMaxToMarket": True,
                    "avgPriceMins": 0,
                },
            ],
            "permissions": [],
            "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": STP_MODE,
            "allowedSelfTradePreventionModes": [STP_MODE],
        }

    def depth(self, snapshot: BookSnapshot) -> dict:
        symbol = snapshot.symbol
        return {
            "lastUpdateId": snapshot.last_update_id,
            "bids": [[self.px(symbol, p), self.qty(symbol, q)] for p, q in snapshot.bids],
            "asks": [[self.px(symbol, p), self.qty(symbol, q)] for p, q in snapshot.asks],
        }

    # --- orders ---------------------------------------------------------------------------

    def _order_core(self, order: OrderState) -> dict:
        s = order.symbol
        quote = self.instruments[s].quote
        return {
            "price": self.px(s, order.price),
            "origQty": self.qty(s, order.quantity),
            "executedQty": self.qty(s, order.filled_qty),
            "origQuoteOrderQty": padded(order.quote_quantity, self.decimals(quote)),
            "cummulativeQuoteQty": padded(order.quote_filled, self.decimals(quote)),
            "status": order.status.value,
            "timeInForce": (order.time_in_force.value if order.time_in_force else "GTC"),
            "type": order.order_type.value,
            "side": order.side.value,
        }

    def new_order(self, order: OrderState, resp_type: str, fills: list[AccountTrade], transact_ms: int) -> dict:
        """The POST /api/v3/order answer: ACK, RESULT or FULL."""
        out: dict[str, Any] = {
            "symbol": order.symbol,
            "orderId": int(order.venue_order_id),
            "orderListId": -1,
            "clientOrderId": order.client_order_id,
            "transactTime": transact_ms,
        }
        if resp_type == "ACK":
            return out
        out.update(self._order_core(order))
        out["workingTime"] = transact_ms if order.order_type is not OrderType.MARKET else -1
        out["selfTradePreventionMode"] = STP_MODE
        if resp_type == "FULL":
            out["fills"] = [
                {
                    "price": self.px(t.symbol, t.price),
                    "qty": self.qty(t.symbol, t.qty),
                    "commission": padded(t.fee, self.decimals(t.fee_asset)),
                    "commissionAsset": t.fee_asset,
                    "tradeId": int(t.trade_id),
                }
                for t in fills
            ]
        return out

    def order(self, order: OrderState) -> dict:
        """GET /api/v3/order and /openOrders: the order as it stands."""
        out: dict[str, Any] = {
            "symbol": order.symbol,
            "orderId": int(order.venue_order_id),
            "orderListId": -1,
            "clientOrderId": order.client_order_id,
        }
        out.update(self._order_core(order))
        out.update(
            {
                "stopPrice": self.px(order.symbol, None),
                "icebergQty": self.qty(order.symbol, None),
                "time": order.created_ms,
                "updateTime": order.venue_ms,
                "isWorking": order.order_type is not OrderType.MARKET,
                "workingTime": order.created_ms if order.order_type is not OrderType.MARKET else -1,
                "selfTradePreventionMode": STP_MODE,
            }
        )
        return out

    def canceled(self, order: OrderState, cancel_client_id: str, transact_ms: int) -> dict:
        """DELETE /api/v3/order (and each entry of DELETE /openOrders)."""
        out: dict[str, Any] = {
            "symbol": order.symbol,
            "origClientOrderId": order.client_order_id,
            "orderId": int(order.venue_order_id),
            "orderListId": -1,
            "clientOrderId": cancel_client_id,
            "transactTime": transact_ms,
        }
        out.update(self._order_core(order))
        out["selfTradePreventionMode"] = STP_MODE
        return out

    # --- account ---------------------------------------------------------------------------

    def account(self, account: str, balances: list[Balance], uid: int, update_ms: int) -> dict:
        maker, taker = self.engine.fee_rates(account)
        return {
            "makerCommission": int(maker * 10_000),
            "takerCommission": int(taker * 10_000),
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {
                "maker": padded(maker, 8),
                "taker": padded(taker, 8),
                "buyer": padded(None, 8),
                "seller": padded(None, 8),
            },
            "canTrade": True,
            "canWithdraw": True,
            "canDeposit": True,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": update_ms,
            "accountType": "SPOT",
            "balances": [
                {
                    "asset": b.asset,
                    "free": padded(b.free, self.decimals(b.asset)),
                    "locked": padded(b.locked, self.decimals(b.asset)),
                }
                for b in balances
            ],
            "permissions": ["SPOT"],
            "uid": uid,
        }

    def my_trade(self, trade: AccountTrade) -> dict:
        s = trade.symbol
        quote = self.instruments[s].quote
        return {
            "symbol": s,
            "id": int(trade.trade_id),
            "orderId": int(trade.venue_order_id),
            "orderListId": -1,
            "price": self.px(s, trade.price),
            "qty": self.qty(s, trade.qty),
            "quoteQty": padded(trade.price * trade.qty, self.decimals(quote)),
            "commission": padded(trade.fee, self.decimals(trade.fee_asset)),
            "commissionAsset": trade.fee_asset,
            "time": trade.venue_ms,
            "isBuyer": trade.side.value == "BUY",
            "isMaker": trade.is_maker,
            "isBestMatch": True,
        }

    # --- market streams --------------------------------------------------------------------

    def depth_update(self, symbol: str, first_id: int, last_id: int, bids: dict, asks: dict, event_ms: int) -> dict:
        return {
            "e": "depthUpdate",
            "E": event_ms,
            "s": symbol,
            "U": first_id,
            "u": last_id,
            "b": [[self.px(symbol, p), self.qty(symbol, q)] for p, q in sorted(bids.items(), reverse=True)],
            "a": [[self.px(symbol, p), self.qty(symbol, q)] for p, q in sorted(asks.items())],
        }

    def trade(self, trade: PublicTrade, event_ms: int) -> dict:
        s = trade.symbol
        return {
            "e": "trade",
            "E": event_ms,
            "s": s,
            "t": trade.trade_id,
            "p": self.px(s, trade.price),
            "q": self.qty(s, trade.qty),
            "T": trade.venue_ms,
            "m": trade.taker_side.value == "SELL",  # the buyer was the maker when the seller took
            "M": True,
        }

    def book_ticker(self, symbol: str, update_id: int, bid: tuple | None, ask: tuple | None) -> dict:
        return {
            "u": update_id,
            "s": symbol,
            "b": self.px(symbol, bid[0] if bid else None),
            "B": self.qty(symbol, bid[1] if bid else None),
            "a": self.px(symbol, ask[0] if ask else None),
            "A": self.qty(symbol, ask[1] if ask else None),
        }

    def partial_depth(self, snapshot: BookSnapshot) -> dict:
        return self.depth(snapshot)

    # --- user data ---------------------------------------------------------------------------

    def execution_report(
        self,
        update: OrderUpdate,
        state: OrderState | None,
        fill: Fill | None,
        *,
        execution_type: str,
        cancel_client_id: str | None,
        execution_id: int,
        event_ms: int,
    ) -> dict:
        """An executionReport from the engine's OrderUpdate (and the Fill that caused it, if any).

        `state` supplies what an OrderUpdate does not carry (type, time in
        force, creation time); it may be None for an order already forgotten.
        """
        s = update.symbol
        ins = self.instruments[s]
        quote_dec = self.decimals(ins.quote)
        order_type = state.order_type.value if state else ("MARKET" if update.price is None else "LIMIT")
        tif = state.time_in_force.value if state and state.time_in_force else "GTC"
        created = state.created_ms if state else update.venue_ms
        quote_qty = state.quote_quantity if state else None
        resting = update.status.value in ("NEW", "PARTIALLY_FILLED") and order_type != "MARKET"
        if cancel_client_id is not None:
            client_id, orig_client_id = cancel_client_id, update.client_order_id
        else:
            client_id, orig_client_id = update.client_order_id, ""
        out: dict[str, Any] = {
            "e": "executionReport",
            "E": event_ms,
            "s": s,
            "c": client_id,
            "S": update.side.value,
            "o": order_type,
            "f": tif,
            "q": self.qty(s, update.quantity),
            "p": self.px(s, update.price),
            "P": self.px(s, None),
            "F": self.qty(s, None),
            "g": -1,
            "C": orig_client_id,
            "x": execution_type,
            "X": update.status.value,
            "r": "NONE",
            "i": int(update.venue_order_id),
            "l": self.qty(s, fill.qty if fill else None),
            "z": self.qty(s, update.filled_qty),
            "L": self.px(s, fill.price if fill else None),
            "n": padded(fill.fee if fill else None, self.decimals(fill.fee_asset) if fill else 8),
            "N": fill.fee_asset if fill else None,
            "T": fill.venue_ms if fill else update.venue_ms,
            "t": int(fill.trade_id) if fill else -1,
            "v": -1,
            "I": execution_id,
            "w": resting,
            "m": fill.is_maker if fill else False,
            "M": False,
            "O": created,
            "Z": padded(update.quote_filled, quote_dec),
            "Y": padded(fill.price * fill.qty if fill else None, quote_dec),
            "Q": padded(quote_qty, quote_dec),
            "W": created,
            "V": STP_MODE,
        }
        if execution_type == "EXPIRED":
            out["eR"] = "UNFILLED_IOC_QUANTITY_EXPIRED" if tif in ("IOC", "FOK") else "UNFILLED_MARKET_EXPIRED"
        return out

    def account_position(self, balances: list[BalanceUpdate], event_ms: int) -> dict:
        return {
            "e": "outboundAccountPosition",
            "E": event_ms,
            "u": max((b.venue_ms for b in balances), default=event_ms),
            "B": [
                {
                    "a": b.asset,
                    "f": padded(b.free, self.decimals(b.asset)),
                    "l": padded(b.locked, self.decimals(b.asset)),
                }
                for b in balances
            ],
        }
