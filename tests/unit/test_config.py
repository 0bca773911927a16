from pathlib import Path

import pytest

from mlops_cli.config import load_settings
from mlops_cli.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mlops.yaml"
    path.write_text(text)
    return path


def test_defaults_file_env_flags_in_order_of_precedence(tmp_path):
    cfg = write(tmp_path, "deploy:\n  test:\n    port: 9001\n  prod:\n    port: 9002\nsmoke:\n  requests: 5\n")
    env = {"MLOPS_DEPLOY__PROD__PORT": "9102", "MLOPS_SMOKE__REQUESTS": "7"}
    settings = load_settings(cfg, {"smoke": {"requests": 9}}, environ=env)
    assert settings.deploy.test.port == 9001  # file over default
    assert settings.deploy.prod.port == 9102  # env over file
    assert settings.smoke.requests == 9  # flag over env
    assert settings.smoke.p95_ms == 500.0  # default
    assert settings.deploy.test.host == "127.0.0.1"


def test_env_lists_as_json_and_the_test_suites_variable_is_not_config(tmp_path):
    env = {"MLOPS_UNIT_TEST__PATHS": '["a", "b"]', "MLOPS_REQUIRE_INTEGRATION": "1"}
    assert load_settings(None, {}, environ=env).unit_test.paths == ["a", "b"]


@pytest.mark.parametrize("name", ["MLOPS_VALIDATON__THRESHOLDS", "MLOPS_MODLE"])
def test_misspelled_env_variable_is_an_error(name):
    with pytest.raises(ConfigError, match=rf"^{name}: unknown setting"):
        load_settings(None, {}, environ={name: "x"})


@pytest.mark.parametrize(
    "text, expected",
    [
        ("deploy:\n  prot: 3\n", "unknown key 'deploy.prot'"),
        ("colour: blue\n", "unknown key 'colour'"),
        ("smoke:\n  p95_ms: fast\n", "smoke.p95_ms"),
        ("validation:\n  thresholds:\n    accuracy: high\n", "threshold for 'accuracy' must look like '>= 0.9'"),
        ("deploy: [1\n", "malformed YAML at line 2"),
        ("- a\n- b\n", "top level must be a mapping"),
    ],
)
def test_bad_file_names_the_key_and_the_file(tmp_path, text, expected):
    cfg = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, {}, environ={})
    assert expected in str(info.value)
    assert str(cfg) in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_env_value_names_the_variable():
    with pytest.raises(ConfigError, match=r"^MLOPS_DEPLOY__TEST__PORT: deploy.test.port"):
        load_settings(None, {}, environ={"MLOPS_DEPLOY__TEST__PORT": "eighty"})


def test_unknown_nested_env_key_is_an_error():
    with pytest.raises(ConfigError, match="MLOPS_DEPLOY__PROT: unknown key 'deploy.prot'"):
        load_settings(None, {}, environ={"MLOPS_DEPLOY__PROT": "1"})


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml", {}, environ={})


def test_empty_file_is_all_defaults(tmp_path):
    assert load_settings(write(tmp_path, ""), {}, environ={}).deploy.target == "local"


def test_registry_credentials_go_only_over_tls() -> None:
    """build.insecure with credentials only to a loopback registry; the docker engine's insecure registries too."""
    from mlops_cli.builders.docker import engine_plain_http
    from mlops_cli.settings import is_loopback, registry_host

    with pytest.raises(
        ConfigError,
        match=r"build: insecure: true would send the registry credentials to "
        r"art\.example\.com without TLS",
    ):
        load_settings(
            None, {"build": {"registry": "art.example.com:5000/ml", "insecure": True, "username": "ci"}}, environ={}
        )
    with pytest.raises(ConfigError, match="without TLS"):
        load_settings(
            None, {"build": {"registry": "10.0.0.5/ml", "insecure": True}}, environ={"MLOPS_BUILD__PASSWORD": "pw"}
        )
    for registry in ("127.0.0.1:5000", "localhost:5000/ml", "[::1]:5000"):
        assert load_settings(
            None, {"build": {"registry": registry, "insecure": True, "username": "ci"}}, environ={}
        ).build.insecure
    assert not load_settings(
        None, {"build": {"registry": "art.example.com", "username": "ci"}}, environ={}
    ).build.insecure
    assert [registry_host(r) for r in ("a.example:5000/x", "[::1]:5000", "a.example")] == [
        "a.example",
        "::1",
        "a.example",
    ]
    assert [is_loopback(h) for h in ("127.0.0.2", "::1", "localhost", "10.0.0.1", "example.com")] == [
        True,
        True,
        True,
        False,
        False,
    ]
    # names that merely look local go to DNS, which may answer anything
    assert not any(
        is_loopback(h)
        for h in (
            "127.0.0.1.evil.example",
            "evil.localhost",
            "localhost.evil.example",
            "0.0.0.0",
            "::",
            "[::ffff:10.0.0.1]",
        )
    )
    assert all(is_loopback(h) for h in ("LOCALHOST", "localhost.", "[::1]", "127.255.255.254"))
    # GET /info as Docker documents it (RegistryConfig.IndexConfigs[...].Secure, InsecureRegistryCIDRs)
    info = {
        "RegistryConfig": {
            "InsecureRegistryCIDRs": ["127.0.0.0/8", "10.1.0.0/16"],
            "IndexConfigs": {
                "docker.io": {"Name": "docker.io", "Secure": True},
                "art.example.com:5000": {"Name": "art.example.com:5000", "Secure": False},
            },
        }
    }
    assert engine_plain_http(info, "art.example.com:5000/ml") and engine_plain_http(info, "10.1.2.3:5000")
    assert not engine_plain_http(info, "art.example.com/ml") and not engine_plain_http(info, "registry.example.org")
    assert not engine_plain_http({}, "10.1.2.3")
    # a name is resolved, as the engine resolves it, and its addresses checked against the CIDRs
    assert engine_plain_http({"RegistryConfig": {"InsecureRegistryCIDRs": ["127.0.0.0/8"]}}, "localhost:5000/ml")
    assert not engine_plain_http({"RegistryConfig": {"InsecureRegistryCIDRs": ["10.0.0.0/8"]}}, "localhost:5000")


@pytest.mark.parametrize(
    "text, env, expected",
    [
        (
            "deploy:\n  target: kubernets\n",
            {},
            "mlops.yaml: deploy.target: unknown deploy target 'kubernets'; "
            "known: container, kubernetes, local; did you mean 'kubernetes'?",
        ),
        (
            "build:\n  builder: biuldah\n",
            {},
            "mlops.yaml: build.builder: unknown image builder 'biuldah'; "
            "known: buildah, docker; did you mean 'buildah'?",
        ),
        (
            "notify:\n  notifiers: [slack, kafak]\n",
            {},
            "notify.notifiers: unknown notifier 'kafak'; known: kafka, slack; did you mean 'kafka'?",
        ),
        (
            "",
            {"MLOPS_RELAY__SINKS": '["slakc"]'},
            "MLOPS_RELAY__SINKS: relay.sinks: unknown notifier 'slakc'; known: kafka, slack; did you mean 'slack'?",
        ),
        (
            "model: locl:iris@1\n",
            {},
            "model: unknown model source 'locl'; known: clearml, local, s3; did you mean 'local'?",
        ),
        ("deploy:\n  target: helm\n", {}, "unknown deploy target 'helm'; known: container, kubernetes, local"),
    ],
)
def test_backend_names_are_checked_at_load_with_a_suggestion(tmp_path, text, env, expected):
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), {}, environ=env)
    assert expected in str(info.value) and "\n" not in str(info.value)
    if "helm" in text:
        assert "did you mean" not in str(info.value)


def test_known_backend_names_load_without_importing_a_backend(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; from mlops_cli.config import load_settings; "
        "s = load_settings(None, {'deploy': {'target': 'kubernetes'}, 'build': {'builder': 'docker'}, "
        "'notify': {'notifiers': ['slack', 'kafka']}, 'model': 's3://bucket/iris/1'}, environ={}); "
        "print(','.join(m for m in sys.modules if m.startswith(('mlops_cli.targets.', 'mlops_cli.builders.', "
        "'mlops_cli.notifiers.', 'mlops_cli.sources.', 'kubernetes', 'docker', 'kafka', 'slack_sdk', 'boto3'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert out.strip() == ""
