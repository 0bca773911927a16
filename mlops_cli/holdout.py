"""Holdout evaluation: score a model on a dataset the toolkit reads itself (CSV or Parquet, local or S3).

The dataset's columns are the model's inputs (by the names in its schema) and one target column; a
missing input or an unknown column is an error that names them. Classification gets accuracy, F1
(macro-averaged over the classes) and ROC-AUC (one-vs-rest on predict_proba); regression RMSE, MAE, R².
The artifact must have passed its digest check before it is loaded: loading a pickle runs code.
"""

from __future__ import annotations

import csv
import io
import math
import sys
import types
import warnings
from pathlib import Path
from typing import Any, Optional

from .errors import ConfigError, StageFailed, UsageError

# Which way is better, for metrics known by name; a prefixed name (`val/rmse`, `val_loss`, `test-mae`) counts
# as its last part. A metric in neither table needs validation.metric_directions.
LOWER_IS_BETTER = {"loss", "log_loss", "logloss", "cross_entropy", "nll", "mse", "rmse", "mae", "mape", "smape",
                   "msle", "rmsle", "error", "error_rate", "err", "brier", "brier_score", "hinge", "hamming_loss",
                   "zero_one_loss", "perplexity", "wer", "cer", "fpr", "fnr", "far", "frr", "latency", "eer"}
HIGHER_IS_BETTER = {"accuracy", "acc", "balanced_accuracy", "f1", "f1_score", "f1_macro", "f1_micro",
                    "f1_weighted", "precision", "recall", "roc_auc", "auc", "pr_auc", "average_precision", "ap",
                    "r2", "explained_variance", "mcc", "kappa", "cohen_kappa", "iou", "map", "ndcg", "bleu",
                    "rouge", "tpr", "tnr", "specificity", "sensitivity", "top5", "top1", "top_5", "top_1"}


def direction(metric: str, declared: dict[str, str]) -> Optional[str]:
    """"lower" or "higher" (is better) for the metric: as declared, else by its name; None when unknown."""
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
        raise ConfigError("reading a Parquet holdout needs the 'pyarrow' package, which is not installed",
                          hint="pip install 'mlops[parquet]'") from None
    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises ArrowInvalid and OSError kinds for a bad file
        raise UsageError(f"holdout {where} is not a readable Parquet file: {str(exc).splitlines()[0]}") from None
    return {name: table.column(name).to_pylist() for name in table.column_names}


def read_table(path: str, fmt: Optional[str], s3_settings: Any) -> dict[str, list[Any]]:
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
    fmt = fmt or ("parquet" if path.lower().endswith((".parquet", ".pq")) else "csv" if path.lower().endswith(".csv") else None)
    if fmt is None:
        raise UsageError(f"cannot tell the format of holdout {path}", hint="name it .csv or .parquet or set validation.holdout.format")
    columns = (_read_parquet if fmt == "parquet" else _read_csv)(data, path)
    if not columns or not next(iter(columns.values()), []):
        raise UsageError(f"holdout {path} has no rows")
    return columns


def load_model(artifact: Path, framework: str, class_name: Optional[str]) -> Any:
    """Load a digest-checked artifact the way the serving runtime does."""
    data = Path(artifact).read_bytes()
    if framework == "sklearn":
        import joblib

        try:
            return joblib.load(io.BytesIO(data))
        except Exception as exc:  # unpickling raises anything
            raise StageFailed(f"cannot load model artifact {Path(artifact).name}: {type(exc).__name__}: {exc}") from None
    module = types.ModuleType("mlops_holdout_model")
    module.__file__ = str(artifact)
    sys.modules[module.__name__] = module
    exec(compile(data, str(artifact), "exec"), module.__dict__)
    cls = getattr(module, str(class_name), None)
    if not isinstance(cls, type):
        raise StageFailed(f"model artifact {Path(artifact).name} defines no class {class_name!r}")
    return cls()


def _features(columns: dict[str, list[Any]], meta: Any, target: str, where: str) -> list[list[float]]:
    inputs = [f.name for f in meta.schema_.inputs]
    missing = [f.name for f in meta.schema_.inputs if f.name not in columns and f.required]
    extra = [c for c in columns if c not in inputs and c != target]
    problems = []
    if target not in columns:
        problems.append(f"no target column {target!r}")
    if missing:
        problems.append("missing columns " + ", ".join(missing))
    if extra:
        problems.append("extra columns " + ", ".join(extra))
    if problems:
        raise UsageError(f"holdout {where}: {'; '.join(problems)} (the model's inputs: {', '.join(inputs)}; "
                         f"target: {target})", hint="set validation.holdout.target to the label column")
    rows = len(columns[target])
    matrix = [[0.0] * len(inputs) for _ in range(rows)]
    for j, feature in enumerate(meta.schema_.inputs):
        values = columns.get(feature.name) or [feature.default] * rows
        for i, value in enumerate(values):
            if value is None and not feature.required:
                value = feature.default
            if isinstance(value, bool):
                value = float(value)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UsageError(f"holdout {where}: row {i + 1}, column {feature.name!r}: {value!r} is not a number "
                                 "(holdout evaluation takes numeric inputs)")
            matrix[i][j] = float(value)
    return matrix


def _label(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def evaluate(meta: Any, artifact: Path, holdout: Any, s3_settings: Any) -> dict[str, float]:
    """The holdout metrics of the model (those its task has)."""
    import numpy as np
    from sklearn.exceptions import UndefinedMetricWarning

    columns = read_table(holdout.path, holdout.format, s3_settings)
    X = np.asarray(_features(columns, meta, holdout.target, holdout.path), dtype=float)
    pre = meta.modules.preprocessing if getattr(meta, "modules", None) else None
    if pre is not None and pre.scale:  # as the server does at the model's door (preprocessing.scale)
        names = [f.name for f in meta.schema_.inputs]
        for name, scaling in pre.scale.items():
            if name in names:
                j = names.index(name)
                X[:, j] = (X[:, j] - scaling.center) / scaling.scale
    y = columns[holdout.target]
    if any(v is None for v in y):
        raise UsageError(f"holdout {holdout.path}: the target column {holdout.target!r} has empty cells")
    model = load_model(artifact, meta.framework, meta.class_name)
    try:
        predicted = list(model.predict(X))
    except Exception as exc:  # the model's own code
        raise StageFailed(f"the model failed on the holdout data: {type(exc).__name__}: {_first_line(exc)}") from None
    if len(predicted) != len(X):
        raise StageFailed(f"the model gave {len(predicted)} predictions for {len(X)} holdout rows")
    with warnings.catch_warnings():  # an undefined score is reported as such below, not as a warning
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        scores = _regression(y, predicted, holdout) if meta.task == "regression" else \
            _classification(meta, model, X, y, predicted, holdout)
    return {name: value for name, value in scores.items() if value is not None}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _finite(name: str, value: float, why: str) -> float:
    if not math.isfinite(value):
        raise StageFailed(f"holdout {name} cannot be computed ({why})")
    return float(value)


def _regression(y: list[Any], predicted: list[Any], holdout: Any) -> dict[str, Optional[float]]:
    import numpy as np
    from sklearn import metrics as skm

    try:
        truth = np.asarray(y, dtype=float)
    except (TypeError, ValueError):
        raise UsageError(f"holdout {holdout.path}: the target {holdout.target!r} is not numeric (a regression model)") from None
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
    return {"rmse": float(math.sqrt(skm.mean_squared_error(truth, pred))),
            "mae": float(skm.mean_absolute_error(truth, pred)),
            "r2": r2 if math.isfinite(r2) else None}  # undefined for a constant target: left out, named if needed

def _classification(meta: Any, model: Any, X: Any, y: list[Any], predicted: list[Any],
                    holdout: Any) -> dict[str, Optional[float]]:
    import numpy as np
    from sklearn import metrics as skm

    labels = meta.labels
    if any(isinstance(v, float) and not math.isfinite(v) for v in y):
        raise UsageError(f"holdout {holdout.path}: the target {holdout.target!r} has NaN or infinite values")
    if any(isinstance(v, (float, np.floating)) and not math.isfinite(float(v)) for v in predicted):
        raise StageFailed("the model predicted NaN or infinity as a class on the holdout data")

    def name(value: Any) -> str:  # a class index becomes its label where the model has labels
        if labels and isinstance(value, (int, np.integer, float, np.floating)) and float(value).is_integer() \
                and 0 <= int(value) < len(labels):
            return _label(labels[int(value)])
        return _label(value)

    truth = [_label(v) for v in y]
    if labels and all(t not in {_label(lab) for lab in labels} for t in truth):
        truth = [name(v) for v in y]   # the target holds class indices
    pred = [name(v) for v in predicted]
    out = {"accuracy": float(skm.accuracy_score(truth, pred)),
           "f1": float(skm.f1_score(truth, pred, average="macro", zero_division=0))}
    proba = getattr(model, "predict_proba", None)
    classes = getattr(model, "classes_", None)
    if callable(proba) and classes is not None and len(set(truth)) > 1:
        try:
            scores = np.asarray(proba(X), dtype=float)
        except Exception as exc:  # the model's own code
            raise StageFailed(f"the model's predict_proba failed on the holdout data: {type(exc).__name__}: "
                              f"{_first_line(exc)}") from None
        names = [name(c) for c in classes]
        if not set(truth) <= set(names):
            raise UsageError(f"holdout {holdout.path}: target values {sorted(set(truth) - set(names))} "
                             f"are not classes of the model ({', '.join(names)})")
        if scores.shape != (len(truth), len(names)):
            raise StageFailed(f"the model's predict_proba gave shape {scores.shape} for {len(truth)} holdout rows "
                              f"and {len(names)} classes")
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
            raise StageFailed(f"holdout roc_auc cannot be computed (the holdout target has no rows of class "
                              f"{', '.join(missing)})" if missing else "holdout roc_auc cannot be computed")
    return out
