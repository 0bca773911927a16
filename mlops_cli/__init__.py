"""mlops: take a trained model to a monitored inference service, stage by stage."""

__version__ = "0.1.0"  # the one version source: setup.cfg reads it (version = attr: mlops_cli.__version__)
DISTRIBUTION = "mlops-pipeline-kit"  # the name on PyPI (`pip install mlops-pipeline-kit`); the command is `mlops`
