"""Messages for people (issue 18): an operator's drain, disable and enable are
logged at notice, not as warnings; counts in log lines agree in number
("1 pool", "1 idle connection", "1 session")."""

import re

from wp import admin


def test_admin_actions_are_notices_and_counts_agree(start_backend, start_daemon, pool):
    be = start_backend()
    d = start_daemon(pools={"n": pool("n", [be], min_idle=1)})
    d.wait_log(r"info: ready: 1 pool$")
    d.wait_log(r"info: pool=n: warm: 1 idle connection$")
    target = f"n/{be.addr}"
    for cmd, state in (("drain", "draining"), ("disable", "disabled"), ("enable", r"\w+")):
        assert not admin(d, f"{cmd} {target}").startswith("error"), cmd
        d.wait_log(rf"notice: pool=n backend={re.escape(be.addr)}: backend \w+ -> {state}: ")
    assert not re.search(r"warning: .*by admin", d.log()), d.log()
    assert "1 pools" not in d.log() and "1 idle connections" not in d.log()
