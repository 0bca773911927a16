"""mlops: take a trained model to a monitored inference service, stage by stage."""

__version__ = "0.1.0"
