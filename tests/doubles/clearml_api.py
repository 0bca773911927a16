"""A TEST DOUBLE of the ClearML API server: the few endpoints the `clearml` SDK calls for a model.

No ClearML server can run here (it needs MongoDB and Elasticsearch), so this small HTTP server answers
exactly the calls the real SDK makes when mlops reads a model, its task's metrics and artifacts, and
writes tags and metadata back. Everything else answers as the real server does for an unknown endpoint
(HTTP 400, "Invalid request path") and is recorded in `unknown`, so a test sees a call it did not expect.

Where the shapes come from:
- The envelope `{"meta": {...}, "data": {...}}`, result codes and subcodes: clearml-server
  `apiserver/apierrors/errors.conf` and `apiserver/service_repo/apicall.py` (`get_response`), as the SDK
  reads them in `clearml/backend_api/session/response.py` (`ResponseMeta`: id, trx, endpoint,
  result_code, result_subcode, result_msg, error_stack, error_data).
- Field names and JSON types of each response: the SDK's generated models of API 2.23,
  `clearml/backend_api/services/v2_23/{auth,models,tasks,events,projects}.py` (`*Response._schema`),
  which mirror the server's `apiserver/schema/services/*.conf`. The SDK validates nothing loudly: a
  wrong type makes a field silently None, hence the care here (e.g. `labels` maps str -> int,
  `metadata` maps key -> {key, type, value} with string values, times are ISO strings).
- `auth.login`: HTTP basic auth with the access key and secret; answers `{"token": JWT}`. The SDK decodes
  the JWT without checking its signature (`TokenManager.get_decoded_token`) and reads `api_version`,
  `server_version`, `feature_set` and `exp` from it (`Session._connect`), so it is signed here with a
  throwaway key. Later calls carry `Authorization: Bearer <token>`; a wrong one gets 401 subcode 21.
- Unknown ids: `models.get_by_id` answers 400/201 "Invalid model id", `tasks.get_by_id` 400/101
  "Invalid task id" (errors.conf `bad_request`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_VERSION = "2.23"  # the newest API the SDK ships models for (clearml/backend_api/services/v2_23)
SERVER_VERSION = "1.16.0"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(claims: dict[str, Any], key: bytes) -> str:
    """An HS256 JWT (the SDK reads the claims and ignores the signature)."""
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    sig = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + ".000+00:00"


@dataclass
class FakeModel:
    """One model document as models.get_by_id returns it (services/v2_23/models.py `Model`)."""

    name: str
    uri: str
    task: str | None = None
    framework: str = "ScikitLearn"
    tags: list[str] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)  # key -> value; stored as {key, type, value}
    project: str = "p0000000000000000000000000000001"
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: float = field(default_factory=time.time)

    def document(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "user": "u1",
            "company": "c1",
            "created": iso(self.created),
            "last_update": iso(self.created),
            "task": self.task,
            "parent": None,
            "project": self.project,
            "comment": "",
            "tags": list(self.tags),
            "system_tags": [],
            "framework": self.framework,
            "design": {},
            "labels": dict(self.labels),
            "uri": self.uri,
            "ready": True,
            "ui_cache": {},
            "metadata": {k: dict(v) for k, v in self._meta().items()},
            "stats": {"labels_count": 0},
        }

    def _meta(self) -> dict[str, dict[str, str]]:
        out = {}
        for key, value in self.metadata.items():
            if isinstance(value, dict) and set(value) >= {"value", "type"}:
                out[key] = {"key": key, "type": str(value["type"]), "value": str(value["value"])}
            elif isinstance(value, (dict, list)):
                out[key] = {"key": key, "type": type(value).__name__, "value": json.dumps(value)}
            elif isinstance(value, float):
                out[key] = {"key": key, "type": "float", "value": repr(value)}
            else:
                out[key] = {"key": key, "type": "str", "value": str(value)}
        return out


@dataclass
class FakeTask:
    """A task (services/v2_23/tasks.py `Task`) with its scalars, single values and artifacts."""

    name: str
    scalars: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # title -> series -> y values
    single_values: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> uri of a JSON file
    project: str = "p0000000000000000000000000000001"
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: float = field(default_factory=time.time)

    def document(self) -> dict[str, Any]:
        when = iso(self.created)
        return {
            "id": self.id,
            "name": self.name,
            "user": "u1",
            "company": "c1",
            "type": "training",
            "status": "completed",
            "comment": "",
            "created": when,
            "started": when,
            "completed": when,
            "last_update": when,
            "last_change": when,
            "status_changed": when,
            "status_message": "",
            "status_reason": "",
            "project": self.project,
            "parent": None,
            "tags": [],
            "system_tags": [],
            "script": {"binary": "python", "repository": "", "entry_point": "train.py", "working_dir": "."},
            "execution": {
                "parameters": {},
                "model_desc": {},
                "model_labels": {},
                "framework": None,
                "queue": None,
                "artifacts": [
                    {
                        "key": name,
                        "type": "JSON",
                        "mode": "output",
                        "uri": uri,
                        "hash": "",
                        "content_size": 0,
                        "timestamp": int(self.created),
                        "type_data": {"preview": "", "content_type": "application/json"},
                        "display_data": [],
                    }
                    for name, uri in self.artifacts.items()
                ],
            },
            "models": {"input": [], "output": []},
            "hyperparams": {},
            "configuration": {},
            "runtime": {},
            "output": {"destination": None, "error": None, "result": None},
            "last_iteration": 0,
            "last_metrics": {},
            "active_duration": 1,
        }


def tags_match(tags: list[str], query: list[str]) -> bool:
    """The server's tag filter as the SDK documents it (clearml/model.py `Model.query_models`, param `tags`):
    plain tags are ORed, `-tag` excludes; `__$all` switches to AND and `__$or` back to OR for the tags that
    follow, `__$not` negates the next tag."""
    mode, negate = "or", False
    any_of: list[bool] = []
    all_of: list[bool] = []
    for item in query:
        if item in ("__$all", "__$and"):
            mode = "all"
            continue
        if item == "__$or":
            mode = "or"
            continue
        if item == "__$not":
            negate = True
            continue
        exclude = negate or item.startswith("-")
        name = item[1:] if item.startswith("-") else item
        negate = False
        if exclude:
            all_of.append(name not in tags)
        elif mode == "all":
            all_of.append(name in tags)
        else:
            any_of.append(name in tags)
    return all(all_of) and (any(any_of) if any_of else True)


class ClearMLApiDouble:
    """Start with `start()`, stop with `stop()`; `host` is the API URL to give the SDK."""

    def __init__(self, access_key: str, secret_key: str):
        self.access_key, self.secret_key = access_key, secret_key
        self.models: dict[str, FakeModel] = {}
        self.tasks: dict[str, FakeTask] = {}
        self.calls: list[str] = []
        self.unknown: list[str] = []
        self.unavailable: set[str] = set()  # endpoints answering 503, as a server behind a failing proxy
        self.stalled: set[str] = set()  # endpoints that never answer (a hung server behind a live proxy)
        self._stopping = threading.Event()
        self._key = uuid.uuid4().bytes
        self._tokens: set[str] = set()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- what tests set up -------------------------------------------------------------------
    def add_model(self, model: FakeModel) -> FakeModel:
        self.models[model.id] = model
        return model

    def add_task(self, task: FakeTask) -> FakeTask:
        self.tasks[task.id] = task
        return task

    # -- the server ----------------------------------------------------------------------------
    def start(self, port: int) -> str:
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                double._handle(self)

            def do_POST(self) -> None:
                double._handle(self)

            def do_PUT(self) -> None:
                double._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.host = f"http://127.0.0.1:{port}"
        return self.host

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _send(
        self,
        handler: BaseHTTPRequestHandler,
        endpoint: str,
        status: int,
        data: Any,
        subcode: int = 0,
        msg: str = "OK",
        error_data: dict | None = None,
    ) -> None:
        body = json.dumps(
            {
                "meta": {
                    "id": uuid.uuid4().hex,
                    "trx": uuid.uuid4().hex,
                    "endpoint": {"name": endpoint, "requested_version": API_VERSION, "actual_version": "1.0"},
                    "result_code": status,
                    "result_subcode": subcode,
                    "result_msg": msg,
                    "error_stack": "",
                    "error_data": error_data or {},
                },
                "data": data,
            }
        ).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0].strip("/")
        endpoint = path.split("/")[-1]  # "/v2.23/models.get_by_id" and "/models.get_by_id"
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return self._send(handler, endpoint, 400, {}, 3, "Invalid request body: not JSON")
        with self._lock:
            self.calls.append(endpoint)
        if endpoint in self.stalled:
            self._stopping.wait()  # holds the connection open without an answer until the double stops
            return None
        if endpoint in self.unavailable:
            return self._send(handler, endpoint, 503, {}, 0, "Service Unavailable")
        if endpoint == "debug.ping":
            return self._send(handler, endpoint, 200, {"msg": "ClearML server"})
        if endpoint == "auth.login":
            return self._login(handler, endpoint)
        token = (handler.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
        if token not in self._tokens:
            return self._send(handler, endpoint, 401, {}, 21, "Invalid token")
        route = getattr(self, "_" + endpoint.replace(".", "__"), None)
        if route is None:
            with self._lock:
                self.unknown.append(endpoint)
            return self._send(handler, endpoint, 400, {}, 0, f"Invalid request path /{path}")
        status, data, subcode, msg, error_data = route(body if isinstance(body, dict) else {})
        return self._send(handler, endpoint, status, data, subcode, msg, error_data)

    def _login(self, handler: BaseHTTPRequestHandler, endpoint: str) -> None:
        # auth.login (services/v2_23/auth.py LoginResponse: {"token": str}); basic auth key:secret
        header = handler.headers.get("Authorization") or ""
        try:
            user, _, secret = base64.b64decode(header.removeprefix("Basic ")).decode().partition(":")
        except ValueError:
            user = secret = ""
        if not (
            header.startswith("Basic ")
            and hmac.compare_digest(user, self.access_key)
            and hmac.compare_digest(secret, self.secret_key)
        ):
            return self._send(
                handler,
                endpoint,
                401,
                {},
                20,
                "Unauthorized (invalid credentials) (failed to locate provided credentials)",
            )
        now = int(time.time())
        token = make_jwt(
            {
                "identity": {"company": "c1", "role": "user", "user": "u1", "company_name": "test"},
                "env": "<unknown>",
                "api_version": API_VERSION,
                "server_version": SERVER_VERSION,
                "server_build": "test-double",
                "feature_set": "basic",
                "iat": now,
                "exp": now + 3600,
            },
            self._key,
        )
        self._tokens.add(token)
        return self._send(handler, endpoint, 200, {"token": token})

    # Each route returns (status, data, subcode, message, error_data).
    def _models__get_by_id(self, body: dict) -> tuple:
        # models.get_by_id -> {"model": Model} (services/v2_23/models.py GetByIdResponse)
        model = self.models.get(str(body.get("model")))
        if model is None:
            return 400, {}, 201, f"Invalid model id: id={body.get('model')}", {"id": body.get("model")}
        return 200, {"model": model.document()}, 0, "OK", None

    def _models__get_all(self, body: dict) -> tuple:
        # models.get_all -> {"models": [Model]} filtered by id / uri / tags / system_tags, paged by page and
        # page_size, ordered by `created` (services/v2_23/models.py GetAllRequest; Model.query_models sends
        # tags=[...], system_tags=["-archived"], order_by=["-created"], page, page_size, only_fields)
        found = list(self.models.values())
        if body.get("id"):
            found = [m for m in found if m.id in body["id"]]
        if body.get("uri"):
            found = [m for m in found if m.uri in body["uri"]]
        if body.get("tags"):
            found = [m for m in found if tags_match(m.tags, body["tags"])]
        if body.get("system_tags"):
            found = [m for m in found if tags_match([], body["system_tags"])]  # no model here has system tags
        found.sort(key=lambda m: m.created, reverse="-created" in (body.get("order_by") or []))
        if body.get("page_size") is not None:
            page, size = int(body.get("page") or 0), int(body["page_size"])
            found = found[page * size : (page + 1) * size]
        return 200, {"models": [m.document() for m in found]}, 0, "OK", None

    def _models__edit(self, body: dict) -> tuple:
        # models.edit -> {"updated": int, "fields": dict} (services/v2_23/models.py EditResponse)
        model = self.models.get(str(body.get("model")))
        if model is None:
            return 400, {}, 201, f"Invalid model id: id={body.get('model')}", {"id": body.get("model")}
        fields = {}
        if body.get("tags") is not None:
            if not all(isinstance(t, str) for t in body["tags"]):
                return 400, {}, 12, "Validation error (tags must be strings)", None
            model.tags = list(body["tags"])
            fields["tags"] = model.tags
        return 200, {"updated": 1 if fields else 0, "fields": fields}, 0, "OK", None

    def _models__add_or_update_metadata(self, body: dict) -> tuple:
        # models.add_or_update_metadata -> {"updated": int} (services/v2_23/models.py)
        model = self.models.get(str(body.get("model")))
        if model is None:
            return 400, {}, 201, f"Invalid model id: id={body.get('model')}", {"id": body.get("model")}
        items = body.get("metadata") or []
        if not all(isinstance(i, dict) and isinstance(i.get("key"), str) and i["key"] for i in items):
            return 400, {}, 12, "Validation error (metadata items need a key)", None
        if body.get("replace_metadata"):
            model.metadata = {}
        for item in items:
            model.metadata[item["key"]] = {"value": str(item.get("value")), "type": str(item.get("type"))}
        return 200, {"updated": 1}, 0, "OK", None

    def _projects__get_all(self, body: dict) -> tuple:
        # projects.get_all -> {"projects": [Project]} (services/v2_23/projects.py)
        return (
            200,
            {
                "projects": [
                    {
                        "id": "p0000000000000000000000000000001",
                        "name": "mlops-tests",
                        "basename": "mlops-tests",
                        "description": "",
                        "tags": [],
                        "system_tags": [],
                        "default_output_destination": None,
                        "created": iso(time.time()),
                    }
                ]
            },
            0,
            "OK",
            None,
        )

    def _tasks__get_by_id(self, body: dict) -> tuple:
        # tasks.get_by_id -> {"task": Task} (services/v2_23/tasks.py GetByIdResponse)
        task = self.tasks.get(str(body.get("task")))
        if task is None:
            return 400, {}, 101, f"Invalid task id: id={body.get('task')}", {"id": body.get("task")}
        return 200, {"task": task.document()}, 0, "OK", None

    def _tasks__get_all(self, body: dict) -> tuple:
        # tasks.get_all -> {"tasks": [Task]} (Task.get_task looks a task up this way on some paths)
        found = [t for t in self.tasks.values() if not body.get("id") or t.id in body["id"]]
        return 200, {"tasks": [t.document() for t in found]}, 0, "OK", None

    def _events__scalar_metrics_iter_histogram(self, body: dict) -> tuple:
        # events.scalar_metrics_iter_histogram -> {title: {series: {"name", "x", "y"}}}
        # (the response has no fixed schema: services/v2_23/events.py `additionalProperties: True`;
        # the shape is what apiserver/bll/event/event_metrics.py returns and Task.get_reported_scalars reads)
        task = self.tasks.get(str(body.get("task")))
        if task is None:
            return 400, {}, 101, f"Invalid task id: id={body.get('task')}", {"id": body.get("task")}
        data = {
            title: {name: {"name": name, "x": list(range(len(ys))), "y": list(ys)} for name, ys in series.items()}
            for title, series in task.scalars.items()
        }
        return 200, data, 0, "OK", None

    def _events__get_task_single_value_metrics(self, body: dict) -> tuple:
        # events.get_task_single_value_metrics -> {"tasks": [{"task", "task_name", "values": [
        #   {"metric", "variant", "value", "timestamp", "iter"}]}]} (services/v2_23/events.py)
        out = []
        for task_id in body.get("tasks") or []:
            task = self.tasks.get(task_id)
            if task is not None:
                out.append(
                    {
                        "task": task.id,
                        "task_name": task.name,
                        "values": [
                            {
                                "metric": "Summary",
                                "variant": name,
                                "value": value,
                                "timestamp": int(task.created * 1000),
                                "iter": 0,
                            }
                            for name, value in task.single_values.items()
                        ],
                    }
                )
        return 200, {"tasks": out}, 0, "OK", None
