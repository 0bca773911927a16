"""How the target reaches the API server: kubeconfig and context, server + token, and each bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import run_cli
from kubetools import digest_ref

from mlops_cli.errors import ConfigError
from mlops_cli.stages import deploy_to_test_env

pytestmark = pytest.mark.integration


def kubeconfig(path: Path, server: str, token: str, contexts=("ci",), current="ci") -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": current,
                "clusters": [{"name": "double", "cluster": {"server": server}}],
                "users": [{"name": "jenkins", "user": {"token": token}}],
                "contexts": [
                    {"name": name, "context": {"cluster": "double", "user": "jenkins", "namespace": "mlops-test"}}
                    for name in contexts
                ],
            }
        )
    )
    return path


def test_kubeconfig_and_its_context_reach_the_server(kube, shipped, kube_settings, tmp_path):
    config = kubeconfig(tmp_path / "config", kube.url, kube.token, contexts=("other", "ci"), current="other")
    settings = kube_settings(
        model=shipped.model, kubernetes={"server": None, "token": None, "kubeconfig": str(config), "context": "ci"}
    )
    assert deploy_to_test_env.run(settings).revision == 1
    assert kube.running_images("mlops-test", "iris") == [digest_ref("a")] * 2


def test_context_not_in_the_kubeconfig_names_the_known_ones(kube, shipped, kube_settings, tmp_path):
    config = kubeconfig(tmp_path / "config", kube.url, kube.token, contexts=("dev", "ci"))
    settings = kube_settings(
        model=shipped.model, kubernetes={"server": None, "token": None, "kubeconfig": str(config), "context": "prod"}
    )
    with pytest.raises(ConfigError, match=r"context 'prod' is not in kubeconfig .* \(known: dev, ci\)"):
        deploy_to_test_env.run(settings)


def test_server_without_token_is_a_config_error(shipped, kube_settings):
    with pytest.raises(ConfigError, match="kubernetes.server is set but no token"):
        deploy_to_test_env.run(kube_settings(model=shipped.model, kubernetes={"token": None}))


def test_no_kubeconfig_is_one_line_with_exit_code_2(shipped, tmp_path):
    done = run_cli(
        "deploy-test",
        "--workdir",
        str(shipped.workdir),
        env={
            "MLOPS_DEPLOY__TARGET": "kubernetes",
            "KUBECONFIG": str(tmp_path / "missing"),
            "KUBERNETES_SERVICE_HOST": "",
            "HOME": str(tmp_path),
        },
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: no Kubernetes credentials: no kubeconfig at {tmp_path / 'missing'}")
    assert "Traceback" not in done.stderr


def test_unreachable_server_from_the_cli_is_one_line(shipped, tmp_path):
    from helpers import free_port

    done = run_cli(
        "deploy-test",
        "--workdir",
        str(shipped.workdir),
        env={
            "MLOPS_DEPLOY__TARGET": "kubernetes",
            "MLOPS_KUBERNETES__SERVER": f"http://127.0.0.1:{free_port()}",
            "MLOPS_KUBERNETES__TOKEN": "s3cret-token",
            "MLOPS_KUBERNETES__INSECURE": "true",
            "MLOPS_KUBERNETES__API_RETRIES": "1",
            "MLOPS_KUBERNETES__RETRY_BACKOFF_S": "0.01",
        },
    )
    assert done.returncode == 75
    assert done.stderr.strip().splitlines()[-1].startswith("error: cannot reach the Kubernetes API server")
    assert "gave up after 2 attempts" in done.stderr
    assert "s3cret-token" not in done.stderr + done.stdout


@pytest.mark.parametrize("namespace", ["Bad_NS", "-x", "a" * 64])
def test_wrong_namespace_name_is_a_config_error(kube_settings, namespace):
    with pytest.raises(ConfigError, match=f"kubernetes.namespaces.prod: '{namespace}' is not a namespace name"):
        kube_settings(kubernetes={"namespaces": {"prod": namespace}})


def test_rollback_needs_a_target_that_keeps_revisions(shipped, tmp_path):
    done = run_cli("rollback", "--workdir", str(shipped.workdir), "--env", "prod")
    assert done.returncode == 3 and "nothing is deployed to prod" in done.stderr
    bad = run_cli("rollback", "--workdir", str(shipped.workdir), "--env", "stage")
    assert bad.returncode == 2 and "'stage' is not one of 'test', 'prod'" in bad.stderr


@pytest.mark.parametrize(
    "server", ["not a url", "127.0.0.1:6443", "ftp://api.example.test", "https://user:pw@api.example.test"]
)
def test_a_server_that_is_no_url_is_a_config_error_not_a_network_retry(shipped, kube_settings, server):
    with pytest.raises(ConfigError, match=r"kubernetes.server: .* is not an API server URL"):
        kube_settings(kubernetes={"server": server})
    done = run_cli(
        "deploy-test",
        "--workdir",
        str(shipped.workdir),
        env={
            "MLOPS_DEPLOY__TARGET": "kubernetes",
            "MLOPS_KUBERNETES__SERVER": server,
            "MLOPS_KUBERNETES__TOKEN": "s3cret-token",
        },
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip().splitlines()[-1]]  # one line, no warning
    assert "is not an API server URL" in done.stderr and "retrying" not in done.stderr


def test_server_url_with_a_path_and_port_is_accepted(kube_settings):
    assert (
        kube_settings(kubernetes={"server": "https://api.example.test:6443/k8s"}).kubernetes.server
        == "https://api.example.test:6443/k8s"
    )


def test_a_kubeconfig_wins_over_the_pods_service_account_as_with_kubectl(
    kube, shipped, kube_settings, tmp_path, monkeypatch
):
    from mlops_cli.targets import kubeapi

    account = tmp_path / "serviceaccount-token"
    account.write_text("the-agent-pods-own-token")
    monkeypatch.setattr(kubeapi, "SERVICE_ACCOUNT", account)  # as in a Jenkins agent pod
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "1")
    config = kubeconfig(tmp_path / "config", kube.url, kube.token)
    monkeypatch.setenv("KUBECONFIG", str(config))
    settings = kube_settings(model=shipped.model, kubernetes={"server": None, "token": None})
    assert deploy_to_test_env.run(settings).revision == 1  # the kubeconfig's cluster, not the pod's own
    assert kube.running_images("mlops-test", "iris") == [digest_ref("a")] * 2


def test_an_untrusted_certificate_is_one_config_error_not_retried(shipped, kube_settings, tmp_path):
    import ssl
    import subprocess
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from helpers import require_tool

    openssl = require_tool("openssl")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.handle_error = lambda *args: None  # the client hangs up on the handshake, as it should
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = kube_settings(
            model=shipped.model,
            kubernetes={
                "server": f"https://127.0.0.1:{server.server_address[1]}",
                "insecure": False,
                "api_retries": 3,
                "retry_backoff_s": 5,
            },
        )
        with pytest.raises(
            ConfigError,
            match=r"TLS verification of the Kubernetes API server at https://127\.0\.0\.1:"
            r"\d+ failed: .*CERTIFICATE_VERIFY_FAILED.*kubernetes.ca_file",
        ):
            deploy_to_test_env.run(settings)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "server, insecure",
    [
        ("http://api.example.test:6443", "true"),
        ("http://10.0.0.1", "true"),
        ("http://127.0.0.1:6443", "false"),
        ("http://localhost:6443", "false"),
    ],
)
def test_a_token_over_plain_http_is_a_config_error_at_load(shipped, kube_settings, server, insecure):
    """Only to a loopback address, and only with kubernetes.insecure: true, does a token go over plain http."""
    with pytest.raises(ConfigError, match=r"kubernetes: server .* is plain http: the token would go out in clear text"):
        kube_settings(kubernetes={"server": server, "insecure": insecure == "true"})
    done = run_cli(
        "deploy-test",
        "--workdir",
        str(shipped.workdir),
        env={
            "MLOPS_KUBERNETES__SERVER": server,
            "MLOPS_KUBERNETES__TOKEN": "s3cret-token",
            "MLOPS_KUBERNETES__INSECURE": insecure,
        },
    )
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: environment: kubernetes: server {server} is plain http"), line
    assert "use https://" in line and "kubernetes.insecure: true" in line
    assert "s3cret-token" not in done.stderr + done.stdout
    # without a token, or over https, or to loopback with insecure: true, the same server is accepted
    assert kube_settings(kubernetes={"server": server, "token": None}).kubernetes.token is None
    https = server.replace("http://", "https://")
    assert kube_settings(kubernetes={"server": https, "insecure": False}).kubernetes.server == https


def test_a_kubeconfig_with_a_plain_http_server_and_a_token_is_refused(kube, shipped, kube_settings, tmp_path):
    config = kubeconfig(tmp_path / "config", kube.url.replace("127.0.0.1", "localhost"), kube.token)
    settings = kube_settings(
        model=shipped.model, kubernetes={"server": None, "token": None, "insecure": False, "kubeconfig": str(config)}
    )
    with pytest.raises(
        ConfigError,
        match=r"server http://localhost:\d+ is plain http and the user's credentials "
        r"would go out in clear text.*kubernetes.insecure: true",
    ):
        deploy_to_test_env.run(settings)
    assert kube.requests == []  # refused before anything was sent


def test_a_kubeconfig_server_without_a_scheme_is_plain_http_and_refused_with_a_token(
    kube, shipped, kube_settings, tmp_path
):
    """urllib3 takes a URL without a scheme as http: the token went to the double in clear text, even with
    kubernetes.insecure: true for a loopback address (only an explicit http:// may be plain)."""
    bare = kube.url.split("://", 1)[1]
    config = kubeconfig(tmp_path / "config", bare, kube.token)
    settings = kube_settings(
        model=shipped.model, kubernetes={"server": None, "token": None, "insecure": True, "kubeconfig": str(config)}
    )
    with pytest.raises(ConfigError, match=rf"server {bare} is plain http and the user's credentials"):
        deploy_to_test_env.run(settings)
    assert kube.requests == []
    # a user:password in the server URL is not repeated in the error
    config = kubeconfig(tmp_path / "config2", kube.url.replace("http://", "http://ci:pa55word@"), kube.token)
    settings = kube_settings(
        model=shipped.model, kubernetes={"server": None, "token": None, "insecure": False, "kubeconfig": str(config)}
    )
    with pytest.raises(ConfigError, match=r"server http://127\.0\.0\.1:\d+ is plain http") as caught:
        deploy_to_test_env.run(settings)
    assert "pa55word" not in str(caught.value) and kube.requests == []
