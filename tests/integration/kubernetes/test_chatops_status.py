"""`/mlops status` with the kubernetes target: read from the cluster (the API server double), not a workdir."""

from __future__ import annotations

import re

import pytest
from kubetools import digest_ref

from mlops_cli.chatops import views
from mlops_cli.stages import deploy_to_test_env

pytestmark = pytest.mark.integration


def test_status_reads_what_the_cluster_runs_and_who_asked(kube, shipped, kube_settings):
    settings = kube_settings(model=shipped.model, kubernetes={"name": "iris"})
    deploy_to_test_env.run(settings)
    audit = [{"event": "released", "env": "test", "model": shipped.model, "user": "U_DEP"}]
    text = views.cluster_status_text(settings, None, audit)
    test_line, prod_line = text.splitlines()
    assert re.match(rf"^\*test\*: `{re.escape(shipped.model)}` \(iris version 1\) since \d{{4}}-\d\d-\d\dT", test_line)
    assert "requested by <@U_DEP>" in test_line and f"digest `{digest_ref('a')}`" in test_line
    assert "pods available in mlops-test" in test_line
    assert prod_line == "*prod*: no Deployment iris in mlops-prod"
