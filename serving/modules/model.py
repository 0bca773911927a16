"""Model: check the artifact's sha256, load it, and run it on the feature array.

The artifact's bytes are read once, hashed, and only when the hash equals ``spec.model.sha256``
are those same bytes loaded: ``sklearn`` with joblib, ``onnx`` with onnxruntime
(serving/modules/onnx.py), ``python`` by executing the ``.py`` file and instantiating
``class_name`` with no arguments. ``predict_proba`` is called only when the
task is classification and ``probability`` is a declared output.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from serving.errors import BundleError, ServingError, one_line
from serving.pipeline import Batch, ModuleContext
from serving.spec import ModelSpec

log = logging.getLogger("serving")
PYTHON_MODEL_MODULE = "mlops_bundle_model"


@dataclass(frozen=True)
class LoadedModel:
    """What the model module publishes in ``ctx.shared["model"]`` for later modules."""

    estimator: Any
    classes: list[Any] | None
    has_proba: bool


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_verified(bundle_dir: Path, model: ModelSpec) -> bytes:
    """The artifact's bytes, once their sha256 matches the spec; BundleError otherwise."""
    path = Path(bundle_dir) / model.artifact
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"model artifact {model.artifact} not found in bundle {bundle_dir}") from None
    except OSError as exc:
        raise BundleError(f"cannot read model artifact {model.artifact}: {exc.strerror}") from None
    got = sha256_hex(data)
    if got != model.sha256:
        raise BundleError(
            f"model artifact {model.artifact} sha256 mismatch: expected {model.sha256[:12]}…, "
            f"got {got[:12]}… (corrupt or altered artifact)"
        )
    return data


def _load_sklearn(data: bytes, model: ModelSpec, path: Path) -> Any:
    import joblib  # only the sklearn framework needs it

    return joblib.load(io.BytesIO(data))


def _load_python(data: bytes, model: ModelSpec, path: Path) -> Any:
    module = types.ModuleType(PYTHON_MODEL_MODULE)
    module.__file__ = str(path)
    sys.modules[PYTHON_MODEL_MODULE] = module  # so dataclasses/pickle can find the class
    exec(compile(data, str(path), "exec"), module.__dict__)
    cls = getattr(module, str(model.class_name), None)
    if not isinstance(cls, type):
        raise BundleError(f"model artifact {model.artifact} defines no class {model.class_name!r}")
    return cls()


def _load_onnx(data: bytes, model: ModelSpec, path: Path) -> Any:
    from serving.modules.onnx import load_onnx

    return load_onnx(data, model.task)


LOADERS = {"sklearn": _load_sklearn, "python": _load_python, "onnx": _load_onnx}


def load_model(bundle_dir: Path, model: ModelSpec) -> Any:
    """Verify and load the artifact; every failure is a one-line BundleError."""
    data = read_verified(bundle_dir, model)
    try:
        estimator = LOADERS[model.framework](data, model, Path(bundle_dir) / model.artifact)
    except BundleError:
        raise
    except Exception as exc:
        raise BundleError(
            f"cannot load model artifact {model.artifact}: {type(exc).__name__}: {one_line(exc)}"
        ) from None
    if not callable(getattr(estimator, "predict", None)):
        raise BundleError(f"model artifact {model.artifact}: {type(estimator).__name__} has no predict method")
    return estimator


class Settings(BaseModel):
    """``label_from_proba`` (classification, when ``probability`` is an output): the label is the
    class with the highest probability, so the model runs once (``predict_proba``) instead of
    twice. The same answer for models whose ``predict`` is that argmax (LogisticRegression,
    tree ensembles, naive Bayes, ...), not for every model (e.g. SVC with Platt scaling)."""

    model_config = ConfigDict(extra="forbid")
    label_from_proba: bool = False


ModelSettings = Settings  # the name the module class's methods annotate with (its own `Settings` attribute is a value)


class ModelModule:
    name = "model"
    Settings = Settings

    def __init__(self, ctx: ModuleContext, settings: ModelSettings):
        self.ctx = ctx
        outputs = {o.name for o in ctx.spec.io.outputs}
        self.want_proba = ctx.spec.model.task == "classification" and "probability" in outputs
        self.label_from_proba = settings.label_from_proba
        if self.label_from_proba and not self.want_proba:
            raise BundleError(
                "model.label_from_proba needs a classification model with 'probability' in schema.outputs"
            )
        self.fast_config: Any = None
        self.estimator: Any = None
        self.scaling = ctx.shared.get("model_input_scaling")  # preprocessing.scale, applied here

    async def load(self) -> None:
        spec = self.ctx.spec
        estimator = load_model(self.ctx.bundle_dir, spec.model)
        has_proba = callable(getattr(estimator, "predict_proba", None))
        if self.want_proba and not has_proba:
            raise BundleError("schema.outputs has 'probability' but the model has no predict_proba")
        names = getattr(estimator, "feature_names_in_", None)
        names = np.asarray(names).tolist() if names is not None else None
        inputs = [f.name for f in spec.io.inputs]
        if names is not None and names != inputs:
            raise BundleError(f"the model was fitted on features {names} but schema.inputs are {inputs}")
        width = getattr(estimator, "n_features_in_", None)
        if isinstance(width, int) and width != len(inputs):
            raise BundleError(f"the model takes {width} features but schema.inputs has {len(inputs)}: {inputs}")
        classes = getattr(estimator, "classes_", None)
        classes = np.asarray(classes).tolist() if classes is not None else None
        if self.label_from_proba and classes is None:
            raise BundleError("model.label_from_proba is set but the model has no classes_")
        self.classes = np.asarray(classes) if classes is not None else None
        if spec.model.framework == "sklearn":
            import sklearn

            # the inputs are validated (finite, right shape): skip scikit-learn's own checks per call
            self.fast_config = lambda: sklearn.config_context(assume_finite=True, skip_parameter_validation=True)
        self.estimator = estimator
        self.ctx.shared["model"] = LoadedModel(estimator, classes, has_proba)
        m = spec.model
        self.ctx.metrics.model_info.labels(m.name, m.version, m.sha256, m.framework).set(1)
        log.info("loaded model %s version %s (%s, sha256 %s…)", m.name, m.version, m.framework, m.sha256[:12])

    def _predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if self.scaling is not None:
            features = self.scaling(features)
        proba: np.ndarray | None
        try:
            with np.errstate(all="ignore"), self.fast_config() if self.fast_config else contextlib.nullcontext():
                # extreme inputs: non-finite outputs are refused per instance by postprocessing
                if self.label_from_proba:
                    classes = self.classes
                    assert classes is not None  # label_from_proba requires classes_ (checked at load)
                    proba = np.asarray(self.estimator.predict_proba(features))
                    prediction = classes[proba.argmax(axis=1)] if proba.ndim == 2 else proba
                else:
                    prediction = np.asarray(self.estimator.predict(features))
                    proba = np.asarray(self.estimator.predict_proba(features)) if self.want_proba else None
        except Exception as exc:
            log.warning("model failed to predict: %s: %s", type(exc).__name__, one_line(exc))
            raise ServingError(
                f"model failed to predict: {type(exc).__name__}: {one_line(exc)}", code="prediction_failed"
            ) from None
        rows = len(features)
        if prediction.ndim == 0 or len(prediction) != rows or (proba is not None and proba.shape[:1] != (rows,)):
            raise ServingError(
                f"model returned {prediction.shape} predictions for {rows} instances", code="prediction_failed"
            )
        return prediction, proba

    async def process(self, batch: Batch) -> Batch:
        """One model call for the whole batch; if it fails and the batch holds several requests,
        each request is retried alone so only the ones the model cannot answer fail."""
        features = batch.features
        assert features is not None, "preprocessing must run before the model"
        live = batch.live
        try:
            prediction, proba = self._predict(features)
        except ServingError:
            if len(live) == 1:
                raise
            prediction, proba = self._one_by_one(batch, live)
        batch.outputs["prediction"] = prediction
        if proba is not None:
            batch.outputs["proba"] = proba
        return batch

    def _one_by_one(self, batch: Batch, live: list[int]) -> tuple[np.ndarray, np.ndarray | None]:
        results = {}
        features = batch.features
        assert features is not None, "preprocessing must run before the model"
        for i in live:
            lo, hi = batch.spans[i]
            try:
                results[i] = self._predict(features[lo:hi])
            except ServingError as exc:
                batch.fail(i, exc)
        if not results:
            raise ServingError("model failed to predict", code="prediction_failed")
        first_prediction, first_proba = next(iter(results.values()))

        def rows(i: int, which: int, like: np.ndarray) -> np.ndarray:
            if i in results:
                got = results[i][which]
                assert got is not None  # proba is there for every request or for none
                return got
            lo, hi = batch.spans[i]  # a failed request's rows: dropped by the chain after this module
            return np.zeros((hi - lo, *like.shape[1:]), dtype=like.dtype)

        prediction = np.concatenate([rows(i, 0, first_prediction) for i in live])
        proba = None if first_proba is None else np.concatenate([rows(i, 1, first_proba) for i in live])
        return prediction, proba
