"""Pipeline definitions (pure DSL) and their compiled IR in compiled/."""

from datawheel.pipelines.flywheel import flywheel
from datawheel.pipelines.training import training

PIPELINES = {"training": training, "flywheel": flywheel}

__all__ = ["PIPELINES", "flywheel", "training"]
