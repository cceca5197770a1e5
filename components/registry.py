"""Registry component: register a model version and point an alias at it.

``alias`` is what the pipeline's branch asks for (``champion`` on promote, ``challenger``
on reject); with ``canary`` (or the model's store setting) a promotion sets ``candidate``
instead, which only ``datawheel deploy canary`` rolls out."""

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
    canary: bool = False,
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
        canary=canary,
    )
