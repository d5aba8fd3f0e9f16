"""Catalog steps: embed the catalog with the production model, add an accepted batch of new music."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from bgmrec.config import CatalogSettings


def build_catalog_step(dataset_dir: str | Path, registry_dir: str | Path, *,
                       catalog_settings: CatalogSettings | None = None) -> dict[str, Any]:
    """Embed every music of the dataset with the production model's music encoder into REGISTRY/catalog.parquet.

    Popularity is the dataset's videos per music; music the production model never saw in training is flagged
    new (the checkpoint records its training music ids). The catalog is stamped with the model version, and its
    version follows the previous catalog's (serving replicas report it). A catalog of at least
    `catalog_settings.index_min_size` music (default: the `catalog:` defaults) gets its vector index built and
    saved with it, so replicas load it instead of building it. The catalog is written as one new base (every
    segment added since folded in, bgmrec.catalog_storage).

    Every batch of new music the ledger recorded (bgmrec.ledger) is re-embedded with the dataset's music, so a
    rebuild (`dvc repro`, a new production model) keeps the music added since the dataset was made. Inside a DVC
    experiment nothing is written: the result says so.
    """
    import dataclasses

    from bgmrec.catalog import CATALOG_FILE, build_catalog, stored_version
    from bgmrec.config import CatalogSettings
    from bgmrec.data.contract import MusicVectors, load_dataset
    from bgmrec.ledger import catalog_transaction, recorded_batches
    from bgmrec.registry import ModelRegistry, experiment_skip

    if (skipped := experiment_skip("the serving catalog")) is not None:
        return skipped
    registry = ModelRegistry(registry_dir)
    record = registry.require_production()
    model = registry.load_production()
    dataset = load_dataset(dataset_dir)
    assert dataset.music_vectors is not None
    vectors = dataset.music_vectors
    ids = [str(i) for i in vectors.ids]
    titles = (dataset.music.set_index("music_id")["title"].reindex(ids).tolist() if "title" in dataset.music
              else [None] * len(ids))
    popularity = [float(p) for p in dataset.popularity]
    with catalog_transaction(registry.root):
        for batch, batch_titles in recorded_batches(registry.root):
            known = set(ids)
            keep = np.asarray([str(i) not in known for i in batch.ids])
            vectors = MusicVectors(np.concatenate([vectors.ids, batch.ids[keep]]),
                                   np.concatenate([vectors.audio_embedding, batch.audio_embedding[keep]]),
                                   np.concatenate([vectors.audio_lld, batch.audio_lld[keep]]))
            added = [str(i) for i in batch.ids[keep]]
            ids += added
            titles += [batch_titles.get(i) for i in added]
            popularity += [0.0] * len(added)
        seen = set(model.extra.get("train_music_ids", ids))
        catalog = build_catalog(
            model, vectors, titles=titles, popularity=np.asarray(popularity),
            is_new=np.asarray([i not in seen for i in ids]), model_version=record["version"],
        )
        path = registry.root / CATALOG_FILE
        previous = stored_version(path)
        if previous is not None:
            catalog = dataclasses.replace(catalog, version=previous + 1, normalised=True)
        catalog = catalog.with_index(catalog_settings or CatalogSettings())
        catalog.save(path)
    return {"catalog": str(path), "music": len(catalog), "new_music": int(catalog.is_new.sum()),
            "from_batches": len(catalog) - len(dataset.music), "dim": catalog.dim,
            "model_version": record["version"], "indexed": catalog.index is not None}


def refresh_catalog_step(
    batch_out_dir: str | Path, embeddings_dir: str | Path, registry_dir: str | Path, *,
    catalog_settings: CatalogSettings | None = None,
) -> dict[str, Any]:
    """Add the batch's embedded music (flagged new) to REGISTRY/catalog.parquet; refuses embeddings made by a
    model other than the one in production (the catalog must hold one embedding space).

    The batch becomes a segment of the stored catalog (bgmrec.catalog_storage): its cost follows the batch, not
    the catalog; replicas add its rows to the base's vector index when they load it. A catalog that reaches
    `catalog_settings.index_min_size` without an index is rewritten once, with one.

    One transaction under the catalog's lock (bgmrec.ledger): the batch is recorded in the ledger (so rebuilds
    keep it) and appended to the catalog as it is inside the lock, so batches added at the same time are all
    kept, and music already in the catalog (a re-run of a batch) is not added twice.
    """
    import pandas as pd
    import pyarrow.parquet as pq

    from bgmrec.batch import ACCEPTED_FILE
    from bgmrec.catalog import CATALOG_FILE, append_batch
    from bgmrec.config import CatalogSettings
    from bgmrec.ledger import catalog_transaction, record_batch
    from bgmrec.registry import ModelRegistry
    from bgmrec.steps.music_batch import read_batch_music_vectors

    registry = ModelRegistry(registry_dir)
    table = pq.read_table(Path(embeddings_dir) / "embeddings.parquet")
    made_by = (table.schema.metadata or {}).get(b"model_version", b"").decode()
    record = registry.production()
    if record is None or record["version"] != made_by:
        current = record["version"] if record else "none"
        raise ValueError(f"embeddings were made by model {made_by or 'unknown'} but production is {current}: "
                         "re-run the embed step")
    ids = [str(i) for i in table.column("music_id").to_pylist()]
    column = table.column("embedding").combine_chunks()
    embeddings = column.flatten().to_numpy().reshape(len(ids), column.type.list_size)
    titles = {str(i): None if pd.isna(t) else str(t) for i, t in
              pd.read_parquet(Path(batch_out_dir) / ACCEPTED_FILE).set_index("music_id")["title"].items()}
    catalog_path = registry.root / CATALOG_FILE
    with catalog_transaction(registry.root):
        batch = record_batch(registry.root, read_batch_music_vectors(batch_out_dir), titles)
        appended = append_batch(catalog_path, batch, ids, embeddings, [titles.get(i) for i in ids], made_by,
                                catalog_settings or CatalogSettings())
    return {"catalog": str(catalog_path), "added": appended.added, "music_before": appended.rows_before,
            "music_after": appended.rows_after, "catalog_version": appended.version, "indexed": appended.indexed}
