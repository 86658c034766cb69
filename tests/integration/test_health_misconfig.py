"""A health check that is misconfigured must never fail a healthy primary over.

A wrong health_check.password (after a reload, the common way to get it wrong) makes every node
refuse the check's login. The nodes are alive: pgrelay logs the refusal and keeps routing as before;
it must not detach the primary, run failover_command or promote anything.
"""

import time

import pytest

from conftest import connect

pytestmark = pytest.mark.pgrelay_only


def node_rows(port):
    with connect(port) as c:
        return c.execute("show pool_nodes").fetchall()


@pytest.mark.deadline(60)
def test_wrong_health_password_after_reload_keeps_nodes(pgrelay, cluster, tmp_path):
    marker = tmp_path / "failover-ran"
    r = pgrelay(failover_command=f"touch {marker}", health_check={"period": "1s", "timeout": "1s",
                                                                   "max_retries": 0})
    rows = node_rows(r.port)
    assert [row[3] for row in rows] == ["up", "up", "up"], rows
    off = r.log_size()
    r.rewrite(health_check={"password": "certainly-wrong"})
    r.reload()
    assert r.wait_log("refuses the health check's login", timeout=10, start=off) is not None
    time.sleep(3)  # several check periods with the wrong password
    rows = node_rows(r.port)
    assert [row[3] for row in rows] == ["up", "up", "up"], rows
    assert rows[0][6] == "primary", rows
    assert not marker.exists(), "failover_command ran for a node that only refused the check's login"
    with connect(r.port) as c:
        c.execute("create table if not exists hc_misconfig (id int)")
        c.execute("insert into hc_misconfig values (1)")
        assert c.execute("select pg_is_in_recovery()").fetchone() is not None
