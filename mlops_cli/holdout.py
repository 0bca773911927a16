"""Holdout evaluation: score a model on a dataset the toolkit reads itself (CSV or Parquet, local or S3).

The dataset's columns are the model's inputs (by the names in its schema) and one target column; a
missing input or an unknown column is an error that names them. The rows go through the server's own
code: its preprocessing module (types, categories, scaling) and its model loader (any framework, ONNX too). Classification gets accuracy, F1
(macro-averaged over the classes) and ROC-AUC (one-vs-rest on predict_proba); regression RMSE, MAE, R².
The artifact is loaded only after it passed its digest check and validate-model's trial run (a child process).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import tempfile
import types
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from serving.spec import BundleError, Spec, load_spec

from . import DISTRIBUTION
from .errors import ConfigError, StageFailed, UsageError

# Which way is better, for metrics known by name; a prefixed name (`val/rmse`, `val_loss`, `test-mae`) counts
# as its last part. A metric in neither table needs validation.metric_directions.
LOWER_IS_BETTER = {
    "loss",
    "log_loss",
    "logloss",
    "cross_entropy",
    "nll",
    "mse",
    "rmse",
    "mae",
    "mape",
    "smape",
    "msle",
    "rmsle",
    "error",
    "error_rate",
    "err",
    "brier",
    "brier_score",
    "hinge",
    "hamming_loss",
    "zero_one_loss",
    "perplexity",
    "wer",
    "cer",
    "fpr",
    "fnr",
    "far",
    "frr",
    "latency",
    "eer",
}
HIGHER_IS_BETTER = {
    "accuracy",
    "acc",
    "balanced_accuracy",
    "f1",
    "f1_score",
    "f1_macro",
    "f1_micro",
    "f1_weighted",
    "precision",
    "recall",
    "roc_auc",
    "auc",
    "pr_auc",
    "average_precision",
    "ap",
    "r2",
    "explained_variance",
    "mcc",
    "kappa",
    "cohen_kappa",
    "iou",
    "map",
    "ndcg",
    "bleu",
    "rouge",
    "tpr",
    "tnr",
    "specificity",
    "sensitivity",
    "top5",
    "top1",
    "top_5",
    "top_1",
}


def direction(metric: str, declared: Mapping[str, str]) -> str | None:
    """ "lower" or "higher" (is better) for the metric: as declared, else by its name; None when unknown."""
    if metric in declared:
        return declared[metric]
    base = metric.rsplit("/", 1)[-1].strip().lower().replace(" ", "_")
    candidates = [base] + [base.split(sep, 1)[1] for sep in ("_", "-", ".") if sep in base]
    for name in candidates + [base.rsplit(sep, 1)[-1] for sep in ("_", "-", ".") if sep in base]:
        if name in LOWER_IS_BETTER:
            return "lower"
        if name in HIGHER_IS_BETTER:
            return "higher"
    return None


def _cell(text: str) -> Any:
    text = text.strip()
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def _read_csv(data: bytes, where: str) -> dict[str, list[Any]]:
    try:
        reader = csv.reader(io.StringIO(data.decode("utf-8-sig")))
        header = next(reader, None)
        if not header:
            raise UsageError(f"holdout {where} is empty")
        header = [h.strip() for h in header]
        columns: dict[str, list[Any]] = {h: [] for h in header}
        if len(columns) != len(header):
            raise UsageError(f"holdout {where} repeats a column name")
        for number, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise UsageError(f"holdout {where} line {number} has {len(row)} fields, the header {len(header)}")
            for name, text in zip(header, row):
                columns[name].append(_cell(text))
    except UnicodeDecodeError:
        raise UsageError(f"holdout {where} is not UTF-8 text (a CSV file?)") from None
    except csv.Error as exc:
        raise UsageError(f"holdout {where} is not valid CSV: {exc}") from None
    return columns


def _read_parquet(data: bytes, where: str) -> dict[str, list[Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(
            "reading a Parquet holdout needs the 'pyarrow' package, which is not installed",
            hint=f"pip install '{DISTRIBUTION}[parquet]'",
        ) from None
    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises ArrowInvalid and OSError kinds for a bad file
        raise UsageError(f"holdout {where} is not a readable Parquet file: {str(exc).splitlines()[0]}") from None
    return {name: table.column(name).to_pylist() for name in table.column_names}


def read_table(path: str, fmt: str | None, s3_settings: Any) -> dict[str, list[Any]]:
    """Column name -> values, from a local file or s3://bucket/key."""
    if path.startswith("s3://"):
        from .sources.s3 import S3Client, split_url

        bucket, key = split_url(path)
        data = S3Client(s3_settings).read(bucket, key)
    else:
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise UsageError(f"holdout dataset {path} not found") from None
        except OSError as exc:
            raise UsageError(f"cannot read holdout dataset {path}: {exc.strerror}") from None
    fmt = fmt or (
        "parquet" if path.lower().endswith((".parquet", ".pq")) else "csv" if path.lower().endswith(".csv") else None
    )
    if fmt is None:
        raise UsageError(
            f"cannot tell the format of holdout {path}",
            hint="name it .csv or .parquet or set validation.holdout.format",
        )
    columns = (_read_parquet if fmt == "parquet" else _read_csv)(data, path)
    if not columns or not next(iter(columns.values()), []):
        raise UsageError(f"holdout {path} has no rows")
    return columns


def load_model(bundle: Path, spec: Spec) -> Any:
    """The model as the server loads it (serving.modules.model: sha256 checked, any framework, ONNX too)."""
    from serving.modules.model import load_model as server_load

    try:
        return server_load(bundle, spec.model)
    except BundleError as exc:
        raise StageFailed(str(exc)) from None


def _rows(columns: dict[str, list[Any]], spec: Spec, target: str, where: str) -> list[list[Any]]:
    """The holdout's rows as lists in schema order (what a client may send); missing optional columns
    take their defaults. Missing or extra columns are named."""
    inputs = spec.io.inputs
    names = [f.name for f in inputs]
    missing = [f.name for f in inputs if f.name not in columns and f.required]
    extra = [c for c in columns if c not in names and c != target]
    problems = []
    if target not in columns:
        problems.append(f"no target column {target!r}")
    if missing:
        problems.append("missing columns " + ", ".join(missing))
    if extra:
        problems.append("extra columns " + ", ".join(extra))
    if problems:
        raise UsageError(
            f"holdout {where}: {'; '.join(problems)} (the model's inputs: {', '.join(names)}; target: {target})",
            hint="set validation.holdout.target to the label column",
        )
    rows = len(columns[target])
    values = [columns.get(f.name) or [f.default] * rows for f in inputs]
    return [[float(v[i]) if isinstance(v[i], bool) else v[i] for v in values] for i in range(rows)]


def features(columns: dict[str, list[Any]], bundle: Path, spec: Spec, target: str, where: str) -> Any:
    """The array the model gets for the holdout rows: through the server's own preprocessing module
    (types checked, categories encoded) and its scaling at the model's door."""
    from serving.modules.preprocessing import features_for

    rows = _rows(columns, spec, target, where)
    try:
        return features_for(spec, bundle, rows)
    except BundleError as exc:
        raise StageFailed(f"the bundle cannot be served: {exc}") from None
    except ValueError as exc:
        raise UsageError(f"holdout {where}: the server would refuse it: {exc} (instance N is data row N+1)") from None


def _label(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def evaluate(meta: Any, bundle: Path, settings: Any) -> dict[str, float]:
    """The holdout metrics of the model in `bundle` (those its task has). The dataset is read here (with the
    S3 settings); the model is loaded and scored in a clean, bounded child process, as validate-model's trial
    run loads it (unpickling runs code): its bundle's spec.json read by serving.spec, the rows fed through the
    server's own preprocessing."""
    from .extras import require
    from .trial import memory_note, require_loader, run_bounded

    require(("sklearn",), "validate-model's holdout scoring computes its metrics with scikit-learn", "sklearn")
    require_loader(meta.framework, "validate-model's holdout scoring loads the model with the server's code")
    holdout = settings.validation.holdout
    columns = read_table(holdout.path, holdout.format, settings.s3)
    scratch = settings.workdir / "artifacts"  # never the bundle itself: prod's must stay as assembled
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        job = Path(tmp) / "holdout-job.json"
        job.write_text(
            json.dumps(
                {
                    "bundle": str(Path(bundle).resolve()),
                    "columns": columns,
                    "task": meta.task,
                    "labels": meta.labels,
                    "holdout": holdout.model_dump(mode="json"),
                },
                default=str,
            ),
            encoding="utf-8",
        )
        outcome, failure = run_bounded(
            "mlops_cli.holdout",
            [str(job), str(settings.validation.load_memory_mb)],
            Path(tmp),
            settings,
            "scoring the model on the holdout",
        )
    if outcome is None:
        raise StageFailed(str(failure))
    error = outcome.get("error")
    if error:
        kind = {"UsageError": UsageError, "ConfigError": ConfigError}.get(error.get("kind"), StageFailed)
        raise kind(memory_note(error["message"], settings), hint=error.get("hint"))
    return {name: float(value) for name, value in outcome["scores"].items()}


def score(bundle: Path, columns: dict[str, list[Any]], task: str, labels: Any, holdout: Any) -> dict[str, float]:
    """What the child computes: the model in `bundle` on the holdout columns."""
    from sklearn.exceptions import UndefinedMetricWarning

    meta = types.SimpleNamespace(task=task, labels=labels)
    try:
        spec = load_spec(bundle)
    except BundleError as exc:
        raise StageFailed(str(exc)) from None
    X = features(columns, bundle, spec, holdout.target, holdout.path)  # (refuses a missing target column)
    y = columns[holdout.target]
    if any(v is None for v in y):
        raise UsageError(f"holdout {holdout.path}: the target column {holdout.target!r} has empty cells")
    model = load_model(bundle, spec)
    try:
        predicted = list(model.predict(X))
    except Exception as exc:  # the model's own code
        raise StageFailed(f"the model failed on the holdout data: {type(exc).__name__}: {_first_line(exc)}") from None
    if len(predicted) != len(X):
        raise StageFailed(f"the model gave {len(predicted)} predictions for {len(X)} holdout rows")
    with warnings.catch_warnings():  # an undefined score is reported as such below, not as a warning
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        scores = (
            _regression(y, predicted, holdout)
            if meta.task == "regression"
            else _classification(meta, model, X, y, predicted, holdout)
        )
    return {name: value for name, value in scores.items() if value is not None}


def _child(argv: list[str]) -> int:
    """`python -m mlops_cli.holdout JOB MEMORY_MB RESULT`: score in this (bounded) process, write RESULT."""
    from serving.modules.trial import limit_memory

    from .errors import MlopsError
    from .settings import HoldoutSettings

    job_path, memory_mb, result_path = argv
    outcome: dict[str, Any]
    try:
        limit_memory(int(memory_mb))
        job = json.loads(Path(job_path).read_text(encoding="utf-8"))
        scores = score(
            Path(job["bundle"]),
            job["columns"],
            job["task"],
            job["labels"],
            HoldoutSettings.model_validate(job["holdout"]),
        )
        outcome = {"scores": scores}
    except MlopsError as exc:
        outcome = {"error": {"kind": type(exc).__name__, "message": exc.message, "hint": exc.hint}}
    except MemoryError:
        outcome = {"error": {"kind": "StageFailed", "message": "scoring the holdout ran out of memory: MemoryError"}}
    except Exception as exc:  # the model's own code
        outcome = {
            "error": {
                "kind": "StageFailed",
                "message": f"scoring the holdout failed: {type(exc).__name__}: {_first_line(exc)}",
            }
        }
    tmp = Path(result_path).with_name(f".{Path(result_path).name}.tmp")
    tmp.write_text(json.dumps(outcome), encoding="utf-8")
    os.replace(tmp, result_path)
    return 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _finite(name: str, value: float, why: str) -> float:
    if not math.isfinite(value):
        raise StageFailed(f"holdout {name} cannot be computed ({why})")
    return float(value)


def _regression(y: list[Any], predicted: list[Any], holdout: Any) -> dict[str, float | None]:
    import numpy as np
    from sklearn import metrics as skm

    try:
        truth = np.asarray(y, dtype=float)
    except (TypeError, ValueError):
        raise UsageError(
            f"holdout {holdout.path}: the target {holdout.target!r} is not numeric (a regression model)"
        ) from None
    if not np.isfinite(truth).all():
        raise UsageError(f"holdout {holdout.path}: the target {holdout.target!r} has NaN or infinite values")
    try:
        pred = np.asarray(predicted, dtype=float)
    except (TypeError, ValueError):
        raise StageFailed("the model's predictions on the holdout data are not numbers") from None
    if not np.isfinite(pred).all():
        bad = int((~np.isfinite(pred)).sum())
        raise StageFailed(f"the model predicted NaN or infinity for {bad} of {len(pred)} holdout rows")
    r2 = float(skm.r2_score(truth, pred)) if len(truth) > 1 else math.nan
    return {
        "rmse": float(math.sqrt(skm.mean_squared_error(truth, pred))),
        "mae": float(skm.mean_absolute_error(truth, pred)),
        "r2": r2 if math.isfinite(r2) else None,
    }  # undefined for a constant target: left out, named if needed


def _classification(
    meta: Any, model: Any, X: Any, y: list[Any], predicted: list[Any], holdout: Any
) -> dict[str, float | None]:
    import numpy as np
    from sklearn import metrics as skm

    labels = meta.labels
    if any(isinstance(v, float) and not math.isfinite(v) for v in y):
        raise UsageError(f"holdout {holdout.path}: the target {holdout.target!r} has NaN or infinite values")
    if any(isinstance(v, (float, np.floating)) and not math.isfinite(float(v)) for v in predicted):
        raise StageFailed("the model predicted NaN or infinity as a class on the holdout data")

    def name(value: Any) -> str:  # a class index becomes its label where the model has labels
        if (
            labels
            and isinstance(value, (int, np.integer, float, np.floating))
            and float(value).is_integer()
            and 0 <= int(value) < len(labels)
        ):
            return _label(labels[int(value)])
        return _label(value)

    truth = [_label(v) for v in y]
    if labels and all(t not in {_label(lab) for lab in labels} for t in truth):
        truth = [name(v) for v in y]  # the target holds class indices
    pred = [name(v) for v in predicted]
    out: dict[str, float | None] = {
        "accuracy": float(skm.accuracy_score(truth, pred)),
        "f1": float(skm.f1_score(truth, pred, average="macro", zero_division=0)),
    }
    proba = getattr(model, "predict_proba", None)
    classes = getattr(model, "classes_", None)
    if callable(proba) and classes is not None and len(set(truth)) > 1:
        try:
            scores = np.asarray(proba(X), dtype=float)
        except Exception as exc:  # the model's own code
            raise StageFailed(
                f"the model's predict_proba failed on the holdout data: {type(exc).__name__}: {_first_line(exc)}"
            ) from None
        names = [name(c) for c in classes]
        if not set(truth) <= set(names):
            raise UsageError(
                f"holdout {holdout.path}: target values {sorted(set(truth) - set(names))} "
                f"are not classes of the model ({', '.join(names)})"
            )
        if scores.shape != (len(truth), len(names)):
            raise StageFailed(
                f"the model's predict_proba gave shape {scores.shape} for {len(truth)} holdout rows "
                f"and {len(names)} classes"
            )
        if not np.isfinite(scores).all():
            raise StageFailed("the model's predict_proba gave NaN or infinity on the holdout data")
        missing = sorted(set(names) - set(truth))
        try:
            if len(names) == 2:
                auc = float(skm.roc_auc_score([t == names[1] for t in truth], scores[:, 1]))
            else:
                auc = float(skm.roc_auc_score(truth, scores, multi_class="ovr", labels=names))
        except ValueError as exc:
            auc = math.nan
            missing = missing or [_first_line(exc)]
        if math.isfinite(auc):
            out["roc_auc"] = auc
        elif "roc_auc" in holdout.thresholds:
            raise StageFailed(
                f"holdout roc_auc cannot be computed (the holdout target has no rows of class {', '.join(missing)})"
                if missing
                else "holdout roc_auc cannot be computed"
            )
    return out


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
