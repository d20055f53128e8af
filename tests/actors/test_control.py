"""The control socket under bad input: every case gets an answer or a drop,
and the daemon and its other clients carry on."""

import json
import os
import socket
import stat

import msgspec
import pytest
import trio
import trio.testing

from daemon.control import Caller, CommandError, Commands, ControlServer


class EchoArgs(msgspec.Struct, forbid_unknown_fields=True):
    count: int
    text: str = ""


def make_commands(log=None):
    commands = Commands()

    async def echo(args, caller):
        return {"count": args.count, "text": args.text, "uid": caller.uid}

    async def slow(args, caller):
        await trio.sleep(float(args.get("seconds", 1)))
        return {"slept": args.get("seconds", 1)}

    async def refuse(args, caller):
        raise CommandError("refused", "not now")

    async def crash(args, caller):
        raise RuntimeError("handler bug")

    async def ticks(args, caller, emit):
        for i in range(3):
            await emit({"tick": i})

    async def forever(args, caller, emit):
        while True:
            await emit({"tick": 0})
            await trio.sleep(0.01)

    commands.add("echo", echo, EchoArgs)
    commands.add("slow", slow)
    commands.add("refuse", refuse)
    commands.add("crash", crash)
    commands.add("ticks", ticks, streaming=True)
    commands.add("forever", forever, streaming=True)
    return commands


@pytest.fixture
async def server(tmp_path, nursery):
    path = tmp_path / "control.sock"
    srv = ControlServer(path, make_commands(), idle_timeout=2.0, max_line_bytes=1024, max_clients=300)
    await nursery.start(srv.run)
    return srv


async def connect(srv):
    return await trio.open_unix_socket(str(srv.path))


class Lines:
    def __init__(self, stream):
        self.stream = stream
        self.buf = b""

    async def read(self, timeout=5):
        with trio.fail_after(timeout):
            while b"\n" not in self.buf:
                chunk = await self.stream.receive_some(65536)
                if not chunk:
                    raise EOFError
                self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)


async def ask(srv, payload: bytes):
    s = await connect(srv)
    await s.send_all(payload)
    return await Lines(s).read()


async def test_socket_file_is_0660_and_removed_on_exit(tmp_path):
    path = tmp_path / "c.sock"
    srv = ControlServer(path, make_commands())
    async with trio.open_nursery() as n:
        await n.start(srv.run)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        n.cancel_scope.cancel()
    assert not path.exists()


async def test_stale_socket_replaced_but_live_one_refused(tmp_path):
    path = tmp_path / "c.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # file left behind, nobody listening
    srv = ControlServer(path, make_commands())
    async with trio.open_nursery() as n:
        await n.start(srv.run)
        assert (await ask(srv, b'{"id":1,"cmd":"echo","args":{"count":1}}\n'))["ok"]
        with pytest.raises(RuntimeError, match="another tradingd"):
            await ControlServer(path, make_commands()).run()
        n.cancel_scope.cancel()


async def test_not_a_socket_is_not_deleted(tmp_path):
    path = tmp_path / "c.sock"
    path.write_text("precious")
    with pytest.raises(RuntimeError, match="not a socket"):
        await ControlServer(path, make_commands()).run()
    assert path.read_text() == "precious"


async def test_good_request_and_id_echo(server):
    reply = await ask(server, b'{"id":"a1","cmd":"echo","args":{"count":3,"text":"hi"}}\n')
    assert reply == {"id": "a1", "ok": True, "result": {"count": 3, "text": "hi", "uid": os.getuid()}}


@pytest.mark.parametrize(
    "payload, code",
    [
        (b"{not json\n", "parse_error"),
        (b"[1,2,3]\n", "bad_request"),
        (b'"status"\n', "bad_request"),
        (b'{"id":1}\n', "bad_request"),
        (b'{"id":1,"cmd":"nope"}\n', "unknown_command"),
        (b'{"id":1,"cmd":"echo","args":{"count":"x"}}\n', "bad_args"),
        (b'{"id":1,"cmd":"echo","args":{}}\n', "bad_args"),
        (b'{"id":1,"cmd":"echo","args":{"count":1,"extra":2}}\n', "bad_args"),
        (b'{"id":1,"cmd":"echo","args":[]}\n', "bad_request"),
        (b"\xff\xfe\x00garbage\x01\n", "parse_error"),
        (b'{"id":1,"cmd":"refuse"}\n', "refused"),
        (b'{"id":1,"cmd":"crash"}\n', "internal"),
    ],
)
async def test_bad_input_gets_a_json_error(server, payload, code):
    reply = await ask(server, payload)
    assert reply["ok"] is False
    assert reply["error"]["code"] == code
    assert reply["error"]["message"]
    # and the server still answers
    assert (await ask(server, b'{"id":2,"cmd":"echo","args":{"count":1}}\n'))["ok"]


async def test_bad_args_message_names_the_argument(server):
    reply = await ask(server, b'{"id":1,"cmd":"echo","args":{"count":"x"}}\n')
    assert reply["error"]["message"] == "args.count: expected int, got str"
    reply = await ask(server, b'{"id":1,"cmd":"echo","args":{}}\n')
    assert reply["error"]["message"] == "args.count: required argument is missing"


async def test_oversized_line_is_refused_and_dropped(server):
    s = await connect(server)
    await s.send_all(b'{"id":1,"cmd":"echo","args":{"text":"' + b"x" * 5000)
    reply = await Lines(s).read()
    assert reply["error"]["code"] == "line_too_long"
    with pytest.raises((EOFError, trio.BrokenResourceError)):
        await Lines(s).read()
    assert (await ask(server, b'{"id":2,"cmd":"echo","args":{"count":1}}\n'))["ok"]


async def test_several_requests_in_flight_on_one_connection(server):
    s = await connect(server)
    await s.send_all(b'{"id":1,"cmd":"slow","args":{"seconds":0.3}}\n{"id":2,"cmd":"echo","args":{"count":7}}\n')
    lines = Lines(s)
    first, second = await lines.read(), await lines.read()
    assert first["id"] == 2 and second["id"] == 1  # the quick answer did not wait for the slow one


async def test_half_closed_client_still_gets_its_answer(server):
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(server.path))
    s.sendall(b'{"id":1,"cmd":"slow","args":{"seconds":0.1}}\n')
    s.shutdown(socket.SHUT_WR)  # what `printf ... | socat` does
    data = await trio.to_thread.run_sync(s.makefile("rb").readline)
    assert json.loads(data)["id"] == 1
    s.close()


async def test_streaming_and_client_leaving_mid_stream(server):
    s = await connect(server)
    await s.send_all(b'{"id":9,"cmd":"ticks"}\n')
    lines = Lines(s)
    events = [await lines.read() for _ in range(4)]
    assert [e.get("event") for e in events[:3]] == [{"tick": 0}, {"tick": 1}, {"tick": 2}]
    assert events[3] == {"id": 9, "ok": True, "result": None}
    # a client that leaves during an endless stream is cleaned up
    s2 = await connect(server)
    await s2.send_all(b'{"id":1,"cmd":"forever"}\n')
    await Lines(s2).read()
    await s2.aclose()
    with trio.fail_after(5):
        while server.clients > 1:
            await trio.sleep(0.01)
    assert (await ask(server, b'{"id":2,"cmd":"echo","args":{"count":1}}\n'))["ok"]


async def test_silent_client_is_dropped_after_idle_timeout(server):
    s = await connect(server)
    reply = await Lines(s).read(timeout=10)
    assert reply["error"]["code"] == "idle_timeout"


async def test_client_that_disconnects_mid_reply_does_not_hurt(server):
    for _ in range(20):
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(server.path))
        s.sendall(b'{"id":1,"cmd":"slow","args":{"seconds":0.05}}\n')
        s.close()
    await trio.sleep(0.2)
    assert (await ask(server, b'{"id":2,"cmd":"echo","args":{"count":1}}\n'))["ok"]


async def test_hundreds_of_concurrent_clients(server):
    results = []

    async def one(i):
        reply = await ask(server, f'{{"id":{i},"cmd":"echo","args":{{"count":{i}}}}}\n'.encode())
        results.append(reply["result"]["count"])

    async with trio.open_nursery() as n:
        for i in range(250):
            n.start_soon(one, i)
    assert sorted(results) == list(range(250))


async def test_peer_credentials_policy(tmp_path):
    srv = ControlServer(tmp_path / "c.sock", make_commands(), group=None)
    assert srv.allowed(Caller(pid=1, uid=os.getuid(), gid=0))
    assert srv.allowed(Caller(pid=1, uid=0, gid=0))
    assert not srv.allowed(Caller(pid=1, uid=54321, gid=54321))
    srv._group_gid = 4242
    assert srv.allowed(Caller(pid=1, uid=54321, gid=4242))


async def test_forbidden_peer_gets_error_and_is_disconnected(tmp_path, nursery):
    srv = ControlServer(tmp_path / "c.sock", make_commands())
    srv.allowed = lambda caller: False
    await nursery.start(srv.run)
    s = await trio.open_unix_socket(str(srv.path))
    lines = Lines(s)
    assert (await lines.read())["error"]["code"] == "forbidden"
    with pytest.raises((EOFError, trio.BrokenResourceError)):
        await lines.read()
    assert srv.refused == 1
