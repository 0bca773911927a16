"""POST /v1/predict reads JSON only: a form, multipart or compressed body gets 415, not a guess."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.anyio
BODY = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode()


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "application/x-www-form-urlencoded"},
        {"content-type": "multipart/form-data; boundary=x"},
        {"content-type": "text/plain"},
        {"content-type": "application/json", "content-encoding": "gzip"},
    ],
    ids=["form", "multipart", "text", "gzip"],
)
async def test_unread_content_types_get_415(iris, headers) -> None:
    r = await iris.client.post("/v1/predict", content=BODY, headers=headers)
    assert r.status_code == 415, r.text
    error = r.json()["error"]
    assert error["code"] == "unsupported_media_type" and "application/json" in error["message"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"content-type": "application/json"},
        {"content-type": "application/json; charset=utf-8"},
        {"content-type": "application/vnd.api+json"},
        {"content-type": "application/json", "content-encoding": "identity"},
    ],
    ids=["none", "json", "charset", "suffix", "identity"],
)
async def test_json_and_no_content_type_are_read(iris, headers) -> None:
    r = await iris.client.post("/v1/predict", content=BODY, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["label"]
