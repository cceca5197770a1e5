"""Pipeline definitions (pure DSL) and their compiled IR in compiled/."""

from datawheel.pipelines.training import training

PIPELINES = {"training": training}

__all__ = ["PIPELINES", "training"]
