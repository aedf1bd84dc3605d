"""MLflow experiments as the platform creates them: artifacts beside a sqlite database, marked as model training.

MLflow 3's UI has two workflows, "GenAI" (an Overview of traces) and "Model training" (the runs table). The
experiment's own record of its kind is the tag `mlflow.experimentKind` (the value the UI's kind selector writes
for "Machine learning" is `custom_model_development`), set here on every experiment the platform creates. The
view a browser opens on is chosen by the UI's GenAI / Model training switch (kept in the browser, GenAI at
first), which the URL parameter `workflowType=machine_learning` sets: `ui_url` gives links that open on the runs.
"""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
UI_WORKFLOW = "workflowType=machine_learning"


def get_or_create_experiment(client: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    """The id of experiment `name`, created when missing with the model-training kind tag. An existing experiment
    without a kind (made before the platform set one) gets it; a kind someone chose is left alone."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location,
                                            tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
        except MlflowException as err:  # another worker created it between the lookup and here
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise err from None
    if EXPERIMENT_KIND_TAG not in exp.tags:
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    return exp.experiment_id


def ui_url(experiment_id: str, base: str = "http://127.0.0.1:5000") -> str:
    """The experiment's page in `mlflow ui`, on the Model training runs view."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}?{UI_WORKFLOW}"


def experiment_page(uri: str, name: str, base: str = "http://127.0.0.1:5000") -> str:
    """`ui_url` of experiment `name` in the database at `uri` (the UI's start page when it does not exist)."""
    exp = MlflowClient(tracking_uri=uri).get_experiment_by_name(name)
    return ui_url(exp.experiment_id, base) if exp else base
