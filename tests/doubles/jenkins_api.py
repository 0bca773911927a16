"""A test double of Jenkins' remote API: exactly what python-jenkins and the chatops service call.

No Jenkins can run in the test suite (a JVM web app with plugins), so this serves the documented
paths and JSON shapes on 127.0.0.1:
- `GET /crumbIssuer/api/json` -> `{"crumb", "crumbRequestField": "Jenkins-Crumb"}`;
- `GET /job/<name>/api/json` (folders as `/job/a/job/b/`) -> job info with its
  ParametersDefinitionProperty; 404 for a job that does not exist;
- `POST /job/<name>/buildWithParameters?...` -> 201 with `Location: <root>/queue/item/<N>/`
  (the job's remote-trigger `token` checked when the job has one);
- `GET /queue/item/<N>/api/json` -> `why` while waiting, `executable: {number, url}` once started
  (after `start_after` reads), `cancelled` when cancelled;
- `GET /job/<name>/<n>/api/json` -> build info with its parameters;
- `POST /job/<name>/<n>/input/<id>/submit` (form `proceed`, `json`) -> 302 to `<build>/console`; without
  `proceed` it aborts, as Jenkins' InputStepExecution.doSubmit does; a parameter the input does not define
  -> 500 ("No such parameter definition"); `.../abort` and `.../proceedEmpty` -> 200; 404 for an input
  that is not pending (answered, timed out, or another id). Jenkins capitalises the first letter of an
  input's id (InputStep.setId), so `id: 'releaseApproval'` is answered at `input/ReleaseApproval/`.
Every request needs HTTP basic auth `user:API token` (401 otherwise, as Jenkins answers a bad token).
API-token requests need no crumb; one sent is checked.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

RELEASE_PARAMETERS = ("MODEL_REF", "TARGET", "REQUESTED_BY", "SLACK_CHANNEL", "SLACK_THREAD_TS")
JOB_PATH = re.compile(r"^((?:/job/[^/]+)+)(/.*)?$")
CRUMB = "double-crumb-4d7f"


@dataclass
class Build:
    job: str
    number: int
    parameters: dict[str, str]
    queue_id: int
    input_id: str | None = "ReleaseApproval"  # the pending input step, if any (capitalised, as Jenkins does)
    input_parameters: tuple[str, ...] = ("SLACK_APPROVER",)  # the input step's parameter definitions
    answers: list[dict[str, Any]] = field(default_factory=list)  # what answered the input
    result: str | None = None


class JenkinsApiDouble:
    def __init__(
        self,
        user: str = "chatops",
        token: str = "11aa22bb33cc44dd55ee66ff77889900",
        jobs: dict[str, tuple[str, ...]] | None = None,
        start_after: int = 1,
        build_tokens: dict[str, str] | None = None,
    ):
        self.user, self.token = user, token
        self.jobs = dict(jobs if jobs is not None else {"mlops-release": RELEASE_PARAMETERS})
        self.build_tokens = dict(build_tokens or {})
        self.start_after = start_after  # queue reads before an item gets its executable
        self.queue: dict[int, dict[str, Any]] = {}
        self.builds: dict[tuple[str, int], Build] = {}
        self.requests: list[tuple[str, str]] = []
        self.delay_s = 0.0  # every answer comes this late (a slow Jenkins)
        self.lock = threading.Lock()
        self._queue_ids = itertools.count(100)
        self._numbers: dict[str, itertools.count] = {}
        self.server: ThreadingHTTPServer | None = None
        self.url = ""

    def start(self) -> str:
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, body, extra = double.handle(self.command, self.path, self.headers, raw)
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html" if isinstance(body, str) else "application/json")
                for key, value in extra.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        return self.url

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    # --- the API --------------------------------------------------------------------------------

    def _authorised(self, headers: Any) -> bool:
        given = headers.get("Authorization") or ""
        expected = "Basic " + base64.b64encode(f"{self.user}:{self.token}".encode()).decode()
        return given == expected

    def build_url(self, job: str, number: int) -> str:
        return self.url + "".join(f"job/{p}/" for p in job.split("/")) + f"{number}/"

    def handle(self, method: str, raw_path: str, headers: Any, raw: bytes) -> tuple[int, Any, dict[str, str]]:
        url = urlparse(raw_path)
        time.sleep(self.delay_s)
        with self.lock:
            self.requests.append((method, url.path))
            if not self._authorised(headers):
                return (
                    401,
                    "<html><body>Invalid password/token for user</body></html>",
                    {"WWW-Authenticate": 'Basic realm="Jenkins"'},
                )
            crumb = headers.get("Jenkins-Crumb")
            if crumb is not None and crumb != CRUMB:
                return 403, "<html><body>No valid crumb was included in the request</body></html>", {}
            if url.path == "/crumbIssuer/api/json" and method == "GET":
                return (
                    200,
                    {
                        "_class": "hudson.security.csrf.DefaultCrumbIssuer",
                        "crumb": CRUMB,
                        "crumbRequestField": "Jenkins-Crumb",
                    },
                    {},
                )
            queued = re.match(r"^/queue/item/(\d+)/api/json$", url.path)
            if queued and method == "GET":
                return self._queue_item(int(queued.group(1)))
            match = JOB_PATH.match(url.path)
            if not match:
                return 404, "<html><body>Not Found</body></html>", {}
            job = "/".join(match.group(1).split("/job/")[1:])
            rest = match.group(2) or "/"
            if job not in self.jobs:
                return 404, "<html><body>Not Found</body></html>", {}
            return self._job(method, job, rest, parse_qs(url.query), raw)

    def _queue_item(self, queue_id: int) -> tuple[int, Any, dict[str, str]]:
        item = self.queue.get(queue_id)
        if item is None:
            return 404, "<html><body>Not Found</body></html>", {}
        item["reads"] += 1
        body: dict[str, Any] = {
            "_class": "hudson.model.Queue$WaitingItem",
            "id": queue_id,
            "task": {"name": item["job"]},
            "cancelled": item.get("cancelled", False),
            "why": "Waiting for next available executor",
            "executable": None,
        }
        if item.get("cancelled"):
            body["_class"] = "hudson.model.Queue$LeftItem"
        elif item["reads"] > self.start_after:
            number = item.get("number")
            if number is None:
                number = next(self._numbers.setdefault(item["job"], itertools.count(1)))
                item["number"] = number
                self.builds[(item["job"], number)] = Build(item["job"], number, item["parameters"], queue_id)
            body.update(
                {
                    "_class": "hudson.model.Queue$LeftItem",
                    "why": None,
                    "executable": {
                        "_class": "org.jenkinsci.plugins.workflow.job.WorkflowRun",
                        "number": number,
                        "url": self.build_url(item["job"], number),
                    },
                }
            )
        return 200, body, {}

    def _job(
        self, method: str, job: str, rest: str, query: dict[str, list[str]], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        if rest == "/api/json" and method == "GET":
            definitions = [
                {"_class": "hudson.model.StringParameterDefinition", "name": p, "type": "StringParameterDefinition"}
                for p in self.jobs[job]
            ]
            return (
                200,
                {
                    "_class": "org.jenkinsci.plugins.workflow.job.WorkflowJob",
                    "name": job.split("/")[-1],
                    "fullName": job,
                    "url": self.url + "".join(f"job/{p}/" for p in job.split("/")),
                    "buildable": True,
                    "property": [
                        {"_class": "hudson.model.ParametersDefinitionProperty", "parameterDefinitions": definitions}
                    ],
                },
                {},
            )
        if rest == "/buildWithParameters" and method == "POST":
            params = {k: v[0] for k, v in query.items()}
            token = params.pop("token", None)
            if job in self.build_tokens and token != self.build_tokens[job]:
                return 403, "<html><body>Invalid token</body></html>", {}
            queue_id = next(self._queue_ids)
            self.queue[queue_id] = {"job": job, "parameters": params, "reads": 0}
            return 201, "", {"Location": f"{self.url}queue/item/{queue_id}/"}
        build = re.match(r"^/(\d+)(/.*)$", rest)
        if not build or (job, int(build.group(1))) not in self.builds:
            return 404, "<html><body>Not Found</body></html>", {}
        record = self.builds[(job, int(build.group(1)))]
        tail = build.group(2)
        if tail == "/api/json" and method == "GET":
            return (
                200,
                {
                    "number": record.number,
                    "url": self.build_url(job, record.number),
                    "building": record.result is None,
                    "result": record.result,
                    "actions": [
                        {
                            "_class": "hudson.model.ParametersAction",
                            "parameters": [{"name": k, "value": v} for k, v in record.parameters.items()],
                        }
                    ],
                },
                {},
            )
        if tail in ("/", "/console") and method == "GET":
            return 200, f"<html><body>{job} #{record.number}</body></html>", {}
        answer = re.match(r"^/input/([^/]+)/(submit|abort|proceedEmpty)$", tail)
        if answer and method == "POST":
            if record.input_id is None or record.input_id != answer.group(1):
                return 404, "<html><body>Not Found</body></html>", {}
            form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
            action = answer.group(2)
            if action == "submit" and "proceed" not in form:
                action = "abort"  # doSubmit: no `proceed` parameter means the Abort button
            entry: dict[str, Any] = {"action": action, "form": form}
            if action == "submit":
                given = json.loads(form.get("json", "{}")).get("parameter", [])
                given = given if isinstance(given, list) else [given]
                unknown = [p.get("name") for p in given if p.get("name") not in record.input_parameters]
                if unknown:
                    return 500, f"<html><body>No such parameter definition: {unknown[0]}</body></html>", {}
                entry["parameters"] = {p["name"]: p["value"] for p in given}
            record.answers.append(entry)
            record.input_id = None
            record.result = "ABORTED" if action == "abort" else None
            if answer.group(2) == "submit":
                return 302, "", {"Location": self.build_url(job, record.number) + "console"}
            return 200, "", {}
        return 404, "<html><body>Not Found</body></html>", {}

    # --- what the tests look at -----------------------------------------------------------------

    def all_builds(self, job: str = "mlops-release") -> list[Build]:
        with self.lock:
            return [b for (j, _), b in sorted(self.builds.items()) if j == job]

    def triggered(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(item) for item in self.queue.values()]

    def pending_build(
        self, job: str = "mlops-release", parameters: dict[str, str] | None = None, input_id: str = "ReleaseApproval"
    ) -> Build:
        """Start a build that waits at its input step (`input id: input_id`), as the pipeline does at the
        approval gate."""
        with self.lock:
            number = next(self._numbers.setdefault(job, itertools.count(1)))
            build = Build(job, number, dict(parameters or {}), queue_id=0, input_id=capitalize(input_id))
            self.builds[(job, number)] = build
            return build


def capitalize(input_id: str) -> str:
    """Jenkins' InputStep id: a first letter a-z becomes upper case (a-z ids are InputAction's own)."""
    return input_id[:1].upper() + input_id[1:] if input_id[:1].isascii() and input_id[:1].islower() else input_id
