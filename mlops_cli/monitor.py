"""`mlops monitor`: the live PSI per feature and the top alerts of a model server, in a terminal.

Live figures, never "since the server started": with a Prometheus, PSI and values per feature are
the last hour's, read from the recording rules of deploy/monitoring
(`namespace_job_feature:mlops_drift_psi:1h`, `...:mlops_drift_observations:increase1h`) for the
server's job (--job, or the job whose `mlops_model_info` names the server's model), and requests and
outliers are the last hour's increases. Without one, the server's `/metrics` is scraped twice
`window_s` seconds apart and PSI, values, outliers and the 5xx ratio come from the difference of the
counters. The output names the window. Alerts come from Prometheus' `/api/v1/alerts` when a
Prometheus is given (firing before pending, critical before warning); without one they are computed
from the same figures with the thresholds of deploy/monitoring, so an engineer without Grafana
still sees what would page.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict

from .errors import TemporaryError, UsageError
from .metrics_text import PREDICT_ROUTES_PROMQL, delta, parse_metrics
from .settings import Settings
from .state import State

Level = Literal["ok", "warning", "critical", "few values", "no data"]
SEVERITY_ORDER = {"critical": 0, "error": 0, "warning": 1, "info": 2}
OUTLIER_RATIO = 0.05
ERROR_RATIO = 0.05


class FeatureDrift(BaseModel):
    model_config = ConfigDict(frozen=True)
    feature: str
    psi: float | None
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
    since: str | None = None


class MonitorResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    url: str
    model: str | None
    window: str
    features: list[FeatureDrift]
    drift_module: bool
    predict_requests: int
    predict_5xx: int
    alerts: list[AlertLine]
    alerts_source: str

    def lines(self) -> list[str]:
        out = [
            f"server     {self.url}" + (f" ({self.model})" if self.model else ""),
            f"requests   {self.predict_requests} predictions, {self.predict_5xx} answered 5xx ({self.window})",
        ]
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
                where = ", ".join(
                    f"{k}={v}" for k, v in sorted(a.labels.items()) if k in ("job", "feature", "pod", "reason")
                )
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


def _get(client: httpx.Client, url: str, what: str, params: dict | None = None) -> httpx.Response:
    try:
        return client.get(url, params=params)
    except httpx.InvalidURL:  # not an httpx.HTTPError: a malformed --url/--prometheus is the user's input
        raise UsageError(f"not a valid URL for {what}: {url}") from None
    except httpx.HTTPError as exc:
        raise TemporaryError(f"cannot reach {what} at {url}: {type(exc).__name__}: {exc}".rstrip(": ")) from None


def _level(psi: float | None, observations: int, settings: Settings) -> Level:
    m = settings.monitor
    if psi is None:
        return "no data"
    if observations < m.min_observations:
        return "few values"
    return "critical" if psi > m.psi_critical else "warning" if psi > m.psi_warning else "ok"


def _prometheus_alerts(client: httpx.Client, base: str, job: str | None) -> list[AlertLine]:
    r = _get(client, f"{base.rstrip('/')}/api/v1/alerts", "Prometheus")
    try:
        alerts = r.json()["data"]["alerts"]
    except (ValueError, KeyError, TypeError):
        raise TemporaryError(f"Prometheus at {base} answered {r.status_code} without an alert list") from None
    lines = [
        AlertLine(
            name=a["labels"].get("alertname", "?"),
            severity=a["labels"].get("severity", "none"),
            state=a.get("state", "?"),
            summary=a.get("annotations", {}).get("summary", ""),
            labels=a["labels"],
            since=a.get("activeAt"),
        )
        for a in alerts
        if job is None or a["labels"].get("job") == job
    ]
    return sorted(lines, key=lambda a: (a.state != "firing", SEVERITY_ORDER.get(a.severity, 3), a.since or ""))


def _computed_alerts(features: list[FeatureDrift], m: dict[str, Any], settings: Settings) -> list[AlertLine]:
    out = []
    if m["requests"] and m["errors"] / m["requests"] > ERROR_RATIO:
        out.append(
            AlertLine(
                name="MlopsHighErrorRatio",
                severity="critical",
                state="firing",
                labels={},
                summary=f"{m['errors'] / m['requests']:.1%} of predictions answered 5xx",
            )
        )
    for f in sorted(features, key=lambda f: -(f.psi or 0)):
        if f.level in ("warning", "critical"):
            limit = settings.monitor.psi_critical if f.level == "critical" else settings.monitor.psi_warning
            out.append(
                AlertLine(
                    name="MlopsFeatureDrift",
                    severity=f.level,
                    state="firing",
                    labels={"feature": f.feature},
                    summary=f"feature {f.feature} drifted (PSI {f.psi:.3f} > {limit:g})",
                )
            )
    if m["rows"] and m["outlier_rows"] / m["rows"] > OUTLIER_RATIO:
        out.append(
            AlertLine(
                name="MlopsHighOutlierRate",
                severity="warning",
                state="firing",
                labels={},
                summary=f"{m['outlier_rows'] / m['rows']:.1%} of instances are outliers",
            )
        )
    return sorted(out, key=lambda a: SEVERITY_ORDER.get(a.severity, 3))


def _scraped_features(m: dict[str, Any], settings: Settings) -> list[FeatureDrift]:
    from serving.modules.drift import psi

    features = []
    for name in sorted(m["shares"]):
        shares = m["shares"][name]
        counts = [int(round(m["bins"].get(name, {}).get(b, 0))) for b in sorted(shares)]
        value = psi(counts, [shares[b] for b in sorted(shares)])
        features.append(
            FeatureDrift(
                feature=name,
                psi=value,
                observations=sum(counts),
                outliers=m["outliers"].get(name, 0),
                level=_level(value, sum(counts), settings),
            )
        )
    return features


def _promql(client: httpx.Client, base: str, expr: str) -> list[dict]:
    r = _get(client, f"{base.rstrip('/')}/api/v1/query", "Prometheus", params={"query": expr})
    try:
        body = r.json()
        if r.status_code != 200 or body["status"] != "success":
            raise ValueError
        return body["data"]["result"]
    except (ValueError, KeyError, TypeError):
        raise TemporaryError(f"Prometheus at {base} answered {r.status_code} to a query, without a result") from None


def _prometheus_job(client: httpx.Client, base: str, m: dict[str, Any], job: str | None) -> str:
    if job:
        return job
    labels = m.get("model_labels")
    if not labels:
        raise UsageError("the server names no model (mlops_model_info): pass --job to read its figures from Prometheus")
    found = {
        r["metric"].get("job", "")
        for r in _promql(
            client,
            base,
            f'max by (job) (mlops_model_info{{name="{_esc(labels["name"])}", version="{_esc(labels["version"])}"}})',
        )
    }
    if len(found) != 1:
        raise UsageError(
            f"Prometheus has {len(found) or 'no'} jobs serving {m['model']}"
            + (f" ({', '.join(sorted(found))})" if found else "")
            + ": pass --job"
        )
    return found.pop()


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _prometheus_figures(
    client: httpx.Client, base: str, job: str, m: dict[str, Any], settings: Settings
) -> tuple[dict[str, Any], list[FeatureDrift]]:
    sel = f'job="{_esc(job)}"'

    def by(expr: str, label: str) -> dict[str, float]:
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in _promql(client, base, expr)}

    def one(expr: str) -> float:
        values = by(expr, "job")
        return sum(values.values())

    psi = by(f"namespace_job_feature:mlops_drift_psi:1h{{{sel}}}", "feature")
    seen = by(f"namespace_job_feature:mlops_drift_observations:increase1h{{{sel}}}", "feature")
    outliers = by(f"sum by (feature) (increase(mlops_outliers_total{{{sel}}}[1h]))", "feature")
    figures = dict(m)
    figures["requests"] = int(
        round(one(f'sum by (job) (increase(mlops_http_requests_total{{{sel}, route=~"{PREDICT_ROUTES_PROMQL}"}}[1h]))'))
    )
    figures["errors"] = int(
        round(
            one(
                f'sum by (job) (increase(mlops_http_requests_total{{{sel}, route=~"{PREDICT_ROUTES_PROMQL}", status=~"5.."}}[1h]))'
            )
        )
    )
    figures["outlier_rows"] = one(f"sum by (job) (increase(mlops_outlier_instances_total{{{sel}}}[1h]))")
    figures["rows"] = one(f"sum by (job) (increase(mlops_batch_size_rows_sum{{{sel}}}[1h]))")
    features = []
    for name in sorted(set(m["shares"]) | set(psi)):
        value = psi.get(name)
        count = int(round(seen.get(name, 0)))
        features.append(
            FeatureDrift(
                feature=name,
                psi=value,
                observations=count,
                outliers=int(round(outliers.get(name, 0))),
                level=_level(value, count, settings),
            )
        )
    return figures, features


def snapshot(
    settings: Settings, job: str | None = None, top: int = 5, sleep: Callable[[float], None] = time.sleep
) -> MonitorResult:
    url = server_url(settings)
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--url must be an http(s) URL, got {url!r}")
    prom = settings.monitor.prometheus_url
    if prom and not prom.startswith(("http://", "https://")):
        raise UsageError(f"--prometheus must be an http(s) URL, got {prom!r}")

    with httpx.Client(timeout=settings.monitor.timeout_s) as client:

        def scrape() -> dict[str, Any]:
            r = _get(client, f"{url}/metrics", "the model server")
            if r.status_code != 200:
                raise TemporaryError(f"{url}/metrics answered {r.status_code}: is this an mlops model server?")
            return parse_metrics(r.text)

        first = scrape()
        drift_module = bool(first["shares"])
        if prom:
            service = _prometheus_job(client, prom, first, job)
            m, features = _prometheus_figures(client, prom, service, first, settings)
            window = f"last 1h, Prometheus job {service}"
            alerts = _prometheus_alerts(client, prom, job or service)
            source = f"Prometheus {prom}"
        else:
            window_s = settings.monitor.window_s
            sleep(window_s)
            m = delta(first, scrape())
            features = _scraped_features(m, settings)
            window = f"last {window_s:g}s"
            alerts = _computed_alerts(features, m, settings)
            source = (
                f"computed from the server's counters over the last {window_s:g}s; give --prometheus for the real ones"
            )
    return MonitorResult(
        url=url,
        model=m["model"],
        window=window,
        features=features,
        drift_module=drift_module,
        predict_requests=m["requests"],
        predict_5xx=m["errors"],
        alerts=alerts[:top],
        alerts_source=source,
    )
