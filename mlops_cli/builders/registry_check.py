"""Before an image is built: does the registry answer, and does it take the configured credentials?

A quick `GET /v2/` (the Docker Registry v2 API's version check, which Artifactory, Harbor, Quay and
Debian's docker-registry all answer) with build.username / build.password, following a Bearer
challenge to its token realm, so that a wrong address or password fails in a second, not after the
whole build. Without configured credentials a 401 is left to the builder's own login (auth.json).
"""

from __future__ import annotations

import re

from ..errors import StageFailed, TemporaryError
from ..settings import BuildSettings
from ..ui import progress
from . import with_retries

TIMEOUT_S = 10.0
_PARAM = re.compile(r'(\w+)="([^"]*)"')
_CRED_HINT = "check build.username and MLOPS_BUILD__PASSWORD / build.password_file"


def _base(cfg: BuildSettings) -> str:
    hostport = (cfg.registry or "").split("/")[0]
    return f"{'http' if cfg.insecure else 'https'}://{hostport}"


def _reason(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.lower() if "refused" in text.lower() else text


def _token_accepted(client, challenge: str, auth: tuple[str, str], registry: str) -> bool:
    params = dict(_PARAM.findall(challenge))
    realm = params.pop("realm", None)
    if not realm:
        return True  # nothing to ask: leave it to the push
    answer = client.get(realm, params={k: v for k, v in params.items() if k == "service"}, auth=auth)
    if answer.status_code >= 500:
        raise TemporaryError(
            f"registry {registry} did not answer: HTTP {answer.status_code} from its token service {realm}"
        )
    return answer.status_code < 400


def _probe_once(cfg: BuildSettings, registry: str, password: str | None) -> str:
    import httpx

    url = _base(cfg) + "/v2/"
    auth = (cfg.username or "", password or "") if (cfg.username or password) else None
    try:
        with httpx.Client(timeout=TIMEOUT_S, verify=not cfg.insecure, follow_redirects=True) as client:
            answer = client.get(url, auth=auth)
            if answer.status_code == 401 and auth is not None:
                challenge = answer.headers.get("www-authenticate", "")
                if challenge.lower().startswith("bearer") and _token_accepted(client, challenge, auth, registry):
                    return "credentials accepted"
                raise StageFailed(
                    f"registry {registry} refused the credentials of user {cfg.username!r} "
                    f"(HTTP 401 at {url}), checked before building",
                    hint=_CRED_HINT,
                )
    except httpx.TimeoutException:
        raise TemporaryError(
            f"registry {registry} did not answer: no answer within {TIMEOUT_S:g} s at {url}; "
            "check build.registry and the network"
        ) from None
    except httpx.HTTPError as exc:
        if "SSL" in str(exc) or "CERTIFICATE" in str(exc):  # something answers; its TLS is the builder's to judge
            progress(
                f"warning: TLS to {url} failed here ({_reason(exc)}); the builder's own trust settings "
                "(certs.d, insecure registries) decide"
            )
            return "reachable (TLS not checked)"
        raise TemporaryError(
            f"registry {registry} did not answer: {_reason(exc)} at {url}; "
            "check build.registry (and build.insecure for a plain-HTTP registry)"
        ) from None
    if answer.status_code >= 500:
        raise TemporaryError(f"registry {registry} did not answer: HTTP {answer.status_code} at {url}")
    if answer.status_code == 401:
        progress(
            f"registry {registry} asks for credentials and none are configured "
            "(build.username, MLOPS_BUILD__PASSWORD): relying on the builder's own login"
        )
        return "needs the builder's login"
    return "reachable" if auth is None else "credentials accepted"


def check_registry(cfg: BuildSettings) -> str:
    """Raise the push's own error (TemporaryError / StageFailed) now if the registry cannot take it."""
    registry = cfg.registry or ""
    progress(f"checking registry {registry} before building")
    password = cfg.registry_password()
    return with_retries(
        lambda: _probe_once(cfg, registry, password),
        retries=cfg.retries,
        backoff_s=cfg.retry_backoff_s,
        what=f"reaching {registry}",
    )
