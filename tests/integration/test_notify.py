"""Asynchronous messages: notifications and notices."""

import time

import pgwire
from conftest import connect


def test_listen_notify_delivered(relay):
    """Bug guarded: a NotificationResponse that arrives while the client is idle (no query running)
    is not forwarded until the client's next query, or never."""
    with pgwire.connect(relay.port) as listener, connect(relay.port) as notifier:
        listener.simple("listen it_chan")
        notifier.execute("notify it_chan, 'hello-1'")
        t0 = time.monotonic()
        m = listener.read_msg(timeout=5)
        assert m.type == "A", m
        pid, channel, payload = pgwire.parse_notification(m.payload)
        assert (channel, payload) == ("it_chan", "hello-1")
        assert time.monotonic() - t0 < 2
        notifier.execute("select pg_notify('it_chan', 'hello-2')")
        m = listener.read_msg(timeout=5)
        assert pgwire.parse_notification(m.payload)[1:] == ("it_chan", "hello-2")
        assert listener.scalar("select 1") == "1"


def test_listen_notify_psycopg(relay):
    """Bug guarded: notifications are dropped when they arrive together with a query's results."""
    got = []
    with connect(relay.port) as a, connect(relay.port) as b:
        a.add_notify_handler(lambda n: got.append((n.channel, n.payload)))
        a.execute("listen chan2")
        b.execute("notify chan2, 'x'")
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            a.execute("select 1")
            time.sleep(0.05)
        assert got == [("chan2", "x")]


def test_raise_notice_reaches_client(relay):
    """Bug guarded: NoticeResponse messages are swallowed by the relay."""
    notices = []
    with connect(relay.port) as c:
        c.add_notice_handler(lambda d: notices.append((d.severity, d.message_primary)))
        c.execute("do $$ begin raise notice 'hello %', 42; raise warning 'careful'; end $$")
        assert ("NOTICE", "hello 42") in notices
        assert ("WARNING", "careful") in notices
