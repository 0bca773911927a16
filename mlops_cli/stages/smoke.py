"""smoke-test: real queries against the test deployment: answers, refusals and latency."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import httpx

from serving.spec import InputSpec, answer_problems

from ..errors import StageFailed
from ..interface_check import schema_of
from ..settings import Settings
from ..state import SmokeRecord, State
from ..ui import progress
from . import smoke_oip
from .base import StageResult, stage


class SmokeResult(StageResult):
    url: str
    requests: int
    p95_ms: float
    budget_ms: float

    def lines(self) -> list[str]:
        return [
            f"{self.url}: examples answered, invalid requests refused, "
            f"p95 {self.p95_ms:.1f} ms over {self.requests} requests (budget {self.budget_ms:g} ms)"
        ]


def _examples(bundle: Path, inputs: list[InputSpec]) -> list[dict[str, Any]]:
    examples = json.loads((bundle / "examples.json").read_text())
    if examples:
        return examples
    reference = json.loads((bundle / "reference.json").read_text()) or {}
    stats = reference.get("features", {})
    if all(f.name in stats and "mean" in stats[f.name] for f in inputs):
        row = {f.name: stats[f.name]["mean"] for f in inputs}
        return [{"instances": [row]}]
    raise StageFailed(
        "the model has no example requests and no reference statistics to make one from",
        hint="register it with --examples FILE",
    )


def _invalid_requests(instance: Any, inputs: list[InputSpec]) -> dict[str, bytes]:
    names = [f.name for f in inputs]
    given = dict(zip(names, instance)) if isinstance(instance, list) else dict(instance)
    row = {f.name: given.get(f.name, f.default) for f in inputs}  # complete, in schema order
    first = inputs[0]
    wrong = 12345 if first.type == "string" else "not-a-number"
    probes = {
        "malformed JSON": b'{"instances": [',
        "no instances": b'{"instances": []}',
        "wrong feature count": json.dumps({"instances": [[row[n] for n in names] + [row[names[-1]]]]}).encode(),
        f"wrong type for {first.name!r}": json.dumps({"instances": [{**row, first.name: wrong}]}).encode(),
        "unknown feature": json.dumps({"instances": [{**row, "__not_a_feature__": 1}]}).encode(),
    }
    required = [f.name for f in inputs if f.required]
    if required:
        missing = {k: v for k, v in row.items() if k != required[0]}
        probes[f"missing feature {required[0]!r}"] = json.dumps({"instances": [missing]}).encode()
    numeric = [f.name for f in inputs if f.type == "number"]
    if numeric:
        probes[f"NaN in {numeric[0]!r}"] = json.dumps({"instances": [{**row, numeric[0]: math.nan}]}).encode()
    return probes


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def junit_report(
    settings: Settings, url: str, probes: list[str], problems: list[str], latency: float, budget: float
) -> None:
    """WORKDIR/reports/smoke-test.xml: one JUnit test case per kind of request and one for the latency budget."""
    from .. import junit

    def case(name: str, prefixes: tuple[str, ...], detail: str) -> junit.Case:
        mine = [p for p in problems if p.startswith(prefixes)]
        return junit.Case(name=name, classname="smoke-test", detail=detail, failure="\n".join(mine) or None)

    cases = [case("example requests", ("example ",), "answered 200 with schema-valid predictions")]
    cases += [case(f"invalid request: {name}", (f"invalid request ({name})",), "refused with 4xx") for name in probes]
    cases.append(case("timed requests", ("timed request ",), "answered 200"))
    cases.append(case("latency budget", ("p95 latency",), f"p95 {latency:.1f} ms, budget {budget:g} ms"))
    junit.write(settings.workdir / "reports" / "smoke-test.xml", f"smoke-test {url}", cases)


@stage("smoke-test")
def run(settings: Settings) -> SmokeResult:
    state = State.load(settings.workdir)
    dep = state.require_deployment("test", "deploy-test")
    bundle = Path(dep.bundle_path)
    schema = schema_of(dep.schema_, "the test deployment's schema in state.json")
    inputs, outputs = list(schema.inputs), list(schema.outputs)
    examples = _examples(bundle, inputs)
    cfg = settings.smoke
    problems: list[str] = []
    latencies: list[float] = []
    headers = {"content-type": "application/json"}
    with httpx.Client(base_url=dep.url, timeout=cfg.timeout_s, headers=headers) as client:

        def post(content: bytes) -> httpx.Response:
            try:
                if cfg.protocol == "v2":  # the same requests over the Open Inference Protocol
                    return smoke_oip.post(client, smoke_oip.served_name(bundle, dep.model_name), content, inputs)
                return client.post("/v1/predict", content=content)
            except httpx.HTTPError as exc:
                raise StageFailed(f"{dep.url} did not answer: {exc}") from exc

        try:
            ready = client.get("/health/ready").json()
        except (httpx.HTTPError, ValueError) as exc:
            raise StageFailed(f"{dep.url}/health/ready did not answer with JSON: {exc}") from exc
        if ready.get("sha256") != dep.model_sha256:
            raise StageFailed(
                f"{dep.url} serves sha256:{str(ready.get('sha256'))[:12]}, not the deployed "
                f"sha256:{dep.model_sha256[:12]}",
                hint="run `mlops deploy-test` again",
            )
        if dep.target in ("local", "container") and dep.handle and ready.get("instance") != dep.handle:
            raise StageFailed(
                f"{dep.url} is answered by {ready.get('instance') or 'a server without identity'}, "
                f"not by the deployed server {dep.handle}",
                hint="run `mlops status` to see what runs",
            )
        progress(f"sending {len(examples)} example request(s) to {dep.url}")
        for i, example in enumerate(examples):
            resp = post(json.dumps(example).encode())
            if resp.status_code != 200:
                problems.append(f"example {i}: status {resp.status_code}: {resp.text[:200]}")
                continue
            try:
                answer = resp.json()
            except ValueError:
                problems.append(f"example {i}: the response is not JSON: {resp.text[:100]!r}")
                continue
            for p in answer_problems(outputs, answer, len(example.get("instances", []))):
                problems.append(f"example {i}: {p}")
        progress("sending invalid requests (each must be refused with 4xx)")
        probes = _invalid_requests(examples[0]["instances"][0], inputs)
        for name, content in probes.items():
            resp = post(content)
            if not 400 <= resp.status_code < 500:
                problems.append(f"invalid request ({name}) got status {resp.status_code}, expected 4xx")
        progress(f"timing {cfg.requests} requests")
        for i in range(cfg.requests):
            body = json.dumps(examples[i % len(examples)]).encode()
            start = time.perf_counter()
            resp = post(body)
            latencies.append((time.perf_counter() - start) * 1000)
            if resp.status_code != 200:
                problems.append(f"timed request {i}: status {resp.status_code}")
    latency = p95(latencies)
    if latency > cfg.p95_ms:
        problems.append(f"p95 latency {latency:.1f} ms is over the budget of {cfg.p95_ms:g} ms (smoke.p95_ms)")
    state.smoke = SmokeRecord(
        passed=not problems,
        url=dep.url,
        model_sha256=dep.model_sha256,
        bundle_digest=dep.bundle_digest,
        requests=len(latencies),
        p95_ms=round(latency, 3),
        problems=problems,
    )
    state.save(settings.workdir)
    junit_report(settings, dep.url, list(probes), problems, latency, cfg.p95_ms)
    if problems:
        more = f" (+{len(problems) - 1} more, see `mlops status`)" if len(problems) > 1 else ""
        raise StageFailed(f"smoke test of {dep.url} failed: {problems[0]}{more}")
    return SmokeResult(
        stage="smoke-test",
        url=dep.url,
        requests=len(latencies),
        p95_ms=round(latency, 3),
        budget_ms=cfg.p95_ms,
        message="smoke test passed",
    )
