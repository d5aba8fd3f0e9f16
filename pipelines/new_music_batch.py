"""The new-music-batch pipeline: validate the batch → extract → push to Feast → embed with the production music
encoder → refresh the serving catalog → (batch with videos) strong-generalization Recall@K. A refused batch ends
in a report and touches nothing.

Retraining is not part of this pipeline: run the training pipeline (same gate) when enough new music has
gathered; see docs/kubeflow.md.
"""


from kfp import dsl

from bgmrec.config import Config
from components.embed_music_batch.component import embed_music_batch
from components.evaluate_music_batch.component import evaluate_music_batch
from components.extract_music_batch.component import extract_music_batch
from components.ingest_music_batch.component import ingest_music_batch
from components.publish_report.component import publish_report
from components.push_music_batch.component import push_music_batch
from components.refresh_catalog.component import refresh_catalog
from pipelines.platform import on_cluster, with_feast_online_store

PIPELINE_NAME = "bgmrec-new-music-batch"
# The pipeline's result starts with this when the batch was refused (bgmrec trigger checks it).
REFUSED_TITLE = "music batch refused"


def build_new_music_batch_pipeline(config: Config | None = None):
    """The pipeline function, with cluster defaults (paths, resources) from the configuration's `kubeflow:`."""
    settings = (config or Config()).kubeflow

    @dsl.pipeline(name=PIPELINE_NAME, description="Add a batch of new music to the serving catalog.")
    def new_music_batch(
        batch_dir: str,
        dataset_dir: str = settings.dataset_dir,
        registry_dir: str = settings.registry_dir,
        feature_repo: str = settings.feature_repo,
        params_path: str = settings.params_path,
    ) -> str:
        ingest = on_cluster(
            ingest_music_batch(batch_dir=batch_dir, registry_dir=registry_dir, params_path=params_path), settings
        ).set_display_name("validate batch")
        with dsl.If(ingest.outputs["passed"] == True, name="batch-accepted"):  # noqa: E712 - KFP condition
            extract = on_cluster(
                extract_music_batch(batch=ingest.outputs["batch"], dataset_dir=dataset_dir, params_path=params_path),
                settings,
            ).set_display_name("extract music features")
            push = with_feast_online_store(on_cluster(
                push_music_batch(features=extract.outputs["features"], feature_repo=feature_repo), settings
            ), settings).set_display_name("push to Feast")
            embed = on_cluster(
                embed_music_batch(features=extract.outputs["features"], registry_dir=registry_dir), settings
            ).set_display_name("embed with the production music encoder")
            refresh = on_cluster(
                refresh_catalog(batch=extract.outputs["features"], embeddings=embed.outputs["embeddings"],
                                registry_dir=registry_dir, params_path=params_path),
                settings,
            ).set_display_name("refresh serving catalog").after(push)
            with dsl.If(ingest.outputs["has_videos"] == True, name="batch-has-videos"):  # noqa: E712
                on_cluster(
                    evaluate_music_batch(batch_dir=batch_dir, features=extract.outputs["features"],
                                         registry_dir=registry_dir, params_path=params_path),
                    settings,
                ).set_display_name("strong-generalization Recall@K").after(refresh)
        with dsl.Else(name="batch-refused"):
            refused = on_cluster(
                publish_report(title=REFUSED_TITLE, text=ingest.outputs["summary"]), settings
            ).set_display_name("report refusal")
        return dsl.OneOf(refresh.output, refused.outputs["Output"])

    return new_music_batch
