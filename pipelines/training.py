"""The training pipeline: validate manifests → extract (ParallelFor shards) → validate features → Feast →
train every model on the weak and the strong split (GPU nodes) → evaluate (and a recommendations report per
model: an HTML artifact with test videos, their top-10 music to listen to, Recall@K curves and diversity) → gate
(dsl.If on the Recall@K thresholds AND not worse than production minus the tolerance) → register + promote;
otherwise a report of why the gate refused, with production untouched. The same steps as `dvc repro` (dvc.yaml),
one home each.
"""

from kfp import dsl

from bgmrec.config import Config
from components.assemble_features.component import assemble_features
from components.evaluate_model.component import evaluate_model
from components.extract_shard.component import extract_shard
from components.feast_apply.component import feast_apply
from components.gate_model.component import gate_model
from components.publish_report.component import publish_report
from components.register_model.component import register_model
from components.report.component import recommendations_report
from components.train_model.component import train_model
from components.validate_features.component import validate_features
from components.validate_manifests.component import validate_manifests
from pipelines.platform import on_cluster, on_gpu_node, with_feast_online_store

PIPELINE_NAME = "bgmrec-training"
SPLIT_KINDS = ("weak", "strong")


def build_training_pipeline(config: Config | None = None):
    """The pipeline function. Compiled in from the configuration: the models to train (`models:`), the gated
    model and the default thresholds and tolerance (`gate:`), the shard count and cluster settings
    (`kubeflow:`)."""
    config = config or Config()
    settings = config.kubeflow
    gate = config.gate
    models = list(config.models)
    candidate = gate.model
    shards = list(range(settings.extract_shards))

    @dsl.pipeline(name=PIPELINE_NAME, description="Train CMVAE and VMCML, gate on Recall@K, promote.")
    def training(
        dataset_dir: str = settings.dataset_dir,
        registry_dir: str = settings.registry_dir,
        feature_repo: str = settings.feature_repo,
        params_path: str = settings.params_path,
        recall_thresholds: dict = dict(gate.thresholds),  # noqa: B006 - a KFP parameter default
        tolerance: float = gate.tolerance,
    ) -> str:
        manifests = on_cluster(
            validate_manifests(dataset_dir=dataset_dir, params_path=params_path), settings
        ).set_display_name("validate manifests")
        with dsl.ParallelFor(shards, name="extract-shards") as shard:
            # The dataset dir comes from the pipeline parameter plus .after(): kfp.local 2.17 resolves an upstream
            # task's output inside a ParallelFor to the loop item instead.
            part = on_cluster(
                extract_shard(dataset_dir=dataset_dir, shard=shard, n_shards=len(shards), params_path=params_path),
                settings,
            ).set_display_name("extract shard").after(manifests)
        assembled = on_cluster(
            assemble_features(dataset_dir=dataset_dir, params_path=params_path,
                              shard_failures=dsl.Collected(part.output)),
            settings,
        ).set_display_name("assemble features")
        features = on_cluster(
            validate_features(dataset_dir=assembled.output, params_path=params_path), settings
        ).set_display_name("validate features")
        store = with_feast_online_store(on_cluster(
            feast_apply(dataset_dir=features.outputs["Output"], feature_repo=feature_repo, params_path=params_path),
            settings,
        ), settings).set_display_name("features to Feast")

        trained, evaluated = {}, {}
        for model_name in models:
            for split_kind in SPLIT_KINDS:
                trained[model_name, split_kind] = on_gpu_node(
                    train_model(dataset_dir=dataset_dir, model_name=model_name, split_kind=split_kind,
                                feature_repo=store.output, params_path=params_path),
                    settings,
                ).set_display_name(f"train {model_name} ({split_kind})")
            evaluated[model_name] = on_cluster(
                evaluate_model(dataset_dir=dataset_dir, weak_model=trained[model_name, "weak"].outputs["model"],
                               strong_model=trained[model_name, "strong"].outputs["model"],
                               params_path=params_path),
                settings,
            ).set_display_name(f"evaluate {model_name}")
            on_cluster(
                recommendations_report(dataset_dir=dataset_dir, model=trained[model_name, "weak"].outputs["model"],
                                       metrics=evaluated[model_name].outputs["metrics"], model_name=model_name,
                                       params_path=params_path),
                settings,
            ).set_display_name(f"report {model_name}")

        # The verdict depends on the registry's current production model: never served from a cache.
        verdict = on_cluster(
            gate_model(metrics=evaluated[candidate].outputs["metrics"], registry_dir=registry_dir,
                       thresholds=recall_thresholds, tolerance=tolerance, model_name=candidate),
            settings,
        ).set_display_name(f"gate {candidate}").set_caching_options(False)
        with dsl.If(verdict.outputs["passed"] == True, name="gate-passed"):  # noqa: E712 - KFP condition
            promoted = on_cluster(
                register_model(model=trained[candidate, "weak"].outputs["model"],
                               metrics=evaluated[candidate].outputs["metrics"], registry_dir=registry_dir,
                               model_name=candidate),
                settings,
            ).set_display_name("register and promote").set_caching_options(False)
        with dsl.Else(name="gate-refused"):
            refused = on_cluster(
                publish_report(title="gate refused, production unchanged", text=verdict.outputs["report"]),
                settings,
            ).set_display_name("report refusal").set_caching_options(False)
        return dsl.OneOf(promoted.output, refused.outputs["Output"])

    return training
