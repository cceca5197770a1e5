"""Registry component: register a model version and point an alias at it."""

from kfp import dsl
from kfp.dsl import HTML, Input, Model

from datawheel.deploy.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def register(
    store: str,
    model_name: str,
    dataset_name: str,
    dataset_version: str,
    evaluation: str,
    alias: str,
    model: Input[Model],
    report: Input[HTML],
) -> str:
    """Register the model with its card, metrics and HTML report; returns the run summary."""
    from datawheel.orchestration.register import register_step

    return register_step(
        store,
        model_name,
        model.path,
        dataset_name,
        dataset_version,
        evaluation,
        alias,
        report_path=report.path,
    )
