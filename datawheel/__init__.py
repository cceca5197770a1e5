"""datawheel: a data-flywheel MLOps platform on Kubeflow Pipelines v2."""

__version__ = "0.1.0"
