"""`mlops monitor`: the live PSI per feature and the top alerts of a model server, in a terminal.

PSI, values counted and outliers per feature come from the server itself (`GET /v1/drift`, since
it started, and `GET /metrics`). Alerts come from Prometheus' `/api/v1/alerts` when a Prometheus
is given (firing before pending, critical before warning); without one they are computed from the
same figures with the thresholds of deploy/monitoring (drift PSI, outlier share, 5xx ratio), so an
engineer without Grafana still sees what would page.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import httpx
from pydantic import BaseModel, ConfigDict

from .config import Settings
from .errors import TemporaryError, UsageError
from .state import State

Level = Literal["ok", "warning", "critical", "few values", "no data"]
SEVERITY_ORDER = {"critical": 0, "error": 0, "warning": 1, "info": 2}
OUTLIER_RATIO = 0.05
ERROR_RATIO = 0.05


class FeatureDrift(BaseModel):
    model_config = ConfigDict(frozen=True)
    feature: str
    psi: Optional[float]
    observations: int
    outliers: int
    level: Level


class AlertLine(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    severity: str
    state: str
    summary: str
    labels: dict[str, str]
    since: Optional[str] = None


class MonitorResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    url: str
    model: Optional[str]
    window: str
    features: list[FeatureDrift]
    drift_module: bool
    predict_requests: int
    predict_5xx: int
    alerts: list[AlertLine]
    alerts_source: str

    def lines(self) -> list[str]:
        out = [f"server     {self.url}" + (f" ({self.model})" if self.model else ""),
               f"requests   {self.predict_requests} predictions, {self.predict_5xx} answered 5xx ({self.window})"]
        if not self.drift_module:
            out.append("drift      the server has no drift module: no PSI")
        else:
            out.append(f"{'feature':<28} {'PSI':>8} {'values':>9} {'outliers':>9}  level   ({self.window})")
            for f in self.features:
                psi = "-" if f.psi is None else f"{f.psi:.4f}"
                out.append(f"{f.feature:<28} {psi:>8} {f.observations:>9} {f.outliers:>9}  {f.level}")
        if not self.alerts:
            out.append(f"alerts     none ({self.alerts_source})")
        else:
            out.append(f"alerts     top {len(self.alerts)} ({self.alerts_source})")
            for a in self.alerts:
                where = ", ".join(f"{k}={v}" for k, v in sorted(a.labels.items()) if k in ("job", "feature", "pod", "reason"))
                head = f"  {a.state:<8} {a.severity:<8} {a.name}" + (f" {where}" if where else "")
                out.append(head + (f": {a.summary}" if a.summary else ""))
        return out


def server_url(settings: Settings) -> str:
    if settings.monitor.url:
        return settings.monitor.url.rstrip("/")
    prod = State.load(settings.workdir).deployments.get("prod")
    if prod is None:
        raise UsageError("no server to look at: pass --url (or monitor.url), or run rolling-update first")
    return prod.url.rstrip("/")


def _get(client: httpx.Client, url: str, what: str) -> httpx.Response:
    try:
        return client.get(url)
    except httpx.HTTPError as exc:
        raise TemporaryError(f"cannot reach {what} at {url}: {type(exc).__name__}: {exc}".rstrip(": ")) from None


def _metrics(text: str) -> dict[str, Any]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, Any] = {"requests": 0, "errors": 0, "outliers": {}, "outlier_rows": 0.0, "rows": 0.0,
                           "model": None}
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        raise TemporaryError(f"the server's /metrics is not Prometheus text: {exc}") from None
    for family in families:
        for s in family.samples:
            if s.name == "mlops_http_requests_total" and s.labels.get("route") == "/v1/predict":
                out["requests"] += int(s.value)
                if s.labels.get("status", "").startswith("5"):
                    out["errors"] += int(s.value)
            elif s.name == "mlops_outliers_total":
                out["outliers"][s.labels.get("feature", "")] = int(s.value)
            elif s.name == "mlops_outlier_instances_total":
                out["outlier_rows"] = max(out["outlier_rows"], s.value)
            elif s.name == "mlops_batch_size_rows_sum":
                out["rows"] = s.value
            elif s.name == "mlops_model_info" and s.value == 1:
                out["model"] = f"{s.labels.get('name')}@{s.labels.get('version')}"
    return out


def _level(psi: Optional[float], observations: int, settings: Settings) -> Level:
    m = settings.monitor
    if psi is None:
        return "no data"
    if observations < m.min_observations:
        return "few values"
    return "critical" if psi > m.psi_critical else "warning" if psi > m.psi_warning else "ok"


def _prometheus_alerts(client: httpx.Client, base: str, job: Optional[str]) -> list[AlertLine]:
    r = _get(client, f"{base.rstrip('/')}/api/v1/alerts", "Prometheus")
    try:
        alerts = r.json()["data"]["alerts"]
    except (ValueError, KeyError, TypeError):
        raise TemporaryError(f"Prometheus at {base} answered {r.status_code} without an alert list") from None
    lines = [AlertLine(name=a["labels"].get("alertname", "?"), severity=a["labels"].get("severity", "none"),
                       state=a.get("state", "?"), summary=a.get("annotations", {}).get("summary", ""),
                       labels=a["labels"], since=a.get("activeAt"))
             for a in alerts if job is None or a["labels"].get("job") == job]
    return sorted(lines, key=lambda a: (a.state != "firing", SEVERITY_ORDER.get(a.severity, 3), a.since or ""))


def _computed_alerts(features: list[FeatureDrift], m: dict[str, Any], settings: Settings) -> list[AlertLine]:
    out = []
    if m["requests"] and m["errors"] / m["requests"] > ERROR_RATIO:
        out.append(AlertLine(name="MlopsHighErrorRatio", severity="critical", state="firing", labels={},
                             summary=f"{m['errors'] / m['requests']:.1%} of predictions answered 5xx"))
    for f in sorted(features, key=lambda f: -(f.psi or 0)):
        if f.level in ("warning", "critical"):
            limit = settings.monitor.psi_critical if f.level == "critical" else settings.monitor.psi_warning
            out.append(AlertLine(name="MlopsFeatureDrift", severity=f.level, state="firing",
                                 labels={"feature": f.feature},
                                 summary=f"feature {f.feature} drifted (PSI {f.psi:.3f} > {limit:g})"))
    if m["rows"] and m["outlier_rows"] / m["rows"] > OUTLIER_RATIO:
        out.append(AlertLine(name="MlopsHighOutlierRate", severity="warning", state="firing", labels={},
                             summary=f"{m['outlier_rows'] / m['rows']:.1%} of instances are outliers"))
    return sorted(out, key=lambda a: SEVERITY_ORDER.get(a.severity, 3))


def snapshot(settings: Settings, job: Optional[str] = None, top: int = 5) -> MonitorResult:
    url = server_url(settings)
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--url must be an http(s) URL, got {url!r}")
    with httpx.Client(timeout=settings.monitor.timeout_s) as client:
        metrics_r = _get(client, f"{url}/metrics", "the model server")
        if metrics_r.status_code != 200:
            raise TemporaryError(f"{url}/metrics answered {metrics_r.status_code}: is this an mlops model server?")
        m = _metrics(metrics_r.text)
        drift_r = _get(client, f"{url}/v1/drift", "the model server")
        features: list[FeatureDrift] = []
        if drift_r.status_code == 200:
            try:
                report = drift_r.json()["features"]
                for name, f in report.items():
                    features.append(FeatureDrift(feature=name, psi=f["psi"], observations=f["observations"],
                                                 outliers=m["outliers"].get(name, 0),
                                                 level=_level(f["psi"], f["observations"], settings)))
            except (ValueError, KeyError, TypeError, AttributeError):
                raise TemporaryError(f"{url}/v1/drift answered something that is not a drift report") from None
        elif drift_r.status_code != 404:
            raise TemporaryError(f"{url}/v1/drift answered {drift_r.status_code}")
        if settings.monitor.prometheus_url:
            alerts = _prometheus_alerts(client, settings.monitor.prometheus_url, job)
            source = f"Prometheus {settings.monitor.prometheus_url}"
        else:
            alerts = _computed_alerts(features, m, settings)
            source = "computed from the server's figures since it started; give --prometheus for the real ones"
    return MonitorResult(url=url, model=m["model"], window="since the server started", features=features,
                         drift_module=drift_r.status_code == 200, predict_requests=m["requests"],
                         predict_5xx=m["errors"], alerts=alerts[:top], alerts_source=source)
