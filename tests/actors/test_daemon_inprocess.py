"""The start_daemon fixture: a whole daemon inside the test's trio run."""

import trio


async def test_daemon_runs_in_process_and_answers(start_daemon, ctl):
    d = await start_daemon("[daemon]\nheartbeat_interval = 30\n")
    reply = await ctl(d, "status")
    assert reply["ok"] and reply["result"]["health"] == "HEALTHY"
    reply = await ctl(d, "help")
    assert "status" in reply["result"]
    d.request_stop("test")
    with trio.fail_after(30):
        await d.finished.wait()
    assert d.exit_code == 0 and not d.socket_path.exists()
