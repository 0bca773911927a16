"""Write prometheusrule.yaml from mlops-rules.yml: `python deploy/monitoring/generate_prometheusrule.py`.

tests/unit/test_monitoring_files.py checks that the two hold the same groups.
"""

from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
HEADER = """\
# The groups of mlops-rules.yml as a PrometheusRule object (OpenShift user-workload monitoring,
# prometheus-operator): `oc apply -n <namespace> -f prometheusrule.yaml`. Generated from mlops-rules.yml
# by generate_prometheusrule.py; tests/unit/test_monitoring_files.py checks that the two hold the same groups.
"""


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


def render() -> str:
    groups = yaml.safe_load((HERE / "mlops-rules.yml").read_text())["groups"]
    obj = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "mlops-rules", "labels": {"app.kubernetes.io/part-of": "mlops", "role": "alert-rules"}},
        "spec": {"groups": groups},
    }
    return HEADER + yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=200)


if __name__ == "__main__":
    (HERE / "prometheusrule.yaml").write_text(render())
