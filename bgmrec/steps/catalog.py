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
    saved beside it (REGISTRY/catalog.index), so replicas load it instead of building it.

    Every batch of new music the ledger recorded (bgmrec.ledger) is re-embedded with the dataset's music, so a
    rebuild (`dvc repro`, a new production model) keeps the music added since the dataset was made.
    """
    import dataclasses

    import pyarrow.parquet as pq

    from bgmrec.catalog import CATALOG_FILE, build_catalog
    from bgmrec.config import CatalogSettings
    from bgmrec.data.contract import MusicVectors, load_dataset
    from bgmrec.ledger import catalog_transaction, recorded_batches
    from bgmrec.registry import ModelRegistry

    registry = ModelRegistry(registry_dir)
    record = registry.production()
    if record is None:
        raise FileNotFoundError(f"no production model in {registry.root}; run the gate step first")
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
        if path.exists():
            previous = pq.read_schema(path).metadata or {}
            catalog = dataclasses.replace(catalog, version=int(previous.get(b"bgmrec_catalog_version", b"0")) + 1)
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

    The vector index beside it grows with the catalog (a copy of the saved index with the batch added; built
    when the catalog reaches `catalog_settings.index_min_size`), so no full rebuild is needed.

    One transaction under the catalog's lock (bgmrec.ledger): the batch is recorded in the ledger (so rebuilds
    keep it), the current catalog is read inside the lock, so batches added at the same time are all kept, and
    music already in the catalog (a re-run of a batch) is not added twice.
    """
    import pandas as pd
    import pyarrow.parquet as pq

    from bgmrec.batch import ACCEPTED_FILE
    from bgmrec.catalog import CATALOG_FILE, load_catalog
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
    titles = pd.read_parquet(Path(batch_out_dir) / ACCEPTED_FILE).set_index("music_id")["title"]
    catalog_path = registry.root / CATALOG_FILE
    catalog_settings = catalog_settings or CatalogSettings()
    with catalog_transaction(registry.root):
        record_batch(registry.root, read_batch_music_vectors(batch_out_dir),
                     {str(i): None if pd.isna(t) else str(t) for i, t in titles.items()})
        catalog = load_catalog(catalog_path, catalog_settings)
        if catalog.model_version and catalog.model_version != made_by:
            raise ValueError(f"{catalog_path} was embedded by model {catalog.model_version} but production is "
                             f"{made_by}: rebuild the catalog (`bgmrec build-catalog`) before adding music")
        before = len(catalog)
        fresh = [row for row, music_id in enumerate(ids) if catalog.indices_of([music_id])[0] < 0]
        if fresh:
            catalog = catalog.add([ids[r] for r in fresh], embeddings[fresh],
                                  titles=[titles.get(ids[r]) for r in fresh]).with_index(catalog_settings)
            catalog.save(catalog_path)
    return {"catalog": str(catalog_path), "added": len(fresh), "music_before": before, "music_after": len(catalog),
            "catalog_version": catalog.version, "indexed": catalog.index is not None}
