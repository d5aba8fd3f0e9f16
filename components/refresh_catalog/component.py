"""Add the embedded batch to the serving catalog (bgmrec.steps.refresh_catalog_step)."""

from kfp import dsl
from kfp.dsl import Dataset, Input

from components import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def refresh_catalog(batch: Input[Dataset], embeddings: Input[Dataset], registry_dir: str, params_path: str) -> str:
    """REGISTRY/catalog.parquet gains the batch (flagged new), and its vector index the same music (params
    `catalog:`); servers pick up the new files. Returns a one-line summary."""
    from bgmrec.config import load_config
    from bgmrec.steps import refresh_catalog_step

    result = refresh_catalog_step(batch.path, embeddings.path, registry_dir,
                                  catalog_settings=load_config(params_path).catalog)
    summary = (f"catalog {result['catalog']}: added {result['added']} music "
               f"({result['music_before']} -> {result['music_after']}, version {result['catalog_version']})")
    print(summary)
    return summary
