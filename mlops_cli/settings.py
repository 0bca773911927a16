"""Typed settings: the models of every section of the configuration (docs/configuration.md is generated from them).

Every key of the file has a field here with a docstring; an unknown or ill-typed key is an
error that names the key and where it came from. mlops_cli.config loads them (file, environment, flags).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from .secrets import secret_value
from .thresholds import check_conditions

DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: an address whose traffic never leaves this machine. Not `x.localhost`
    (a resolver without RFC 6761's rule sends that name to DNS, which may answer anything)."""
    import ipaddress

    host = host.strip().strip("[]").lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def registry_host(registry: str) -> str:
    """`host` of `host[:port][/path]` (an IPv6 address in brackets keeps them off)."""
    hostport = registry.split("/")[0]
    if hostport.startswith("["):
        return hostport[1:].split("]")[0]
    return hostport.rsplit(":", 1)[0] if hostport.count(":") == 1 else hostport


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StoreSettings(Section):
    path: Path | None = None
    """Directory of the local model store; default `<workdir>/store`."""


class ValidationSettings(Section):
    thresholds: dict[str, str] = Field(default_factory=dict)
    """Metric name -> condition, e.g. `accuracy: ">= 0.9"`; every one must hold."""
    validator_tag: str | None = "validated"
    """Tag the validator puts on a model that passed its checks; empty or null turns the check off."""
    allow_breaking: bool = False
    """Accept a breaking change of the input/output schema against the deployed model."""
    holdout: HoldoutSettings | None = None
    """Evaluate the model on a holdout dataset (CSV or Parquet, a local path or s3://bucket/key)."""
    max_regression: dict[str, float] = Field(default_factory=dict)
    """Metric -> largest allowed drop against the model now in prod, e.g. `accuracy: 0.01` (holdout scores when
    a holdout is configured, else reported metrics); lower-is-better metrics (rmse, mae) may rise by at most it."""
    metric_directions: dict[str, Literal["higher", "lower"]] = Field(default_factory=dict)
    """Metric -> which way is better (`higher` or `lower`), for a metric in max_regression whose direction mlops
    does not know by name (known: accuracy, f1, roc_auc, r2, precision, recall...; lower: loss, log_loss, mse,
    rmse, mae, error..., also with a prefix such as `val/rmse`, `val_loss`); declared here wins."""
    allow_no_prod: bool = False
    """With max_regression set: pass when no model is in prod yet (else that fails: nothing to compare with)."""
    verdict_tags: dict[str, str] = Field(
        default_factory=lambda: {"passed": "mlops:validated", "failed": "mlops:rejected"}
    )
    """Tags written back to the source (ClearML) with the verdict: `passed` and `failed`; empty values write none."""
    allow_no_thresholds: bool = False
    """Pass a model with no metric checked at all (no `thresholds`, no holdout thresholds); else that is refused."""
    load_timeout_s: float = Field(120.0, gt=0, le=3600)
    """Trial run (the server's code loads the model and answers the examples, in a child process): time bound."""
    load_memory_mb: int = Field(4096, ge=256)
    """Trial run: the child's address-space bound (RLIMIT_AS), in MiB; a model that needs more fails validation."""

    @field_validator("thresholds")
    @classmethod
    def _conditions(cls, value: dict[str, str]) -> dict[str, str]:
        check_conditions(value)
        return value


HOLDOUT_METRICS = {"classification": ("accuracy", "f1", "roc_auc"), "regression": ("rmse", "mae", "r2")}


class HoldoutSettings(Section):
    path: str = Field(min_length=1)
    """The dataset: a local path or `s3://bucket/key` (read with the `s3` settings), `.csv` or `.parquet`."""
    target: str = "target"
    """The column holding the true value (a class label or index, or a number); every other column is an input."""
    format: Literal["csv", "parquet"] | None = None
    """Default: from the file's suffix."""
    thresholds: dict[str, str] = Field(default_factory=dict)
    """Holdout metric -> condition: accuracy, f1 (macro), roc_auc (one-vs-rest) or rmse, mae, r2."""

    @field_validator("thresholds")
    @classmethod
    def _conditions(cls, value: dict[str, str]) -> dict[str, str]:
        known = sorted({m for names in HOLDOUT_METRICS.values() for m in names})
        for metric in value:
            if metric not in known:
                raise ValueError(f"unknown holdout metric {metric!r}; known: {', '.join(known)}")
        check_conditions(value)
        return value


class ClearMLSettings(Section):
    api_host: str | None = None
    """ClearML API server, e.g. `https://api.clear.ml`; default: CLEARML_API_HOST or the clearml.conf."""
    files_host: str | None = None
    """ClearML files server; default: CLEARML_FILES_HOST or the clearml.conf."""
    access_key: str | None = None
    """API access key; default: CLEARML_API_ACCESS_KEY or the clearml.conf."""
    secret_key: SecretStr | None = None
    """API secret key (MLOPS_CLEARML__SECRET_KEY); default: CLEARML_API_SECRET_KEY or the clearml.conf. Never printed."""
    config_file: Path | None = None
    """An existing clearml.conf to start from; default: CLEARML_CONFIG_FILE, else ~/clearml.conf if present."""
    retries: int = Field(2, ge=0, le=10)
    """HTTP retries of a failed API call (the SDK's own default retries for minutes)."""
    timeout_s: float = Field(10.0, gt=0, le=300)
    """Give up on an unreachable ClearML server after about this long."""
    write_back: bool = True
    """Write the verdict and deployments back to the model as tags and metadata."""


class S3Settings(Section):
    endpoint_url: str | None = None
    """S3 endpoint, e.g. `http://minio.example:9000`; default: AWS."""
    region: str | None = None
    """Region; default: AWS_DEFAULT_REGION or the profile's, else us-east-1."""
    access_key_id: str | None = None
    """Access key; default: AWS_ACCESS_KEY_ID or the profile's."""
    secret_access_key: SecretStr | None = None
    """Secret key (MLOPS_S3__SECRET_ACCESS_KEY); default: AWS_SECRET_ACCESS_KEY or the profile's. Never printed."""
    profile: str | None = None
    """A profile of ~/.aws/credentials; default: AWS_PROFILE."""
    addressing_style: Literal["path", "virtual", "auto"] = "path"
    """Path-style (MinIO, SeaweedFS) or virtual-hosted buckets."""
    verify_tls: bool = True
    """Check the endpoint's TLS certificate."""
    retries: int = Field(2, ge=0, le=10)
    """Extra attempts of a request that failed with a connection error or a 5xx."""
    timeout_s: float = Field(10.0, gt=0, le=300)
    """Connect and read timeout of each request."""


class AuditSettings(Section):
    deployed_tags: dict[str, str] = Field(default_factory=lambda: {"test": "deployed:test", "prod": "deployed:prod"})
    """Environment -> tag put on the model (in its source, e.g. ClearML) once it is deployed there."""


class UnitTestSettings(Section):
    project_dir: Path | None = None
    """The model's project; its `tests/` run when `paths` is empty."""
    paths: list[str] = Field(default_factory=list)
    """Test paths for pytest; empty: the project's tests/, else the toolkit's own smoke suite (see `selftest`)."""
    timeout_s: float = Field(900, gt=0)
    """Give up on the test run after this many seconds."""
    selftest: bool = False
    """With no project tests (no `project_dir`, no `paths`): run the toolkit's own smoke suite (several seconds: it trains, validates and serves a demo model); false: the stage is skipped, the reason in state and in the JUnit XML."""


class AssembleSettings(Section):
    base_image: str = "python:3.11-slim"
    """Base image the bundle's Dockerfile starts from."""
    max_body_bytes: int = Field(1_048_576, gt=0)
    """Largest request body the server accepts (413 above it)."""
    drain_seconds: float = Field(1.0, ge=0)
    """On shutdown, how long the server keeps answering (telling clients to reconnect) before it stops accepting."""
    server_limits: dict[str, float] = Field(default_factory=dict)
    """More keys of the bundle's spec.json `server` section: the server's own bounds (docs/bundle.md "Limits"),
    e.g. `{max_inflight_bytes: 16777216, max_rows: 50000}`; checked by assemble-server."""


class BuildSettings(Section):
    builder: str | None = None
    """Image builder: `buildah` or `docker`; none: build-image is skipped and the local target runs the bundle."""
    registry: str | None = None
    """Registry to push to, `host[:port][/path]` (Artifactory speaks Docker Registry v2)."""
    repository: str | None = None
    """Repository in the registry; default: the model's name."""
    insecure: bool = False
    """Talk plain HTTP / skip TLS verification to the registry. Only for a registry on this machine: with
    credentials (username, password) the registry must be a loopback address (127.0.0.1, ::1, localhost)."""
    username: str | None = None
    """Registry user (or MLOPS_BUILD__USERNAME)."""
    password: SecretStr | None = None
    """Registry password or token (MLOPS_BUILD__PASSWORD); never printed, never stored in state."""
    password_file: Path | None = None
    """A file holding the registry password, instead of `password`."""
    retries: int = Field(3, ge=0, le=10)
    """Extra attempts of a push that failed with a connection error or a 5xx, with backoff."""
    retry_backoff_s: float = Field(1.0, ge=0)
    """Wait before the first retry; doubles each time."""
    timeout_s: float = Field(1800, gt=0)
    """Give up on a build after this many seconds."""
    storage_driver: str | None = None
    """buildah: `--storage-driver` (e.g. `vfs` where overlay is not available)."""
    isolation: str | None = None
    """buildah: `--isolation` (`chroot` on agents without user namespaces)."""
    docker_host: str | None = None
    """docker: the engine's API, e.g. `unix:///run/podman/podman.sock`; default: DOCKER_HOST or Docker's default."""
    git_commit: str | None = None
    """Source git commit for the image label; default: `git rev-parse HEAD` of the current directory, if any."""
    wheel_cache: Path | None = None
    """Where the wheels of each distinct pinned requirements.txt are kept between builds;
    default: $XDG_CACHE_HOME/mlops/wheels or ~/.cache/mlops/wheels."""
    cache_wheels: bool = True
    """Reuse downloaded wheels (checked against their recorded sha256); false: download every build."""

    @model_validator(mode="after")
    def _credentials_only_over_tls(self) -> BuildSettings:
        credentials = self.username or self.password is not None or self.password_file is not None
        if self.insecure and credentials and self.registry and not is_loopback(registry_host(self.registry)):
            raise ValueError(
                f"insecure: true would send the registry credentials to {registry_host(self.registry)} "
                "without TLS; turn build.insecure off (the registry needs a certificate) or use a "
                "registry on this machine (127.0.0.1, localhost)"
            )
        return self

    def wheel_cache_dir(self) -> Path | None:
        if not self.cache_wheels:
            return None
        if self.wheel_cache is not None:
            return self.wheel_cache
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlops" / "wheels"

    def registry_password(self) -> str | None:
        return secret_value(self.password, self.password_file, "build.password_file")


class EnvironmentSettings(Section):
    host: str = "127.0.0.1"
    """Address the local target binds."""
    port: int = Field(8700, ge=1, le=65535)
    """Port the local target serves on."""


class ProdEnvironmentSettings(EnvironmentSettings):
    port: int = Field(8701, ge=1, le=65535)
    """Port the local target serves on."""


class DeploySettings(Section):
    target: str = "local"
    """Deploy target: `local` (the bundle as a process), `container` (the built image, with podman) or `kubernetes`."""
    podman: str = "podman"
    """container target: the podman binary."""
    run_as: str | None = None
    """container target: `--user UID:GID`, e.g. `1000950000:0` to run as OpenShift does; default: the image's user."""
    ready_timeout_s: float = Field(60.0, gt=0)
    """How long a new server may take to become ready."""
    stop_timeout_s: float = Field(30.0, gt=0)
    """How long a server may take to drain and exit before it is killed."""
    restart: Literal["on-failure", "no"] = "on-failure"
    """local and container targets: restart a server that dies while serving (a small supervisor process; podman --restart=on-failure)."""
    test: EnvironmentSettings = Field(default_factory=EnvironmentSettings)
    """The test environment (deploy-test, smoke-test)."""
    prod: ProdEnvironmentSettings = Field(default_factory=ProdEnvironmentSettings)
    """The production environment (rolling-update)."""


class KubeNamespaces(Section):
    test: str = "mlops-test"
    """Namespace (OpenShift project) of the test environment; it must exist."""
    prod: str = "mlops-prod"
    """Namespace (OpenShift project) of production; it must exist."""

    @field_validator("test", "prod")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not DNS_LABEL_RE.match(value) or len(value) > 63:
            raise ValueError(
                f"{value!r} is not a namespace name (lower-case letters, digits and '-', at most 63, "
                "starting and ending with a letter or digit)"
            )
        return value


class KubeResources(Section):
    cpu_request: str = "250m"
    """CPU the scheduler reserves for each pod (also the base of the HPA's CPU percentage)."""
    memory_request: str = "320Mi"
    """Memory the scheduler reserves for each pod: what the server uses at most under its default bounds
    (baseline + max_batch_bytes x 25 + max_inflight_bytes x 4 + margin, docs/bundle.md "Limits")."""
    cpu_limit: str = "1"
    """CPU limit of each pod."""
    memory_limit: str = "512Mi"
    """Memory limit of each pod: at least that formula plus the model's size (render refuses less)."""


class KubeCustomMetric(Section):
    name: str
    """Pods metric served by a Prometheus adapter, e.g. `mlops_http_requests_per_second` (the rule that serves it from
    the server's mlops_http_requests_total: deploy/monitoring/prometheus-adapter.yaml)."""
    target_average_value: str
    """Target average value per pod, as a Kubernetes quantity, e.g. `20`."""


class KubernetesSettings(Section):
    flavour: Literal["openshift", "kubernetes"] = "openshift"
    """`openshift` (a Route with TLS edge) or `kubernetes` (an Ingress)."""
    name: str | None = None
    """Name of the Deployment, Service, Route/Ingress, HPA, PDB and ServiceMonitor; default: the model's name."""
    namespaces: KubeNamespaces = Field(default_factory=KubeNamespaces)
    """Namespace per environment."""
    kubeconfig: Path | None = None
    """Kubeconfig file; default: KUBECONFIG, else ~/.kube/config. Not used when `server` is set or in a cluster."""
    context: str | None = None
    """Kubeconfig context; default: the file's current-context."""
    server: str | None = None
    """API server URL, used with `token` instead of a kubeconfig (MLOPS_KUBERNETES__SERVER)."""
    token: SecretStr | None = None
    """Bearer token for `server` (MLOPS_KUBERNETES__TOKEN); never printed, never stored in state."""
    ca_file: Path | None = None
    """CA bundle that signs `server`'s certificate; default: the system's."""
    insecure: bool = False
    """Skip TLS verification of `server`. Only for a test cluster. A plain `http://` server with a token is
    refused (the token would go out in clear text) unless it is a loopback address and this is true."""
    hosts: dict[str, str] = Field(default_factory=dict)
    """Route/Ingress host per environment, e.g. `{prod: iris.apps.example.com}`; OpenShift picks one when unset."""
    ingress_class: str | None = None
    """kubernetes flavour: the Ingress's ingressClassName."""
    tls_secret: str | None = None
    """kubernetes flavour: a Secret with the Ingress's TLS certificate."""
    replicas: int = Field(2, ge=1, le=1000)
    """Replicas of a new Deployment (the HPA changes them later)."""
    min_replicas: int = Field(2, ge=1, le=1000)
    """Lower bound of the HorizontalPodAutoscaler."""
    max_replicas: int = Field(5, ge=1, le=1000)
    """Upper bound of the HorizontalPodAutoscaler."""
    cpu_target_percent: int = Field(70, ge=1, le=1000)
    """HPA target: average CPU use as a percentage of the request."""
    custom_metric: KubeCustomMetric | None = None
    """An extra HPA metric from Prometheus (through a custom metrics adapter)."""
    resources: KubeResources = Field(default_factory=KubeResources)
    """Requests and limits of each pod."""
    port: int = Field(8080, ge=1024, le=65535)
    """Port the server listens on inside the pod (non-root: above 1023)."""
    startup_timeout_s: int = Field(300, ge=10)
    """How long the startup probe lets a pod load its model before the kubelet restarts it."""
    termination_grace_s: int = Field(30, ge=1)
    """terminationGracePeriodSeconds: time for the pod to finish in-flight requests."""
    prestop_sleep_s: int = Field(5, ge=0)
    """preStop pause so the endpoints controller and routers stop sending before the server drains."""
    progress_deadline_s: int = Field(300, ge=10)
    """progressDeadlineSeconds: a rollout with no progress this long fails (ProgressDeadlineExceeded)."""
    rollout_timeout_s: float = Field(600.0, gt=0)
    """Overall bound on waiting for a rollout (or a rollback)."""
    poll_interval_s: float = Field(2.0, gt=0)
    """How often the rollout's state is read while waiting."""
    api_timeout_s: float = Field(10.0, gt=0)
    """Timeout of each API request (connect and read)."""
    api_retries: int = Field(3, ge=0, le=10)
    """Extra attempts when the API server cannot be reached or answers 409 Conflict, 429 or 5xx."""
    retry_backoff_s: float = Field(1.0, ge=0)
    """Wait before the first retry; doubles each time."""
    service_monitor: bool = True
    """Render a ServiceMonitor (needs the Prometheus Operator's CRD in the cluster)."""
    kubernetes_version: str = Field("1.30", pattern=r"^1\.\d+$")
    """Kubernetes version the rendered manifests are validated against (OpenShift 4.17 is 1.30)."""
    allow_tag: bool = False
    """Accept an image given by a moving tag for prod (`--allow-tag`); by default prod takes digests only."""
    field_manager: str = Field("mlops", min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")
    """Server-side apply's field manager: the name the API server records as owner of the fields mlops applies."""
    force_conflicts: bool = False
    """Take over fields another field manager owns when applying (`--force`); by default that is an error naming it."""
    service_account: str | None = Field(None, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253)
    """The pods' service account; default: a ServiceAccount rendered for the app (its name, no API token mounted)."""
    image_pull_secrets: list[str] = Field(default_factory=list)
    """Secrets the kubelet pulls the image with (a private registry), on the pods and the rendered ServiceAccount."""
    topology_spread: bool = True
    """Spread the pods over zones and nodes (topologySpreadConstraints, maxSkew 1, ScheduleAnyway)."""
    network_policy: bool = True
    """Render a NetworkPolicy: only the router/ingress and monitoring namespaces reach the pods' port."""
    network_policy_from: list[str] | None = None
    """Namespaces let in (by kubernetes.io/metadata.name); default per flavour: OpenShift's ingress and monitoring
    namespaces (and host-network routers), or `ingress-nginx` and `monitoring`."""
    relay_image: str | None = None
    """`render --kustomize`: an image with mlops (and its kafka extra) to run `mlops alert-relay` from, by digest;
    unset: no relay manifests."""
    monitoring_namespace: str | None = None
    """`render --kustomize`: namespace of the relay, dashboards and PrometheusRule; default: the prod namespace."""
    traffic_router: Literal["route", "nginx", "gateway"] | None = None
    """How users' traffic reaches the pods, and how a canary release (`rollout.strategy: canary`) splits it:
    `route` (an OpenShift Route; a canary is its `alternateBackends`, weighted), `nginx` (an Ingress for
    Ingress-NGINX; a canary is a second Ingress with `nginx.ingress.kubernetes.io/canary-weight`) or `gateway`
    (a Gateway API HTTPRoute attached to `kubernetes.gateway`; a canary is a second weighted backendRef).
    Default: `route` on the openshift flavour, `nginx` on kubernetes. `route` needs the openshift flavour."""
    gateway: str | None = Field(None, pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?/)?[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    """traffic_router `gateway`: the Gateway the HTTPRoute attaches to, `NAME` or `NAMESPACE/NAME` (TLS, if any,
    ends at its listener; the recorded URL is https://HOST)."""
    canary_replicas: int = Field(1, ge=1, le=1000)
    """Replicas of the canary Deployment (`<name>-canary`) while a canary release runs (no HPA scales it)."""

    @field_validator("server")
    @classmethod
    def _server_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not re.match(r"^https?://[^\s/?#@]+(/[^\s?#]*)?$", value):
            raise ValueError(
                f"{value!r} is not an API server URL (https://HOST[:PORT], as `oc whoami --show-server` prints it)"
            )
        return value

    @model_validator(mode="after")
    def _token_only_over_tls(self) -> KubernetesSettings:
        if self.server and self.token is not None and self.server.lower().startswith("http://"):
            from urllib.parse import urlsplit

            if not (is_loopback(urlsplit(self.server).hostname or "") and self.insecure):
                raise ValueError(
                    f"server {self.server} is plain http: the token would go out in clear text; use "
                    "https:// (plain http only to a loopback address, with kubernetes.insecure: true)"
                )
        return self

    @field_validator("hosts")
    @classmethod
    def _known_envs(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - {"test", "prod"})
        if unknown:
            raise ValueError(f"unknown environment(s) {', '.join(unknown)}; known: test, prod")
        return value

    @model_validator(mode="after")
    def _bounds(self) -> KubernetesSettings:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        if self.replicas > self.max_replicas:  # the HPA would scale a new Deployment down at once
            raise ValueError(f"replicas ({self.replicas}) is above max_replicas ({self.max_replicas})")
        return self

    @model_validator(mode="after")
    def _router(self) -> KubernetesSettings:
        if self.traffic_router == "route" and self.flavour != "openshift":
            raise ValueError(
                "traffic_router route is an OpenShift Route: it needs flavour openshift "
                "(on plain Kubernetes use nginx or gateway)"
            )
        if self.router == "gateway" and not self.gateway:
            raise ValueError("traffic_router gateway needs kubernetes.gateway (the Gateway's NAME or NAMESPACE/NAME)")
        return self

    @property
    def router(self) -> str:
        """The traffic router in effect: `traffic_router`, else the flavour's (route on OpenShift, else nginx)."""
        return self.traffic_router or ("route" if self.flavour == "openshift" else "nginx")


class SmokeSettings(Section):
    requests: int = Field(20, ge=1, le=10_000)
    """How many timed requests the latency budget is measured on."""
    p95_ms: float = Field(500.0, gt=0)
    """Latency budget: the 95th percentile of the timed requests, in milliseconds."""
    timeout_s: float = Field(10.0, gt=0)
    """Timeout of each request."""
    protocol: Literal["v1", "v2"] = "v1"
    """`v1`: `POST /v1/predict`; `v2`: the same requests as Open Inference Protocol named tensors to
    `POST /v2/models/{name}/infer`."""


class SlackSettings(Section):
    webhook_url: SecretStr | None = None
    """Slack incoming webhook URL (a secret: never printed); or use webhook_url_file."""
    webhook_url_file: Path | None = None
    """File holding the webhook URL (e.g. a mounted Kubernetes/Jenkins secret)."""
    timeout_s: float = Field(10.0, gt=0)
    """Timeout of one webhook request."""
    bot_token: SecretStr | None = None
    """Slack bot token (xoxb-..., a secret) for the Web API's chat.postMessage: threads and any channel; or bot_token_file."""
    bot_token_file: Path | None = None
    """File holding the bot token (a mounted secret)."""
    channel: str | None = None
    """Channel the bot posts to when a notification names none (with bot_token)."""
    api_url: str = Field("https://slack.com/api/", pattern=r"^https?://")
    """Base URL of the Slack Web API."""

    def url(self) -> str | None:
        return secret_value(self.webhook_url, self.webhook_url_file, "notify.slack.webhook_url_file")

    def token(self) -> str | None:
        return secret_value(self.bot_token, self.bot_token_file, "notify.slack.bot_token_file")


class KafkaSettings(Section):
    bootstrap_servers: list[str] = Field(default_factory=list)
    """Kafka brokers, `host:port` each (a comma-separated string is accepted too)."""
    topic: str = Field("mlops.alerts", min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")
    """Topic the kafka notifier publishes each notification to, as one JSON event."""
    client_id: str = "mlops"
    """Client id the broker sees (quotas, logs)."""
    security_protocol: str = Field("PLAINTEXT", pattern=r"^(PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL)$")
    """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""
    sasl_mechanism: str | None = Field(None, pattern=r"^(PLAIN|SCRAM-SHA-256|SCRAM-SHA-512)$")
    """With SASL: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."""
    sasl_username: str | None = None
    """SASL user name."""
    sasl_password: SecretStr | None = None
    """SASL password (a secret: MLOPS_NOTIFY__KAFKA__SASL_PASSWORD)."""
    ssl_cafile: Path | None = None
    """CA bundle to verify the brokers' certificates (SSL, SASL_SSL)."""
    timeout_s: float = Field(10.0, gt=0)
    """How long one publish may wait for the brokers (connection, metadata, acknowledgement)."""

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_port(cls, value: list[str]) -> list[str]:
        for server in value:
            host, _, port = server.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{server!r} is not host:port")
        return value


class NotifySettings(Section):
    notifiers: list[str] = Field(default_factory=list)
    """Where rollout outcomes go, e.g. `[slack]`; empty: nowhere."""
    retries: int = Field(3, ge=0, le=10)
    """Retries of a delivery that failed for a reason worth retrying (unreachable, 429, 5xx)."""
    retry_backoff_s: float = Field(1.0, ge=0)
    """First pause between retries; it doubles each time."""
    slack: SlackSettings = Field(default_factory=SlackSettings)
    """The slack notifier."""
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    """The kafka notifier (used by `mlops alert-relay`)."""


class RelaySettings(Section):
    host: str = "127.0.0.1"
    """Address `mlops alert-relay` listens on (0.0.0.0 in a pod)."""
    port: int = Field(9095, ge=1, le=65535)
    """Port `mlops alert-relay` listens on."""
    token: SecretStr | None = None
    """Shared token senders present as `Authorization: Bearer <token>` (a secret: MLOPS_RELAY__TOKEN); or token_file."""
    token_file: Path | None = None
    """File holding the shared token (a mounted secret)."""
    sinks: list[str] = Field(default_factory=list)
    """Notifiers each alert goes to, e.g. `[slack, kafka]`; empty: notify.notifiers."""
    queue_dir: Path | None = None
    """Where undelivered alerts wait on disk, one directory per sink; default `<workdir>/relay-queue`."""
    queue_max: int = Field(10_000, ge=1)
    """Most alerts waiting per sink; beyond it a webhook is refused with 503 (the sender retries)."""
    retries: int = Field(3, ge=0, le=100)
    """Failed attempts to a sink before it is reported down (logged, `mlops_relay_sink_up` 0); it is still retried."""
    retry_backoff_s: float = Field(1.0, gt=0)
    """First pause after a failed delivery; it doubles up to max_backoff_s."""
    max_backoff_s: float = Field(60.0, gt=0)
    """Longest pause between two attempts to a sink that is down."""
    max_body_bytes: int = Field(1_048_576, gt=0)
    """Largest webhook body accepted (413 above it)."""
    runbook_base_url: str | None = None
    """Prefix for relative runbook_url annotations (e.g. the repository's web URL), so Slack links work."""
    dead_max: int = Field(1000, ge=1)
    """Most dead letters kept per sink (in <queue_dir>/<sink>/dead); beyond it the oldest are deleted, each logged."""
    tls_cert_file: Path | None = None
    """PEM certificate (chain) the relay serves HTTPS with; with tls_key_file. Senders' tokens need TLS."""
    tls_key_file: Path | None = None
    """PEM private key of tls_cert_file (a mounted secret)."""
    insecure: bool = False
    """Serve plain http without a certificate: only on a loopback host (127.0.0.1), else the senders' token
    would cross the network in clear text."""
    metrics_token: SecretStr | None = None
    """Token `GET /metrics` needs as `Authorization: Bearer <token>` (a secret: MLOPS_RELAY__METRICS_TOKEN); or
    metrics_token_file. None: /metrics is open (to whoever reaches its port; see metrics_port)."""
    metrics_token_file: Path | None = None
    """File holding metrics_token (a mounted secret)."""
    metrics_port: int | None = Field(None, ge=1, le=65535)
    """Serve `/metrics` on this port (of metrics_host) instead of the webhook port, e.g. one only the cluster's
    Prometheus may reach; it takes no webhooks; `/health/live` answers on both; with TLS set, it is HTTPS too."""
    metrics_host: str | None = None
    """Address of metrics_port; default: host."""

    def token_value(self) -> str | None:
        return secret_value(self.token, self.token_file, "relay.token_file")

    def metrics_token_value(self) -> str | None:
        return secret_value(self.metrics_token, self.metrics_token_file, "relay.metrics_token_file")


class ApprovalSettings(Section):
    required: bool = False
    """rolling-update refuses to run without `--approved-by` (the Jenkinsfile turns this on unless the job's
    configuration sets MLOPS_APPROVAL__REQUIRED=false)."""
    approved_by: str | None = Field(None, max_length=200)
    """Who approved this release (rolling-update --approved-by), e.g. "alice" or "slack:U456 via chatops-bot"."""
    triggered_by: str | None = Field(None, max_length=200)
    """Who asked for this release (--triggered-by), e.g. "bob" or "slack:U123 via chatops-bot"."""


class MonitorSettings(Section):
    url: str | None = None
    """Base URL of the model server `mlops monitor` looks at; default: the prod deployment in state.json."""
    prometheus_url: str | None = None
    """Prometheus to read the firing alerts from; none: alerts are computed from the server's own figures."""
    psi_warning: float = Field(0.1, gt=0)
    """PSI from which a feature counts as drifted (warning), as in deploy/monitoring."""
    psi_critical: float = Field(0.25, gt=0)
    """PSI from which a feature's drift is critical."""
    min_observations: int = Field(100, ge=0)
    """Fewer values than this: PSI is shown but raises no alert."""
    timeout_s: float = Field(10.0, gt=0)
    """Timeout of each request."""
    window_s: float = Field(10.0, gt=0, le=3600)
    """Without a Prometheus: seconds between the two scrapes of the server's counters that PSI is computed from."""

    @model_validator(mode="after")
    def _psi_levels_in_order(self) -> MonitorSettings:
        if self.psi_warning >= self.psi_critical:
            raise ValueError(f"psi_warning ({self.psi_warning:g}) must be below psi_critical ({self.psi_critical:g})")
        return self


class ChatOpsJenkinsSettings(Section):
    url: str | None = None
    """Jenkins' base URL, e.g. `https://jenkins.example.com/`; approval buttons must point under it."""
    user: str | None = None
    """The Jenkins user whose API token the service uses."""
    api_token: SecretStr | None = None
    """That user's API token (a secret: MLOPS_CHATOPS__JENKINS__API_TOKEN); or api_token_file."""
    api_token_file: Path | None = None
    """File holding the API token (a mounted secret)."""
    build_token: SecretStr | None = None
    """The job's "Trigger builds remotely" token, when the job has one (MLOPS_CHATOPS__JENKINS__BUILD_TOKEN)."""
    job: str = "mlops-release"
    """The release job (`folder/name` in folders): parameters MODEL_REF, TARGET, REQUESTED_BY, SLACK_CHANNEL,
    SLACK_THREAD_TS; approvals from Slack are accepted for its builds only."""
    test_job: str | None = None
    """A job that deploys to test only, for `deploy REF to test`; none: `to test` is refused."""
    rollback_job: str | None = "mlops-rollback"
    """The job `rollback prod` triggers (parameters ENV, REQUESTED_BY, SLACK_CHANNEL, SLACK_THREAD_TS): the one
    deploy/jenkins/jobs/mlops_rollback.groovy defines; none: `rollback` is refused."""
    input_id: str = "ReleaseApproval"
    """The id of the Jenkinsfile's `input` step that Approve/Reject answer."""
    timeout_s: float = Field(10.0, gt=0)
    """Timeout of each request to Jenkins."""
    queue_timeout_s: float = Field(600.0, gt=0)
    """How long to follow a queued build until it starts (gets a number)."""
    poll_s: float = Field(2.0, gt=0)
    """How often the queue item is read while waiting."""

    def token_value(self) -> str | None:
        return secret_value(self.api_token, self.api_token_file, "chatops.jenkins.api_token_file")


class ChatOpsLocalSettings(Section):
    workdir: Path | None = None
    """Work directory the local executor runs the pipeline in; default: the service's workdir."""
    stage_timeout_s: float = Field(3600.0, gt=0)
    """Give up on one stage after this long."""
    approval_gate: bool = True
    """`to prod` stops after smoke-test and posts Approve/Reject in the release thread; false: all seven stages at once."""
    approval_timeout_s: float = Field(3600.0, gt=0)
    """How long a release waits at the approval gate; then nothing is deployed (timed out)."""


class ChatOpsSettings(Section):
    host: str = "127.0.0.1"
    """Address `mlops chatops` listens on (0.0.0.0 in a pod)."""
    port: int = Field(3000, ge=1, le=65535)
    """Port `mlops chatops` listens on."""
    tls_cert_file: Path | None = None
    """Serve HTTPS with this certificate (PEM); none: plain HTTP (behind an OpenShift edge Route)."""
    tls_key_file: Path | None = None
    """The certificate's private key (PEM)."""
    signing_secret: SecretStr | None = None
    """The Slack app's signing secret (MLOPS_CHATOPS__SIGNING_SECRET); or signing_secret_file."""
    signing_secret_file: Path | None = None
    """File holding the signing secret (a mounted secret)."""
    bot_token: SecretStr | None = None
    """The app's bot token, `xoxb-...` (MLOPS_CHATOPS__BOT_TOKEN), for chat.postMessage/chat.update; or bot_token_file."""
    bot_token_file: Path | None = None
    """File holding the bot token (a mounted secret)."""
    slack_api_url: str = "https://slack.com/api/"
    """Slack Web API base URL."""
    response_url_prefix: str = "https://hooks.slack.com/"
    """Replies go only to response_url values under this prefix."""
    team_id: str | None = None
    """The Slack workspace (team ID, `T...`) allowed to send commands; none: any that knows the signing secret."""
    channels: list[str] = Field(default_factory=list)
    """Channel IDs (`C...`) commands and approvals are accepted in; empty: any channel."""
    users: dict[str, list[Literal["viewer", "deployer", "approver"]]] = Field(default_factory=dict)
    """Slack user ID -> roles (`viewer`: status, models; `deployer`: deploy, rollback; `approver`: approve)."""
    groups: dict[str, list[Literal["viewer", "deployer", "approver"]]] = Field(default_factory=dict)
    """Slack user group ID (`S...`) -> roles of its members (read with usergroups.users.list, refreshed regularly)."""
    group_refresh_s: float = Field(300.0, gt=0)
    """How often user group members are read again."""
    four_eyes: bool = True
    """The approver of a release must not be the person who requested it."""
    executor: Literal["jenkins", "local"] = "jenkins"
    """Who runs a release: `jenkins` (the release job) or `local` (`mlops` stages run by the service itself)."""
    default_env: Literal["test", "prod"] = "prod"
    """The environment of `deploy REF` without `to test|prod`."""
    jenkins: ChatOpsJenkinsSettings = Field(default_factory=ChatOpsJenkinsSettings)
    """The jenkins executor."""
    local: ChatOpsLocalSettings = Field(default_factory=ChatOpsLocalSettings)
    """The local executor."""
    queue_max: int = Field(1000, ge=1)
    """Most commands waiting for a worker; beyond it a command is answered `busy, try again` and not run."""
    workers: int = Field(8, ge=1, le=64)
    """Commands worked on at once (the local executor still runs one release at a time per workdir)."""
    models_source: Literal["local", "clearml"] = "local"
    """Where `models` looks: the local store (latest version carrying validation.validator_tag) or ClearML
    (models carrying validation.verdict_tags.passed)."""
    audit_log: Path | None = None
    """JSON-lines file of every decision (accepted, refused, approved, rejected); default `<workdir>/chatops-audit.jsonl`."""
    max_body_bytes: int = Field(65_536, gt=0)
    """Largest request body accepted from Slack (413 above it)."""

    def signing_secret_value(self) -> str | None:
        return secret_value(self.signing_secret, self.signing_secret_file, "chatops.signing_secret_file")

    def bot_token_value(self) -> str | None:
        return secret_value(self.bot_token, self.bot_token_file, "chatops.bot_token_file")


def _default_steps() -> list[dict[str, Any]]:
    return [
        {"set_weight": 10},
        {"pause": 60.0},
        {"analysis": "default"},
        {"set_weight": 50},
        {"pause": 120.0},
        {"analysis": "default"},
    ]


class RolloutSettings(Section):
    strategy: Literal["rolling", "canary"] = "rolling"
    """How `mlops rolling-update` replaces production: `rolling` (the new revision takes over at once, no failed
    request) or `canary` (beside the old one, traffic shifted by `steps`, judged by analysis; docs/canary.md)."""
    steps: list[dict[str, Any]] = Field(default_factory=_default_steps)
    """Canary steps in Argo Rollouts' words: `{set_weight: 10}`, `{pause: 60s}` (`{pause: {}}` waits for
    `mlops canary promote`), `{analysis: TEMPLATE}`; then promotion to 100 % and removal of the old revision."""
    analysis_retry_s: float = Field(10.0, gt=0, le=3600)
    """After an inconclusive analysis with canary_analysis.on_inconclusive `pause`: seconds to wait before retrying."""
    haproxy: str = "haproxy"
    """The HAProxy program the local and container targets put in front of the two revisions of a canary."""

    @field_validator("steps", mode="before")
    @classmethod
    def _steps(cls, value: Any) -> Any:
        from .canary.steps import parse_steps

        return parse_steps(value)


from .canary.analysis import CanaryAnalysisSettings  # noqa: E402  (its models live with the analysis)


class Settings(Section):
    workdir: Path = Path(".mlops")
    """Where state.json, bundles, logs and reports live."""
    model: str | None = None
    """Model reference, e.g. `local:iris@1`."""
    store: StoreSettings = Field(default_factory=StoreSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    unit_test: UnitTestSettings = Field(default_factory=UnitTestSettings)
    assemble: AssembleSettings = Field(default_factory=AssembleSettings)
    build: BuildSettings = Field(default_factory=BuildSettings)
    deploy: DeploySettings = Field(default_factory=DeploySettings)
    smoke: SmokeSettings = Field(default_factory=SmokeSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    relay: RelaySettings = Field(default_factory=RelaySettings)
    chatops: ChatOpsSettings = Field(default_factory=ChatOpsSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    clearml: ClearMLSettings = Field(default_factory=ClearMLSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)
    lock_wait_s: float = Field(0.0, ge=0, le=86400)
    """How long a stage waits for another run holding the workdir lock; 0 fails at once, naming the holder."""
    approval: ApprovalSettings = Field(default_factory=ApprovalSettings)
    canary_analysis: CanaryAnalysisSettings = Field(default_factory=CanaryAnalysisSettings)
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)
    """How rolling-update replaces production: rolling or canary (docs/canary.md)."""

    @property
    def store_path(self) -> Path:
        return self.store.path if self.store.path is not None else self.workdir / "store"


ValidationSettings.model_rebuild()
