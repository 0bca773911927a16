"""assemble-server: fetch the validated model and render a self-contained server bundle."""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from importlib import metadata as importlib_metadata
from pathlib import Path

import jinja2

from ..bundle import fetch_model, fetch_modules, write_contents
from ..digests import tree_digest
from ..errors import StageFailed
from ..extras import DIST_MODULE, missing_extra
from ..settings import Settings
from ..sources import get_source, parse_ref
from ..sources.metadata import ModelMetadata
from ..state import BundleRecord, State
from ..ui import progress
from .base import StageResult, stage
from .validate_model import metadata_digest

CONTAINER_PORT = 8080
RUNTIME_REQUIREMENTS = ("fastapi", "uvicorn", "httptools", "uvloop", "orjson", "prometheus-client", "numpy", "joblib")
FRAMEWORK_REQUIREMENTS = {"sklearn": ("scikit-learn",), "onnx": ("onnxruntime",), "python": ()}


class AssembleResult(StageResult):
    bundle_path: str
    bundle_digest: str

    def lines(self) -> list[str]:
        return [f"bundle {self.bundle_path} (digest sha256:{self.bundle_digest[:12]})"]


def _requirements(framework: str) -> str:
    lines = []
    for dist in RUNTIME_REQUIREMENTS + FRAMEWORK_REQUIREMENTS.get(framework, ()):
        try:
            lines.append(f"{dist}=={importlib_metadata.version(dist)}")
        except importlib_metadata.PackageNotFoundError:
            raise missing_extra(
                "assemble-server pins the versions of the serving runtime installed here", DIST_MODULE.get(dist, dist)
            ) from None
    return "\n".join(lines) + "\n"


def render_dockerfile(meta: ModelMetadata, base_image: str) -> str:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("mlops_cli", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    return env.get_template("Dockerfile.j2").render(
        name=meta.name, version=meta.version, sha256=meta.sha256, base_image=base_image, port=CONTAINER_PORT
    )


def _copy_serving(dest: Path) -> None:
    spec = importlib.util.find_spec("serving")
    if spec is None or not spec.submodule_search_locations:
        raise StageFailed("the serving package is not importable", hint="reinstall mlops")
    src = Path(list(spec.submodule_search_locations)[0])
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


@stage("assemble-server")
def run(settings: Settings) -> AssembleResult:
    state = State.load(settings.workdir)
    model, validation = state.require_validated()
    ref = parse_ref(model.ref)
    source = get_source(ref.scheme, settings)
    meta = source.fetch_metadata(ref)
    if meta.sha256 != model.sha256 or metadata_digest(meta) != validation.metadata_sha256:
        raise StageFailed(
            f"model {model.ref} changed since it was validated (artifact or metadata)",
            hint="run `mlops validate-model` again",
        )
    tag = settings.validation.validator_tag
    if tag and tag not in meta.tags:  # tags are outside the metadata digest: the validator may have withdrawn it
        raise StageFailed(
            f"model {model.ref} no longer carries the validator tag {tag!r}: nothing was assembled",
            hint="have the validator tag it again and run `mlops validate-model`",
        )
    bundles = settings.workdir / "bundles"
    bundles.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=bundles))
    try:
        progress(f"fetching model {model.ref}")
        _, actual = fetch_model(source, meta, tmp)
        if actual != model.sha256:
            raise StageFailed(
                f"artifact of {model.ref} has sha256:{actual[:12]}, validated sha256:"
                f"{model.sha256[:12]}: corrupt or altered; nothing was assembled"
            )
        if meta.modules and meta.modules.files():
            progress(f"fetching {len(meta.modules.files())} module file(s)")
        wrong = fetch_modules(source, meta, tmp)
        if wrong:
            raise StageFailed(f"model {model.ref}: {wrong[0]}; nothing was assembled")
        progress("rendering spec, Dockerfile and requirements")
        write_contents(meta, settings, tmp)  # spec.json (a serving.spec.Spec), examples.json, reference.json
        (tmp / "requirements.txt").write_text(_requirements(meta.framework))
        (tmp / "Dockerfile").write_text(render_dockerfile(meta, settings.assemble.base_image))
        _copy_serving(tmp / "serving")
        digest = tree_digest(tmp)
        final = bundles / f"{meta.name}-{meta.version}-{digest[:12]}"
        if final.exists() and tree_digest(final) == digest:  # the same content, maybe serving: keep it
            shutil.rmtree(tmp)
        else:
            if final.exists():  # altered on disk since: replace it whole
                stale = Path(tempfile.mkdtemp(prefix=".stale-", dir=bundles))
                final.rename(stale / final.name)
                shutil.rmtree(stale)
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    state.bundle = BundleRecord(path=str(final.resolve()), model_sha256=model.sha256, bundle_digest=digest)
    state.image = state.smoke = None
    state.save(settings.workdir)
    return AssembleResult(
        stage="assemble-server",
        bundle_path=str(final.resolve()),
        bundle_digest=digest,
        message=f"bundle for {model.ref} assembled",
    )
