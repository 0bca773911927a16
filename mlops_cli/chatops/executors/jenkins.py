"""The jenkins executor: python-jenkins against the release job, with an API token (no crumb needed,
python-jenkins still asks the crumb issuer once and sends one if Jenkins has it).

deploy: the job's parameters are checked first (get_job_info: the job exists and takes MODEL_REF,
REQUESTED_BY, SLACK_CHANNEL, SLACK_THREAD_TS), then `build_job` (buildWithParameters; Jenkins answers
with the queue item in Location), then the queue item is read until it has `executable.number` and
the build's link goes to the thread. Later stage outcomes come from the pipeline (`mlops notify`).
Approve/Reject first read the build's own REQUESTED_BY (four eyes is judged on it, not on the button's
copy), then answer the build's `input` step: POST `<build>/input/<id>/submit` (proceed, json with
SLACK_APPROVER) or `.../abort`, through python-jenkins' jenkins_request (its auth and crumb).
Jenkins unreachable, 401/403, a missing job: one line in the thread, nothing triggered.
"""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ... import DISTRIBUTION
from ...errors import ConfigError
from ...secrets import redact
from . import Approval, ExecutorError, Release, Say

if TYPE_CHECKING:
    from ...settings import Settings

PARAMETERS = ("MODEL_REF", "TARGET", "REQUESTED_BY", "SLACK_CHANNEL", "SLACK_THREAD_TS")
REQUIRED = ("MODEL_REF", "REQUESTED_BY", "SLACK_CHANNEL", "SLACK_THREAD_TS")


def input_key(input_id: str) -> str:
    """An `input` step's id as Jenkins keeps it: InputStep.setId turns a first letter a-z into upper case
    (`id: 'releaseApproval'` waits at `input/ReleaseApproval/`)."""
    first = input_id[:1]
    return first.upper() + input_id[1:] if first.isascii() and first.islower() else input_id


def job_path(job: str) -> str:
    """`folder/name` -> `job/folder/job/name/`, as Jenkins' URLs have it (each name percent-encoded, as in
    its BUILD_URL and as python-jenkins sends it)."""
    return "".join(f"job/{quote(part, safe='')}/" for part in job.split("/"))


class JenkinsExecutor:
    name = "jenkins"

    def __init__(self, settings: Settings, config_file: str | None = None):
        cfg = settings.chatops.jenkins
        if not cfg.url or not re.match(r"^https?://[^\s/?#@]+(/[^\s?#]*)?$", cfg.url):
            raise ConfigError(
                "the jenkins executor needs chatops.jenkins.url, an http(s) URL",
                hint="e.g. https://jenkins.example.com/, without user or token in it (those are "
                "chatops.jenkins.user and its API token), or set chatops.executor: local",
            )
        self.token = cfg.token_value()
        if not cfg.user or not self.token:
            raise ConfigError(
                "the jenkins executor needs chatops.jenkins.user and its API token",
                hint="set MLOPS_CHATOPS__JENKINS__API_TOKEN or chatops.jenkins.api_token_file",
            )
        try:
            import jenkins  # noqa: F401
            import requests  # noqa: F401
        except ImportError:
            raise ConfigError(
                "the jenkins executor needs the python-jenkins package", hint=f"pip install '{DISTRIBUTION}[chatops]'"
            ) from None
        self.cfg = cfg
        self.url = cfg.url.rstrip("/") + "/"
        self.build_token = cfg.build_token.get_secret_value() if cfg.build_token else None

    # --- talking to Jenkins ------------------------------------------------------------------------

    def _server(self) -> Any:
        import jenkins

        # the stub says int; python-jenkins hands the timeout to requests, which takes seconds as a float
        return jenkins.Jenkins(self.url, username=self.cfg.user, password=self.token, timeout=self.cfg.timeout_s)  # type: ignore[arg-type]

    def _call(self, what: str, fn: Any, *args: Any, missing: str | None = None, **kwargs: Any) -> Any:
        """fn(*args), its failures as one ExecutorError line saying what could not be done and why."""
        import jenkins
        import requests

        try:
            return fn(*args, **kwargs)
        except jenkins.NotFoundException:
            raise ExecutorError(missing or f"{what}: Jenkins answered 404 Not Found") from None
        except jenkins.TimeoutException:
            raise ExecutorError(
                f"{what}: Jenkins at {self.url} did not answer within {self.cfg.timeout_s:g}s"
            ) from None
        except requests.exceptions.ConnectionError:
            raise ExecutorError(f"{what}: Jenkins at {self.url} is unreachable") from None
        except requests.exceptions.HTTPError as exc:
            raise ExecutorError(f"{what}: Jenkins answered {exc.response.status_code} {exc.response.reason}") from None
        except requests.exceptions.RequestException as exc:
            raise ExecutorError(f"{what}: {type(exc).__name__} talking to Jenkins at {self.url}") from None
        except jenkins.JenkinsException as exc:
            if missing and "does not exist" in str(exc):  # get_job_info/get_build_info's word for a 404
                raise ExecutorError(missing) from None
            status = re.search(r"\[(\d{3})\]", str(exc))
            if status and status.group(1) == "401":
                raise ExecutorError(
                    f"{what}: Jenkins refused the credentials (401): check chatops.jenkins.user and its API token"
                ) from None
            if status and status.group(1) == "403":
                raise ExecutorError(
                    f"{what}: Jenkins refused (403): the user {self.cfg.user!r} may not do this, or "
                    "the job's build token (chatops.jenkins.build_token) is wrong"
                ) from None
            if status:
                raise ExecutorError(f"{what}: Jenkins answered {status.group(1)}") from None
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            first = redact(first, self.token, self.build_token)  # never let a URL's token reach the thread
            raise ExecutorError(f"{what}: {first}") from None

    def _parameters(self, server: Any, job: str) -> set[str]:
        info = self._call(
            "reading the job", server.get_job_info, job, missing=f"Jenkins has no job {job!r} (chatops.jenkins.job)"
        )
        names = set()
        for prop in [*(info.get("property") or []), *(info.get("actions") or [])]:
            for definition in (prop or {}).get("parameterDefinitions") or []:
                names.add(definition.get("name"))
        return names

    def _start(self, job: str, parameters: dict[str, str], required: tuple[str, ...]) -> tuple[int, str]:
        """Trigger the job; follow its queue item to the build: (number, url)."""
        server = self._server()
        taken = self._parameters(server, job)
        missing = [p for p in (*required, *(k for k in parameters if k not in required)) if p not in taken]
        if missing:
            raise ExecutorError(
                f"the Jenkins job {job!r} takes no parameter {', '.join(missing)}, so nothing was "
                "started (a pipeline job learns the parameters of its Jenkinsfile on its first build: "
                "run it once in Jenkins, or define them in the job)"
            )
        queue_id = self._call(
            "starting the job",
            server.build_job,
            job,
            parameters,
            token=self.build_token,
            missing=f"Jenkins has no job {job!r} (chatops.jenkins.job)",
        )
        deadline = time.monotonic() + self.cfg.queue_timeout_s
        while True:
            item = self._call(f"following queue item {queue_id}", server.get_queue_item, queue_id)
            if item.get("cancelled"):
                raise ExecutorError(f"Jenkins cancelled the queued build (queue item {queue_id})")
            executable = item.get("executable") or {}
            if executable.get("number"):
                number = int(executable["number"])
                return number, executable.get("url") or f"{self.url}{job_path(job)}{number}/"
            if time.monotonic() > deadline:
                why = item.get("why") or "still queued"
                raise ExecutorError(
                    f"queued in Jenkins as item {queue_id} but not started after "
                    f"{self.cfg.queue_timeout_s:g}s ({why}); it starts when Jenkins can run it"
                )
            time.sleep(self.cfg.poll_s)

    # --- the executor ------------------------------------------------------------------------------

    def deploy(self, release: Release, say: Say) -> None:
        job = self.cfg.job if release.env == "prod" else self.cfg.test_job
        if not job:
            raise ExecutorError("no Jenkins job deploys to test only (chatops.jenkins.test_job): use `to prod`")
        parameters = {
            "MODEL_REF": release.model,
            "REQUESTED_BY": release.requested_by,
            "SLACK_CHANNEL": release.channel,
            "SLACK_THREAD_TS": release.thread_ts,
        }
        if release.target:
            parameters["TARGET"] = release.target
        number, url = self._start(job, parameters, REQUIRED)
        say(
            f":rocket: Jenkins build <{url}|{job} #{number}> runs `{release.model}` to {release.env}; "
            "its stages report in this thread"
        )

    def rollback(self, release: Release, say: Say) -> None:
        job = self.cfg.rollback_job
        if not job:
            raise ExecutorError("no rollback job is configured (chatops.jenkins.rollback_job): nothing was started")
        parameters = {
            "ENV": release.env,
            "REQUESTED_BY": release.requested_by,
            "SLACK_CHANNEL": release.channel,
            "SLACK_THREAD_TS": release.thread_ts,
        }
        number, url = self._start(job, parameters, ("ENV",))
        say(f":rewind: Jenkins build <{url}|{job} #{number}> rolls {release.env} back")

    def approval(self, value: str) -> Approval:
        try:
            data = json.loads(value)
        except (TypeError, ValueError):
            raise ExecutorError("the button carries no release data") from None
        if not isinstance(data, dict):
            raise ExecutorError("the button carries no release data")
        job, build, build_url = data.get("job"), data.get("build"), data.get("build_url")
        input_id, requested_by = data.get("input_id"), data.get("requested_by")
        if not all(isinstance(v, str) and v for v in (job, build_url, input_id)) or not isinstance(requested_by, str):
            raise ExecutorError("the button's release data is incomplete")
        if isinstance(build, bool) or not isinstance(build, int) or build < 1:
            raise ExecutorError("the button names no build number")
        if job not in {j for j in (self.cfg.job, self.cfg.test_job) if j}:
            raise ExecutorError(f"the button names the job {job!r}, not the release job this service answers for")
        if input_key(str(input_id)) != input_key(self.cfg.input_id):
            raise ExecutorError(f"the button names the input {input_id!r}, not {self.cfg.input_id!r}")
        expected = f"{self.url}{job_path(job)}{build}/"
        if build_url != expected:
            raise ExecutorError(f"the button's build URL is not {job} #{build} on the configured Jenkins")
        return Approval(
            job=job,
            build=build,
            build_url=expected,
            input_id=input_key(self.cfg.input_id),
            requested_by=requested_by,
            model=str(data.get("model") or ""),
            digest=str(data.get("digest") or ""),
        )

    def requester(self, approval: Approval) -> str:
        """The build's own REQUESTED_BY parameter (what four eyes is judged on); the button's when the build
        has none (started in Jenkins without it)."""
        info = self._call(
            f"reading {approval.job} #{approval.build}",
            self._server().get_build_info,
            approval.job,
            approval.build,
            missing=f"Jenkins has no build {approval.job} #{approval.build}",
        )
        for action in info.get("actions") or []:
            for parameter in (action or {}).get("parameters") or []:
                if parameter.get("name") == "REQUESTED_BY" and isinstance(parameter.get("value"), str):
                    return parameter["value"]
        return approval.requested_by

    def decide(self, approval: Approval, approve: bool, user: str) -> None:
        import requests

        server = self._server()
        base = f"{approval.build_url}input/{quote(approval.input_id, safe='')}/"
        if approve:
            form = {
                "proceed": "Approve",
                "json": json.dumps({"parameter": [{"name": "SLACK_APPROVER", "value": f"slack:{user}"}]}),
            }
            request = requests.Request("POST", base + "submit", data=form)
        else:
            request = requests.Request("POST", base + "abort")
        try:
            self._call(
                f"answering {approval.job} #{approval.build}",
                server.jenkins_request,
                request,
                missing=f"{approval.job} #{approval.build} is not waiting for approval any more "
                "(decided, timed out or aborted)",
            )
        except ExecutorError as exc:
            if approve and str(exc).endswith("answered 500"):  # Jenkins' answer to a parameter the input lacks
                raise ExecutorError(
                    f"{exc} (does its input step define the string parameter SLACK_APPROVER?)"
                ) from None
            raise
