"""Add the embedded batch to the serving catalog (bgmrec.steps.refresh_catalog_step)."""

from kfp import dsl
from kfp.dsl import Dataset, Input

from components import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def refresh_catalog(batch: Input[Dataset], embeddings: Input[Dataset], registry_dir: str) -> str:
    """REGISTRY/catalog.parquet gains the batch (flagged new); servers pick up the new file. Returns a one-line
    summary."""
    from bgmrec.steps import refresh_catalog_step

    result = refresh_catalog_step(batch.path, embeddings.path, registry_dir)
    summary = (f"catalog {result['catalog']}: added {result['added']} music "
               f"({result['music_before']} -> {result['music_after']}, version {result['catalog_version']})")
    print(summary)
    return summary
