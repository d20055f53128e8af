"""Log lines: logfmt and JSON, journald prefixes, levels per actor, no secrets."""

import io
import json

import pytest

from daemon.logs import Level, LogSink, Logger
import daemon.logs as logs


@pytest.fixture
def out(monkeypatch):
    stream = io.StringIO()
    test_sink = LogSink(stream=stream, journald=False)
    monkeypatch.setattr(logs, "sink", test_sink)
    return stream, test_sink


def lines(stream):
    return stream.getvalue().splitlines()


def test_logfmt_line_shape_and_quoting(out):
    stream, _ = out
    Logger("gateway.sim").info("order.sent", cid="td-x-1", reason='has "quotes" and spaces', empty="", ok=True)
    (line,) = lines(stream)
    assert line.startswith("ts=")
    assert ' level=info actor=gateway.sim event=order.sent cid=td-x-1 reason="has \\"quotes\\" and spaces" empty="" ok=true' in line


def test_json_format_has_same_keys(out):
    stream, sink = out
    sink.configure(fmt="json")
    Logger("risk").warning("risk.denied", code="PRICE_COLLAR", qty=__import__("decimal").Decimal("0.10"))
    obj = json.loads(lines(stream)[0])
    assert list(obj)[:4] == ["ts", "level", "actor", "event"]
    assert obj["event"] == "risk.denied" and obj["qty"] == "0.10" and obj["level"] == "warning"


def test_journald_prefix_and_no_timestamp(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    s = LogSink(stream=stream)
    monkeypatch.setattr(logs, "sink", s)
    Logger("daemon").error("daemon.boom")
    Logger("daemon").info("daemon.ready")
    got = lines(stream)
    assert got[0].startswith("<3>level=error ") and "ts=" not in got[0]
    assert got[1].startswith("<6>level=info ")


def test_levels_per_actor_with_prefix_inheritance(out):
    stream, sink = out
    sink.set_level(Level.WARNING)
    sink.set_level(Level.DEBUG, "feed")
    Logger("feed.binance").debug("book.synced")
    Logger("gateway.binance").info("order.sent")
    Logger("gateway.binance").error("order.failed")
    events = [l.split("event=")[1].split()[0] for l in lines(stream)]
    assert events == ["book.synced", "order.failed"]


def test_secrets_never_printed(out):
    stream, sink = out
    sink.register_secret("NhqPtmdSJYdKjVHjA7PZj4Mge3R5")
    Logger("gateway").info("venue.auth", api_secret="NhqPtmdSJYdKjVHjA7PZj4Mge3R5", note="key NhqPtmdSJYdKjVHjA7PZj4Mge3R5 used")
    Logger("gateway").info("venue.auth", api_key="public-but-private", signature="abcd")
    text = stream.getvalue()
    assert "NhqPtmdSJYdKjVHjA7PZj4Mge3R5" not in text
    assert "public-but-private" not in text and "abcd" not in text
    assert text.count("***") == 4


def test_secret_from_environment_is_registered(monkeypatch, out):
    stream, _ = out
    from daemon.secrets import read_secret

    monkeypatch.setenv("TRADINGD_SIM_API_SECRET", "s3cr3t-value-xyz")
    assert read_secret("sim_api_secret") == "s3cr3t-value-xyz"
    Logger("x").info("oops", detail="value is s3cr3t-value-xyz")
    assert "s3cr3t-value-xyz" not in stream.getvalue()


def test_credentials_directory_wins(monkeypatch, tmp_path):
    from daemon.secrets import MissingSecret, read_secret

    (tmp_path / "binance_api_key").write_text("from-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("TRADINGD_BINANCE_API_KEY", "from-env")
    assert read_secret("binance_api_key") == "from-credential"
    with pytest.raises(MissingSecret, match="TRADINGD_OTHER"):
        read_secret("other", required=True)


def test_ring_buffer_and_listeners(out):
    _, sink = out
    seen = []
    sink.listeners.append(seen.append)
    for i in range(5):
        Logger("a").info("tick", i=i)
    assert [r.event for r in sink.ring] == ["tick"] * 5
    assert len(seen) == 5


def test_bad_level_name():
    with pytest.raises(ValueError, match="use one of"):
        Level.parse("loud")
    assert Level.parse("WARN") is Level.WARNING
