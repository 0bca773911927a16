"""How the ClearML source names the SDK's failures: by result code and subcode, not by words of the message."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from helpers import require_module

from mlops_cli.errors import ConfigError, NotFoundError, StageFailed, TemporaryError


@pytest.fixture
def source(make_settings):
    require_module("clearml")
    from mlops_cli.sources.clearml import ClearMLSource

    src = ClearMLSource(make_settings())
    src.host = "http://127.0.0.1:14045"
    return src


def send_error(code, subcode, msg):
    from clearml.backend_interface.session import SendError

    meta = SimpleNamespace(result_code=code, result_subcode=subcode, result_msg=msg)
    return SendError(SimpleNamespace(meta=meta), f"Action failed <{code}/{subcode}: {msg}> on http://127.0.0.1:14045")


def test_a_port_with_404_in_it_is_not_a_missing_model(source):
    failure = source._failure(send_error(500, 0, "Internal error"), "m1")
    assert isinstance(failure, TemporaryError) and "not found" not in str(failure)


def test_unknown_model_and_task_ids_by_subcode(source):
    assert isinstance(source._failure(send_error(400, 201, "Invalid model id: id=m1"), "m1"), NotFoundError)
    assert "task of model" in str(source._failure(send_error(400, 101, "Invalid task id"), "m1"))


def test_a_message_saying_not_found_with_another_code_is_not_a_missing_model(source):
    failure = source._failure(send_error(400, 12, "Validation error: field not found"), "m1")
    assert isinstance(failure, StageFailed) and not isinstance(failure, NotFoundError)


def test_refused_credentials_by_status(source):
    from clearml.backend_api.session.session import LoginError

    assert isinstance(source._failure(send_error(401, 21, "Invalid token"), "m1"), ConfigError)
    login = LoginError("Failed getting token (error 401 from http://127.0.0.1:14045): Unauthorized")
    assert isinstance(source._failure(login, "m1"), ConfigError)
    assert isinstance(
        source._failure(LoginError("Failed getting token (error 503 from x): down"), "m1"), TemporaryError
    )


def test_network_errors_by_type(source):
    import requests

    assert isinstance(source._failure(requests.exceptions.ConnectionError("boom"), "m1"), TemporaryError)


def test_a_clearml_config_file_that_does_not_exist_is_a_config_error(make_settings, monkeypatch, tmp_path):
    require_module("clearml")
    from mlops_cli.sources import clearml_sdk

    monkeypatch.setattr(clearml_sdk, "_prepared", {})
    monkeypatch.setenv("CLEARML_CONFIG_FILE", str(tmp_path / "nowhere.conf"))
    with pytest.raises(ConfigError, match="CLEARML_CONFIG_FILE names .*nowhere.conf, which is not a file"):
        clearml_sdk._user_conf(make_settings())


def test_a_call_past_the_deadline_is_given_up_on():
    require_module("clearml")
    import threading

    from mlops_cli.sources import clearml_sdk

    release = threading.Event()
    with pytest.raises(clearml_sdk.Deadline):
        clearml_sdk.within(0.2, release.wait, 30)
    release.set()
    assert clearml_sdk.within(5, lambda: 42) == 42
    with pytest.raises(KeyError):
        clearml_sdk.within(5, {}.__getitem__, "x")
