"""Session state in transaction mode: reported settings (ParameterStatus: application_name, TimeZone,
DateStyle, ...) that a client SETs follow the client to whichever pooled backend runs its next
transaction, and never leak to other clients. Also the startup ParameterStatus set."""

import threading

import pytest

import pgwire
from conftest import DIRECT, connect
from pool_helpers import pool_relay, run_threads

SETTINGS = [  # (TimeZone, DateStyle as shown after SET, application_name, text of date '2024-03-05')
    ("UTC", "ISO, MDY", "pool_a", "2024-03-05"),
    ("Asia/Tokyo", "German, DMY", "pool_b", "05.03.2024"),
    ("America/New_York", "SQL, DMY", "pool_c", "05/03/2024"),
    ("Europe/Berlin", "Postgres, MDY", "pool_d", "03-05-2024"),
]


def server_defaults(cluster):
    with cluster.connect(user="app", password="app") as d:
        return {k: d.execute(f"show {k}").fetchone()[0] for k in ("timezone", "datestyle", "application_name")}


@pytest.mark.deadline(60)
def test_reported_settings_follow_client(pgrelay, cluster):
    """Bug guarded: SET TimeZone / DateStyle / application_name in transaction mode is lost when the
    client's next transaction lands on another pooled backend, or one client's setting shows up in
    another client's session (the backend was not re-synchronised to the client's values)."""
    r = pool_relay(pgrelay, "transaction", pool_size=2)
    conns = [connect(r.port) for _ in SETTINGS]
    try:
        for c, (tz, ds, app, _) in zip(conns, SETTINGS):
            c.execute(f"set TimeZone = '{tz}'")
            c.execute(f"set DateStyle = '{ds}'")
            c.execute(f"set application_name = '{app}'")

        def check(i, k):
            c = conns[i]
            tz, ds, app, date_text = SETTINGS[i]
            row = c.execute("select current_setting('TimeZone'), current_setting('DateStyle'), "
                            "current_setting('application_name'), '2024-03-05'::date::text, "
                            "pg_backend_pid()").fetchone()
            assert row[0] == tz, f"client {i} query {k}: TimeZone {row[0]!r}, its own is {tz!r}"
            assert row[1] == ds, f"client {i} query {k}: DateStyle {row[1]!r}, its own is {ds!r}"
            assert row[2] == app, f"client {i} query {k}: application_name {row[2]!r}, its own is {app!r}"
            assert row[3] == date_text, f"client {i} query {k}: date printed {row[3]!r}"
            assert c.execute("show timezone").fetchone()[0] == tz
            assert c.info.parameter_status("TimeZone") == tz, (
                f"client {i}: ParameterStatus TimeZone {c.info.parameter_status('TimeZone')!r} "
                f"(pgrelay forwarded another backend's value?)")
            assert c.info.parameter_status("application_name") == app
            return row[4]

        def client(i):
            return {check(i, k) for k in range(40)}

        run_threads(client, len(conns), timeout=50)

        # Forced sharing: a fifth client holds one of the two pooled backends in a transaction, so
        # the four clients take turns on the one that is left and every turn must re-synchronise it
        # to that client's settings (the concurrent phase above may, by chance, never move a client).
        if not DIRECT:
            with connect(r.port) as holder:
                holder.execute("begin")
                held = holder.execute("select pg_backend_pid()").fetchone()[0]
                shared = {check(i, 100 + k) for k in range(3) for i in range(len(conns))}
                holder.execute("rollback")
            assert held not in shared and len(shared) == 1, (
                f"clients did not share the one free backend (held {held}, used {shared})")
    finally:
        for c in conns:
            c.close()
    defaults = server_defaults(cluster)
    with connect(r.port) as fresh:
        for _ in range(6):
            got = {k: fresh.execute(f"show {k}").fetchone()[0] for k in defaults}
            assert got == defaults, f"a new client sees settings of earlier clients: {got} (defaults {defaults})"


def test_reset_and_rollback_of_settings(pgrelay, cluster):
    """Bug guarded: pgrelay keeps replaying a setting the client RESET, or one SET inside a transaction
    that was rolled back (PostgreSQL restores the old value and reports it with ParameterStatus)."""
    r = pool_relay(pgrelay, "transaction", pool_size=2)
    defaults = server_defaults(cluster)
    with connect(r.port) as c, connect(r.port) as other:
        stop = threading.Event()

        def noise():  # keeps the other backend busy now and then so c moves around
            while not stop.is_set():
                other.execute("set TimeZone = 'Asia/Kolkata'; select pg_sleep(0.003)")

        t = threading.Thread(target=noise, daemon=True)
        t.start()
        try:
            c.execute("set TimeZone = 'Asia/Tokyo'")
            c.execute("begin")
            c.execute("set TimeZone = 'America/Chicago'")
            assert c.execute("show timezone").fetchone()[0] == "America/Chicago"
            c.execute("rollback")
            for _ in range(15):
                assert c.execute("show timezone").fetchone()[0] == "Asia/Tokyo", "rolled-back SET was kept"
            c.execute("reset TimeZone")
            for _ in range(15):
                assert c.execute("show timezone").fetchone()[0] == defaults["timezone"], "RESET not honoured"
        finally:
            stop.set()
            t.join(5)


def test_startup_parameter_status(pgrelay):
    """Bug guarded: a client logged in from the pool (no backend login of its own) misses the
    ParameterStatus values libpq relies on (server_version, client_encoding, standard_conforming_strings,
    integer_datetimes, DateStyle, TimeZone, ...), or gets values that differ from what its statements
    see."""
    r = pool_relay(pgrelay, "transaction", pool_size=1)
    with pgwire.connect(r.port, timeout=5) as first:
        first.scalar("select 1")
    with pgwire.connect(r.port, timeout=5) as w:
        for key in ("server_version", "server_encoding", "client_encoding", "DateStyle", "TimeZone",
                    "integer_datetimes", "standard_conforming_strings", "IntervalStyle", "is_superuser",
                    "session_authorization", "application_name"):
            assert key in w.params, f"ParameterStatus {key} missing at login: {sorted(w.params)}"
        assert w.params["session_authorization"] == "app"
        assert w.params["is_superuser"] == "off"
        assert w.scalar("show timezone") == w.params["TimeZone"]
        assert w.scalar("show datestyle") == w.params["DateStyle"]
        assert w.backend_key is not None


def test_startup_options_apply_on_every_backend(pgrelay):
    """Bug guarded: settings given in the startup packet (DateStyle, TimeZone, application_name) apply
    only on the backend that was logged in for this client, not on others the pool hands it later; or
    the ParameterStatus sent at login shows the pool's values instead of the client's."""
    r = pool_relay(pgrelay, "transaction", pool_size=2)
    opts = dict(DateStyle="German", TimeZone="Asia/Tokyo")  # same options: same pool, both backends
    with pgwire.connect(r.port, timeout=5, application_name="pool_startup", **opts) as w, \
            pgwire.connect(r.port, timeout=5, application_name="pool_other", **opts) as other:
        assert w.params.get("DateStyle", "").startswith("German"), w.params
        assert w.params.get("TimeZone") == "Asia/Tokyo", w.params
        assert w.params.get("application_name") == "pool_startup", w.params
        pids = set()
        for k in range(10):
            if k % 2:  # another client holds a backend meanwhile, so w has to use the other one
                assert other.simple("begin").status == "T"
                assert other.scalar("select current_setting('application_name')") == "pool_other"
            cyc = w.simple("select '2024-03-05'::date::text, current_setting('TimeZone'), "
                           "current_setting('application_name'), pg_backend_pid()")
            if k % 2:
                assert other.simple("commit").status == "I"
            assert not cyc.errors, cyc.errors
            row = cyc.results[0].text_rows()[0]
            pids.add(row[3])
            assert row[:3] == ["05.03.2024", "Asia/Tokyo", "pool_startup"], (k, row)
        assert DIRECT or len(pids) > 1, f"w always ran on backend {pids}; the test exercised nothing"
        with connect(r.port) as fresh:
            assert fresh.execute("show datestyle").fetchone()[0] != "German, DMY", "startup DateStyle leaked"


def test_client_encoding_follows_client(pgrelay):
    """Bug guarded: SET client_encoding by one client is not re-applied on the other pooled backends (its
    text arrives in the wrong encoding) or leaks to other clients."""
    r = pool_relay(pgrelay, "transaction", pool_size=2)
    with pgwire.connect(r.port, timeout=5) as latin, pgwire.connect(r.port, timeout=5) as utf8:
        assert not latin.simple("set client_encoding = 'LATIN1'").errors
        assert latin.params.get("client_encoding") == "LATIN1"
        for k in range(10):
            if k % 2:  # hold one backend so latin has to run on the other
                assert utf8.simple("begin").status == "T"
            cyc = latin.simple("select chr(233), current_setting('client_encoding')")
            if k % 2:
                assert utf8.simple("commit").status == "I"
            assert not cyc.errors, cyc.errors
            assert cyc.results[0].rows[0] == [b"\xe9", b"LATIN1"], (k, cyc.results[0].rows)
            cyc = utf8.simple("select chr(233)")
            assert cyc.results[0].rows[0] == [b"\xc3\xa9"], (k, cyc.results[0].rows)
        assert latin.params.get("client_encoding") == "LATIN1"
        assert utf8.params.get("client_encoding") == "UTF8"
