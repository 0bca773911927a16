"""The runtime image's plan and key (mlops_cli/builders/runtime_image.py): what the key sees, what falls back."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mlops_cli.builders import runtime_image as rt
from mlops_cli.sources.metadata import ModelMetadata
from mlops_cli.stages.assemble_server import render_dockerfile

BASE = "localhost/base:1"
IDS = {BASE: "a" * 64}


def rendered_context(tmp_path: Path, base: str = BASE, version: str = "1") -> Path:
    """A build context as build-image prepares it, always with the same content but the model's version."""
    for folder in ("wheels", "serving", "model"):
        shutil.rmtree(tmp_path / folder, ignore_errors=True)
    meta = ModelMetadata.model_construct(name="iris", version=version, sha256="0" * 64)
    (tmp_path / "Dockerfile").write_text(render_dockerfile(meta, base))
    (tmp_path / "requirements.txt").write_text("numpy==2.0.0\n")
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "numpy-2.0.0-py3-none-any.whl").write_bytes(b"wheel")
    (tmp_path / "serving").mkdir()
    (tmp_path / "serving" / "app.py").write_text("print('serving')\n")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.joblib").write_bytes(b"model one")
    for name in ("spec.json", "examples.json", "reference.json"):
        (tmp_path / name).write_text("{}")
    return tmp_path


def test_the_shipped_template_has_a_runtime_of_deps_code_and_settings(tmp_path):
    plan, why_not = rt.plan(rendered_context(tmp_path) / "Dockerfile")
    assert plan is not None, why_not
    assert plan.runtime == "runtime" and plan.bases == (BASE,) and plan.root_base == BASE
    assert plan.sources == ("requirements.txt", "wheels/", "serving/")  # not the model, not the spec
    assert plan.rest_bases == ()  # the model's stage is FROM scratch
    assert "USER 1001" in plan.section and "COPY --from=deps /opt/venv /opt/venv" in plan.section
    assert "model/" not in plan.section
    final = plan.final_dockerfile("f" * 64)
    assert final.startswith("FROM scratch AS app\n") and "AS deps" not in final and "AS runtime" not in final
    assert final.rstrip().endswith(f"FROM {'f' * 64}\nCOPY --from=app --chown=1001:0 /app/ /app/")
    runtime = plan.runtime_dockerfile("k" * 64)
    assert runtime.rstrip().endswith(f'LABEL "{rt.KEY_LABEL}"="{"k" * 64}"')
    assert rt.parse(runtime)[1][-1].name == "runtime"  # the runtime is the last stage: built without --target


def test_the_key_covers_what_goes_into_the_runtime_and_nothing_else(tmp_path):
    context = rendered_context(tmp_path)
    plan, _ = rt.plan(context / "Dockerfile")
    key = rt.content_key(plan, context, IDS)
    assert len(key) == 64 and key == rt.content_key(plan, context, IDS)

    # a new model version: other model bytes, spec, header comment -> the same runtime
    rendered_context(context, version="2")
    (context / "model" / "model.joblib").write_bytes(b"model two")
    (context / "spec.json").write_text('{"version": 2}')
    plan2, _ = rt.plan(context / "Dockerfile")
    assert rt.content_key(plan2, context, IDS) == key

    changes = {
        "requirements": lambda: (context / "requirements.txt").write_text("numpy==2.0.1\n"),
        "a wheel's bytes": lambda: (context / "wheels" / "numpy-2.0.0-py3-none-any.whl").write_bytes(b"other"),
        "a new wheel": lambda: (context / "wheels" / "six-1.0-py3-none-any.whl").write_bytes(b"six"),
        "the server's code": lambda: (context / "serving" / "app.py").write_text("print('v2')\n"),
        "a file's mode": lambda: (context / "serving" / "app.py").chmod(0o600),
    }
    for what, change in changes.items():
        rendered_context(context)  # back to the first content
        assert rt.content_key(plan, context, IDS) == key, what
        change()
        assert rt.content_key(plan, context, IDS) != key, what
    rendered_context(context)
    assert rt.content_key(plan, context, {BASE: "b" * 64}) != key  # another base image ID
    other_base, _ = rt.plan(rendered_context(context, base="localhost/base:2") / "Dockerfile")
    assert rt.content_key(other_base, context, {"localhost/base:2": "a" * 64}) != key  # another base name


GOOD = "FROM b AS deps\nCOPY r.txt /r\nFROM b AS runtime\nCOPY --from=deps /r /r\nFROM runtime\nCOPY m /m\n"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("FROM b\nCOPY m /m\n", "a single stage"),
        ("FROM b AS deps\nCOPY r /r\nFROM b\nCOPY --from=deps /r /r\n", "does not start FROM an earlier stage"),
        ("ARG B=b\n" + GOOD, "before the first FROM"),
        (GOOD.replace("COPY r.txt /r", "ADD r.txt /r"), "ADD in the runtime stages"),
        (GOOD.replace("COPY r.txt /r", "ARG X\nCOPY r.txt /r"), "ARG in the runtime stages"),
        (GOOD.replace("COPY r.txt /r", "COPY $X /r"), "a variable"),
        (GOOD.replace("COPY r.txt /r", "COPY *.txt /r"), "pattern"),
        (GOOD.replace("COPY r.txt /r", "COPY ../r.txt /r"), "leaves the context"),
        (GOOD.replace("COPY r.txt /r", 'COPY ["r.txt", "/r"]'), "JSON form"),
        (GOOD.replace("COPY r.txt /r", "RUN --mount=type=bind,target=/w true"), "RUN --mount"),
        (GOOD.replace("COPY --from=deps", "COPY --from=other/image:1"), "names no earlier stage"),
        (GOOD.replace("FROM runtime\n", "FROM deps AS x\nFROM runtime\n"), "starts FROM a runtime stage"),
        (GOOD.replace("COPY m /m", "COPY --from=deps /r /r2"), "the last stage copies from a runtime stage"),
    ],
)
def test_what_the_key_could_not_see_falls_back_to_one_plain_build(tmp_path, text, reason):
    (tmp_path / "Dockerfile").write_text(text)
    plan, why_not = rt.plan(tmp_path / "Dockerfile")
    assert plan is None and reason in why_not


def test_an_ignore_file_falls_back_and_continuations_and_comments_parse(tmp_path):
    text = "# head\nFROM b AS deps\nRUN a \\\n# inside\n    && b\nCOPY r.txt /r\nFROM b AS runtime\n" + (
        "COPY --from=deps /r /r\nFROM runtime\nCOPY m /m\n"
    )
    (tmp_path / "Dockerfile").write_text(text)
    plan, _ = rt.plan(tmp_path / "Dockerfile")
    assert plan is not None and plan.sources == ("r.txt",) and plan.section.startswith("FROM b AS deps\nRUN a \\\n")
    assert plan.bases == ("b",) and plan.rest_bases == ()
    (tmp_path / "Dockerfile").write_text(text.replace("FROM runtime\n", "FROM c AS m\nFROM runtime\n"))
    assert rt.plan(tmp_path / "Dockerfile")[0].rest_bases == ("c",)
    assert rt.parse(text)[1][0].instructions == ["RUN a  && b", "COPY r.txt /r"]
    (tmp_path / ".dockerignore").write_text("*.pyc\n")
    assert rt.plan(tmp_path / "Dockerfile") == (None, "the context has an ignore file")
