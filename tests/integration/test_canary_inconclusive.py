"""Inconclusive analyses handled as canary_analysis.on_inconclusive says (issue 15): pause and retry,
abort, or proceed. Real local servers behind a real HAProxy; the analysis injected (see test_canary_local)."""

from __future__ import annotations

import pytest
from helpers import read_state
from test_canary_local import Verdicts, _haproxy, only_one_server, prepared, two_revisions  # noqa: F401 (fixtures)

from mlops_cli.canary import engine
from mlops_cli.errors import StageFailed
from mlops_cli.state import State
from mlops_cli.targets.local import LocalTarget

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "mode, script, expect",
    [
        ("pause", ["inconclusive", "pass"], "promoted"),  # retried after analysis_retry_s, then passed
        ("pause", ["inconclusive"], "aborted"),  # still inconclusive after the retries
        ("abort", ["inconclusive"], "aborted"),
        ("proceed", ["inconclusive"], "promoted"),
    ],
)
def test_inconclusive_analysis_is_handled_as_configured(two_revisions, mode, script, expect):
    s = two_revisions(
        steps=[{"set_weight": 20}, {"analysis": "default"}],
        canary_analysis={"on_inconclusive": mode, "inconclusive_retries": 1},
    )
    state = State.load(s.workdir)
    analysis = Verdicts(script)
    if expect == "aborted":
        with pytest.raises(StageFailed, match="inconclusive at 20 %"):
            engine.run(s, state, "prod", LocalTarget(s), analyse=analysis)
    else:
        engine.run(s, state, "prod", LocalTarget(s), analyse=analysis)
    saved = read_state(s.workdir)
    assert saved["canaries"]["prod"]["status"] == expect
    assert len(analysis.calls) == {"pause": 2, "abort": 1, "proceed": 1}[mode]
    assert saved["deployments"]["prod"]["model_version"] == ("2" if expect == "promoted" else "1")
    only_one_server(s, saved["deployments"]["prod"])
