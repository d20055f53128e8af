"""Kill latency: from `tradectl kill` to zero open orders, and what the daemon adds to the venues' own round trips.

The setup: the whole daemon in this process, with two venues, each a loopback
Binance server (`tradingd venue --protocol binance`: the simulated exchange
served over the Binance Spot protocol on 127.0.0.1) in a process of its own,
traded through the real Binance adapter: signed REST over HTTP, so every
cancel and every open-orders query is a real request and a real answer. The
venues run apart from the daemon so that their work (matching, JSON, pushing
the cancellations down the user stream) is not billed to the daemon, as on a
real exchange. Each adds `LATENCY` to every REST answer (half before the work,
half after): a round trip like a venue close by; without it a loopback round
trip is a fraction of a millisecond and says little about a real venue. The
markets stand still (one step a minute), so the orders, priced 10 % away from
the market, rest until the kill.

Ours. The daemon holds `ORDERS` resting orders, half at each venue (two
symbols each), placed through the normal order path (risk, journal,
gateway). The clock starts when the `kill` request leaves tradectl's client
(`daemon.ctl_client.Client`, the transport `tradectl kill` uses) and stops
when its answer arrives: by then every venue has confirmed zero open orders
(the kill's verification query) and the report is journaled. A query of each
venue then confirms that nothing of ours is open.

The baseline: the venues' own round trips, without the daemon. The same
number of orders rest at the same two venues under another account, and a
minimal client (httpx, HMAC signing) does what any emergency cancel must do:
for each venue in parallel, cancel-all for each symbol in parallel, then one
open-orders query to confirm nothing is left. The overhead is ours minus that,
per repeat (ours and the baseline take turns).

What the daemon does beyond the baseline, and so what the overhead is made
of: the control socket; HALTED and stopping the executions; one open-orders
query per venue *before* the cancels (it finds orders in symbols the gateway
does not know, e.g. left by an earlier run: one more round trip); turning
the venue's answers and the user stream's cancellations into journaled order
updates meanwhile; journaling the report (one fsync) and answering.

Warm connections: one kill (and one baseline round) runs untimed first, so the
emergency connection pool and the baseline's client are connected. After hours
of quiet a real kill may pay for a new connection (a TLS handshake to a
distant venue), which neither side measures here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import trio
from websockets.trio.client import connect

from bench.common import Row, Stat, compared, quiet_logs, scoped_environ
from daemon import components, topics
from daemon.app import Daemon
from daemon.config import parse
from daemon.ctl_client import Client
from daemon.messages import Approval, OrderIntent
from daemon.model import OrderType, Side, TimeInForce, TradingState, client_order_id
from venues.binance.signing import HmacSigner, encode_params
from venues.sim.server_config import derived_credentials

REPEATS = 9
QUICK_REPEATS = 1
ORDERS = 100
QUICK_ORDERS = 20
VENUES = ("v1", "v2")
SYMBOLS = ("BTCUSDT", "ETHUSDT")
LATENCY = 0.005  # seconds added by each venue to every REST answer
TARGET_OVERHEAD_MS = 20.0
SETTLE = 0.3  # seconds of calm before each measured kill: the previous round's updates are journaled
OURS, BASELINE_ACCOUNT = "demo", "bench"
KEY_NAME, SECRET_NAME = "bench_kill_api_key", "bench_kill_api_secret"
SIZE = {"BTCUSDT": Decimal("0.0005"), "ETHUSDT": Decimal("0.01")}
TICK = Decimal("0.01")


def run(quick: bool = False) -> list[Row]:
    repeats = QUICK_REPEATS if quick else REPEATS
    orders = QUICK_ORDERS if quick else ORDERS
    samples = trio.run(_measure, repeats, orders)
    ours, raw = samples["ours"], samples["raw"]
    return [
        compared(
            f"kill: command -> zero open, verified ({orders} orders, {len(VENUES)} venues)",
            "ms",
            ours,
            raw,
            higher_is_better=False,
            note=(
                f"baseline: the venues' own cancel-all + open-orders round trips; {len(VENUES)} loopback "
                f"Binance venues in their own processes, {LATENCY * 1000:g} ms added to each REST answer"
            ),
        ),
        Row(
            figure="kill: overhead above the venues' round trips",
            unit="ms",
            ours=Stat.of([o - r for o, r in zip(ours, raw)]),
            higher_is_better=False,
            target_value=TARGET_OVERHEAD_MS,
            note="per repeat: ours - baseline",
        ),
    ]


# ---------------------------------------------------------------------------------------
# The measurement
# ---------------------------------------------------------------------------------------


async def _measure(repeats: int, orders: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {"ours": [], "raw": []}
    with tempfile.TemporaryDirectory(prefix="bench-kill-") as tmp, quiet_logs(), _environment(tmp):
        directory = Path(tmp)
        with contextlib.ExitStack() as processes:
            venues = {name: processes.enter_context(_Venue(name, 11 + n, directory)) for n, name in enumerate(VENUES)}
            async with contextlib.AsyncExitStack() as clients:
                for venue in venues.values():
                    await venue.ready()
                ours, raw = {}, {}
                for name, venue in venues.items():
                    ours[name] = await clients.enter_async_context(_RawClient(venue, OURS))
                    raw[name] = await clients.enter_async_context(_RawClient(venue, BASELINE_ACCOUNT))
                touch = {(name, symbol): await raw[name].touch(symbol) for name in venues for symbol in SYMBOLS}
                async with trio.open_nursery() as nursery:
                    for client in raw.values():
                        await nursery.start(client.listen)
                    daemon = await _start_daemon(nursery, directory, venues)
                    try:
                        for number in range(repeats + 1):  # the first round warms connections, untimed
                            mine = await _kill_through_daemon(daemon, ours, orders)
                            baseline = await _baseline_round(raw, touch, orders)
                            if number:
                                samples["ours"].append(mine)
                                samples["raw"].append(baseline)
                        await trio.sleep(SETTLE)
                        reports = sum(client.events for client in raw.values())
                        if reports < 2 * orders * (repeats + 1):  # NEW and CANCELED for every order, at least
                            raise RuntimeError(f"the baseline's user streams carried only {reports} events")
                    finally:
                        daemon.request_stop("benchmark finished")
                        with trio.move_on_after(30):
                            await daemon.finished.wait()
                        nursery.cancel_scope.cancel()
    return samples


async def _kill_through_daemon(daemon: Daemon, venues: dict[str, _RawClient], orders: int) -> float:
    """Place `orders` resting orders through the daemon, then time `tradectl kill`. Returns ms."""

    if daemon.trading_state is not TradingState.ACTIVE:
        await trio.to_thread.run_sync(_control, daemon.socket_path, "resume", {"reason": "benchmark: next round"})
    answers: list[object] = []

    async def submit(intent: OrderIntent) -> None:
        answers.append(await daemon.bus.request(topics.RISK_SUBMIT, intent, timeout=30))

    async with trio.open_nursery() as nursery:
        for intent in _intents(daemon, orders):
            nursery.start_soon(submit, intent)
    refused = [a for a in answers if not isinstance(a, Approval)]
    if refused:
        raise RuntimeError(f"the daemon refused {len(refused)} of the benchmark's orders, e.g. {refused[0]}")
    await _wait_open(venues, orders)
    await trio.sleep(SETTLE)

    started = time.perf_counter()
    report = await trio.to_thread.run_sync(_control, daemon.socket_path, "kill", {"reason": "benchmark"})
    elapsed = time.perf_counter() - started
    left = await _open(venues)
    if not report.get("complete") or left:
        raise RuntimeError(f"the kill left {left} order(s) open or was incomplete: {report}")
    return elapsed * 1000


def _control(path: Path, cmd: str, args: dict) -> dict:
    """One command over the control socket, as `tradectl CMD` sends it."""

    with Client(path, timeout=60) as client:
        return client.call(cmd, args)


def _intents(daemon: Daemon, orders: int) -> list[OrderIntent]:
    feeds = daemon.services["feeds"]
    exec_id = f"k{time.time_ns() % 10**10:x}"
    out = []
    for seq, (venue, symbol, side) in enumerate(_layout(orders)):
        quote = feeds[venue].last_quote(symbol)
        if quote is None:
            raise RuntimeError(f"no live quote for {venue}:{symbol}; the feed is not running")
        price = _away(quote.bid if side is Side.BUY else quote.ask, side, seq)
        out.append(
            OrderIntent(
                client_order_id=client_order_id(exec_id, seq), exec_id=exec_id, seq=seq, venue=venue, symbol=symbol,
                side=side, order_type=OrderType.LIMIT, quantity=SIZE[symbol], price=price,
                time_in_force=TimeInForce.GTC,
            )  # fmt: skip
        )
    return out


def _layout(orders: int) -> list[tuple[str, str, Side]]:
    """(venue, symbol, side) of each order: spread evenly over venues and symbols, two buys to a sell."""
    return [
        (VENUES[seq % len(VENUES)], SYMBOLS[(seq // len(VENUES)) % len(SYMBOLS)], Side.BUY if seq % 3 else Side.SELL)
        for seq in range(orders)
    ]


def _away(price: Decimal, side: Side, seq: int) -> Decimal:
    """10 % away from the touch (and a few ticks apart), so the order rests."""
    factor = Decimal("0.9") if side is Side.BUY else Decimal("1.1")
    return (price * factor).quantize(TICK) + (seq % 11) * TICK


# ---------------------------------------------------------------------------------------
# The baseline: the venues' round trips with a minimal client
# ---------------------------------------------------------------------------------------


async def _baseline_round(clients: dict[str, _RawClient], touch: dict, orders: int) -> float:
    """Rest `orders` orders (not timed), then cancel them all and confirm. Returns ms."""
    async with trio.open_nursery() as nursery:
        for seq, (venue, symbol, side) in enumerate(_layout(orders)):
            bid, ask = touch[venue, symbol]
            price = _away(bid if side is Side.BUY else ask, side, seq)
            nursery.start_soon(clients[venue].place, symbol, side, SIZE[symbol], price)
    await _wait_open(clients, orders)
    await trio.sleep(SETTLE)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for client in clients.values():
            nursery.start_soon(client.cancel_all_and_confirm)
    elapsed = time.perf_counter() - started
    left = await _open(clients)
    if left:
        raise RuntimeError(f"the baseline left {left} order(s) open")
    return elapsed * 1000


class _RawClient:
    """Signed REST calls for one account at one venue, and nothing else."""

    def __init__(self, venue: _Venue, account: str) -> None:
        creds = derived_credentials(account)
        self.signer = HmacSigner(creds.api_key, creds.secret)
        self.url = venue.rest_url
        self.stream_url = venue.stream_url
        self.events = 0
        self.http: httpx.AsyncClient | None = None
        self._ids = iter(range(10**9))

    async def __aenter__(self) -> _RawClient:
        self.http = httpx.AsyncClient(base_url=self.url, timeout=10)
        await self.open_orders()  # connected now, as the daemon's pools are
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.http is not None
        await self.http.aclose()

    async def _signed(self, method: str, path: str, params: dict[str, str]) -> httpx.Response:
        assert self.http is not None
        query = encode_params(params | {"timestamp": str(int(time.time() * 1000))})
        query = f"{query}&signature={self.signer.sign(query)}"
        answer = await self.http.request(method, f"{path}?{query}", headers={"X-MBX-APIKEY": self.signer.api_key})
        if answer.status_code != 200:
            raise RuntimeError(f"{method} {path}: HTTP {answer.status_code} {answer.text[:200]}")
        return answer

    async def listen(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the account's user data stream open and read it, as any trading client does,
        so the venue pushes the same execution reports for the baseline's orders as for ours."""
        assert self.http is not None
        answer = await self.http.post("/api/v3/userDataStream", headers={"X-MBX-APIKEY": self.signer.api_key})
        answer.raise_for_status()
        async with connect(f"{self.stream_url}/ws/{answer.json()['listenKey']}", compression=None) as ws:
            task_status.started()
            async for _ in ws:
                self.events += 1

    async def touch(self, symbol: str) -> tuple[Decimal, Decimal]:
        assert self.http is not None
        book = (await self.http.get("/api/v3/ticker/bookTicker", params={"symbol": symbol})).json()
        return Decimal(book["bidPrice"]), Decimal(book["askPrice"])

    async def place(self, symbol: str, side: Side, quantity: Decimal, price: Decimal) -> None:
        params = {
            "symbol": symbol, "side": side.value, "type": "LIMIT", "timeInForce": "GTC", "quantity": str(quantity),
            "price": str(price), "newClientOrderId": f"raw-{time.time_ns() % 10**9}-{next(self._ids)}",
        }  # fmt: skip
        await self._signed("POST", "/api/v3/order", params)

    async def open_orders(self) -> list:
        return (await self._signed("GET", "/api/v3/openOrders", {})).json()

    async def cancel_all_and_confirm(self) -> None:
        """Cancel-all for every symbol in parallel, then one open-orders query."""

        async def cancel(symbol: str) -> None:
            await self._signed("DELETE", "/api/v3/openOrders", {"symbol": symbol})

        async with trio.open_nursery() as nursery:
            for symbol in SYMBOLS:
                nursery.start_soon(cancel, symbol)
        if await self.open_orders():
            raise RuntimeError(f"{self.url} still lists open orders after the baseline's cancel-all")


async def _open(clients: dict[str, _RawClient]) -> int:
    return sum([len(await client.open_orders()) for client in clients.values()])


async def _wait_open(clients: dict[str, _RawClient], count: int) -> None:
    with trio.fail_after(30):
        while await _open(clients) != count:
            await trio.sleep(0.01)


# ---------------------------------------------------------------------------------------
# The venues and the daemon
# ---------------------------------------------------------------------------------------


class _Venue:
    """`tradingd venue --protocol binance` in its own process, with both accounts funded."""

    def __init__(self, name: str, seed: int, directory: Path) -> None:
        self.name = name
        self.port = _free_port_pair()
        self.rest_url = f"http://127.0.0.1:{self.port}"
        self.stream_url = f"ws://127.0.0.1:{self.port + 1}"
        self.ws_api_url = f"{self.stream_url}/ws-api/v3"
        funds = '{ USDT = "1000000", BTC = "20", ETH = "200" }'
        self.config = directory / f"venue-{name}.toml"
        self.config.write_text(
            f"""
[venues.{name}]
type = "sim"
seed = {seed}
market_step = 60.0
accounts = [{{ name = "{OURS}", balances = {funds} }}, {{ name = "{BASELINE_ACCOUNT}", balances = {funds} }}]

[venue_server]
port = {self.port}
request_weight_per_minute = 10000000
orders_per_10s = 1000000
orders_per_day = 100000000

[venue_server.faults]
latency = {LATENCY}
"""
        )
        self.errors = directory / f"venue-{name}.err"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> _Venue:
        root = Path(__file__).resolve().parent.parent
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(root), os.environ.get("PYTHONPATH")))))
        with open(self.errors, "wb") as errors:  # a file, not a pipe: a full pipe would stall the venue
            self.process = subprocess.Popen(
                [sys.executable, "-m", "daemon.main", "venue", "--protocol", "binance", "--config", str(self.config)],
                cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=errors,
            )  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    async def ready(self) -> None:
        assert self.process is not None
        async with httpx.AsyncClient(base_url=self.rest_url) as http:
            with trio.fail_after(30):
                while True:
                    if self.process.poll() is not None:
                        error = self.errors.read_text(errors="replace")[-500:]
                        raise RuntimeError(f"the venue {self.name} did not start: {error}")
                    try:
                        if (await http.get("/api/v3/ping")).status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.05)


def _free_port_pair() -> int:
    """A port N with N + 1 free too (REST, then the WebSocket endpoints)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port >= 65535:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("found no two adjacent free ports on 127.0.0.1")


def _config(venues: dict[str, _Venue]) -> str:
    tables = "".join(
        f"""
[venues.{name}]
type = "binance"
rest_url = "{venue.rest_url}"
market_stream_url = "{venue.stream_url}"
ws_api_url = "{venue.ws_api_url}"
api_key_name = "{KEY_NAME}"
api_secret_name = "{SECRET_NAME}"
"""
        for name, venue in venues.items()
    )
    symbols = "".join(f'{name} = ["BTCUSDT", "ETHUSDT"]\n' for name in venues)
    return f"""
[daemon]
kill_deadline = 10.0
{tables}
[feed.symbols]
{symbols}
[risk]
price_collar_bps = "5000"
max_orders_per_second = 100000
max_orders_per_minute = 1000000
max_open_orders_per_instrument = 10000
max_open_orders = 10000
stale_quote_seconds = 3600.0
rejects = {{ enabled = false }}
stale_data = {{ enabled = false }}
venue_down = {{ enabled = false }}
"""


async def _start_daemon(nursery: trio.Nursery, directory: Path, venues: dict[str, _Venue]) -> Daemon:
    daemon = Daemon(parse(_config(venues), "bench-kill.toml"), socket_path=directory / "run" / "control.sock")
    components.install(daemon)
    daemon.finished = trio.Event()

    async def run_daemon() -> None:
        try:
            await daemon.run()
        finally:
            daemon.finished.set()

    nursery.start_soon(run_daemon)
    with trio.fail_after(60):
        await daemon.ready.wait()
        feeds = daemon.services["feeds"]
        while any(feeds[v].last_quote(s) is None for v in VENUES for s in SYMBOLS):
            await trio.sleep(0.02)
    return daemon


@contextlib.contextmanager
def _environment(directory: str) -> Iterator[None]:
    """The daemon's directories and the venues' credentials, for the benchmark only."""

    ours = derived_credentials(OURS)
    values = {
        "STATE_DIRECTORY": os.path.join(directory, "state"),
        "RUNTIME_DIRECTORY": os.path.join(directory, "run"),
        "TRADINGD_" + KEY_NAME.upper(): ours.api_key,  # the loopback venue's keys for our account
        "TRADINGD_" + SECRET_NAME.upper(): ours.secret,
    }
    with scoped_environ(values):
        yield

