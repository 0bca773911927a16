"""A canary whose CLI is killed (kill -9) after its promotion handed the port to the new revision is
finished, not undone, by the next run (issue 15 with issue 10's rules). Real servers, HAProxy, CLI, signal."""

from __future__ import annotations

import signal
import time

import pytest
from helpers import read_state, run_cli
from test_canary_local import _haproxy, canary_env, only_one_server, prepared, two_revisions  # noqa: F401
from test_local_abort import Load, finished, start_paused

from mlops_cli.stages import rolling_update

pytestmark = pytest.mark.integration


def test_kill_9_after_the_promotion_handed_over_is_finished_by_the_next_run(two_revisions):
    s = two_revisions()
    url = read_state(s.workdir)["deployments"]["prod"]["url"]
    env = canary_env(s, [{"set_weight": 50}])
    with Load(url) as load:
        time.sleep(0.3)
        cli, _ = start_paused(["rolling-update"], s.workdir, env, "promote-cleanup")  # revision 2 answers the port
        cli.kill()
        assert finished(cli) == -signal.SIGKILL
        status = run_cli("status", "--workdir", str(s.workdir), env=env)
        assert "DISAGREES  prod: an interrupted canary of revision 2 (step promote-cleanup" in status.stdout
        plain = s.model_copy(update={"rollout": s.rollout.model_copy(update={"strategy": "rolling"})})
        rolling_update.run(plain)  # reconciles first, then a rolling update of the same bundle
        time.sleep(0.5)
    assert load.failed == 0, load.failures[:5]
    saved = read_state(s.workdir)
    canary = saved["canaries"]["prod"]
    assert canary["status"] == "promoted"
    assert canary["reason"] == (
        "found interrupted canary of revision 2 (at step promote-cleanup): finished, revision 2 promoted and serves"
    )
    prod = saved["deployments"]["prod"]
    assert prod["model_version"] == "2" and prod["revision"] == 3  # the canary's revision 2, then this run's 3
    only_one_server(s, prod)
