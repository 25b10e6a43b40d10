#!/usr/bin/env bash
# supportflow on Dataflow: one script for every step of docs/operations.md, "Deploying on Dataflow".
#
#   deploy/deploy.sh setup            APIs, bucket, Artifact Registry, service account + roles, Pub/Sub, BigQuery
#   deploy/deploy.sh images           build and push the worker image and the Flex Template image (Cloud Build)
#   deploy/deploy.sh template         write the Flex Template spec to gs://$BUCKET/templates/
#   deploy/deploy.sh run              launch the job from the template (job name $JOB_NAME)
#   deploy/deploy.sh direct [OPTS]    launch the same job without a template: python -m pipeline.main on DataflowRunner
#   deploy/deploy.sh scale            set the running job's min/max workers ($MIN_WORKERS..$MAX_WORKERS)
#   deploy/deploy.sh validate-update  ask Dataflow whether the current code can replace the running job (no launch)
#   deploy/deploy.sh update [MAP]     replace the running job in place, keeping session state;
#                                     MAP = "OldName=NewName,..." for renamed transforms
#   deploy/deploy.sh drain            drain the running job (stops reading, finishes what it read)
#   deploy/deploy.sh alerts           create the two SLO alert policies (deploy/monitoring/)
#   deploy/deploy.sh dry-run          build the Dataflow job graph offline (no GCP access): checks the settings
#
# Configuration (environment):
#   PROJECT, REGION (us-central1), BUCKET (PROJECT-supportflow), REPOSITORY (supportflow),
#   JOB_NAME (supportflow: keep it fixed, updates match the running job by name), TAG (git short sha),
#   BACKEND (gemini), GPU (0; 1 = GPU worker image and template, for a GPU backend), DELIVERY_MODE (exactly_once),
#   NUM_WORKERS (1), MIN_WORKERS (1), MAX_WORKERS (10), SERVICE_ACCOUNT (supportflow-worker@PROJECT.iam...),
#   PARAMETERS (extra template parameters, "name=value~name=value"), BUILDER (cloudbuild | docker).
set -euo pipefail

cd "$(dirname "$0")/.."

PROJECT="${PROJECT:-$(gcloud config get-value project 2>/dev/null || true)}"
REGION="${REGION:-us-central1}"
BUCKET="${BUCKET:-${PROJECT}-supportflow}"
REPOSITORY="${REPOSITORY:-supportflow}"
JOB_NAME="${JOB_NAME:-supportflow}"
TAG="${TAG:-$(git rev-parse --short HEAD 2>/dev/null || echo dev)}"
BACKEND="${BACKEND:-gemini}"
GPU="${GPU:-0}"
DELIVERY_MODE="${DELIVERY_MODE:-exactly_once}"
NUM_WORKERS="${NUM_WORKERS:-1}"
MIN_WORKERS="${MIN_WORKERS:-1}"
MAX_WORKERS="${MAX_WORKERS:-10}"
SA_NAME="supportflow-worker"
SERVICE_ACCOUNT="${SERVICE_ACCOUNT:-${SA_NAME}@${PROJECT}.iam.gserviceaccount.com}"
PARAMETERS="${PARAMETERS:-}"
BUILDER="${BUILDER:-cloudbuild}"
PYTHON="${PYTHON:-.venv/bin/python}"

REGISTRY="${REGION}-docker.pkg.dev/${PROJECT}/${REPOSITORY}"
if [ "$GPU" = "1" ]; then
  WORKER_DOCKERFILE="deploy/Dockerfile.gpu"
  WORKER_IMAGE="${REGISTRY}/worker-gpu:${TAG}"
  TEMPLATE_IMAGE="${REGISTRY}/template-gpu:${TAG}"
  TEMPLATE_FILE="gs://${BUCKET}/templates/supportflow-gpu.json"
else
  WORKER_DOCKERFILE="deploy/Dockerfile"
  WORKER_IMAGE="${REGISTRY}/worker:${TAG}"
  TEMPLATE_IMAGE="${REGISTRY}/template:${TAG}"
  TEMPLATE_FILE="gs://${BUCKET}/templates/supportflow.json"
fi

need_project() {
  if [ -z "$PROJECT" ]; then
    echo "PROJECT is not set (and gcloud has no default project)" >&2
    exit 2
  fi
}

active_job_id() {
  gcloud dataflow jobs list --project "$PROJECT" --region "$REGION" --status=active \
    --filter="name=${JOB_NAME}" --format="value(id)" --limit=1
}

template_parameters() {
  # "^~^" switches gcloud's list delimiter to "~": values may then contain commas and semicolons
  # (e.g. inference_accelerator=type:nvidia-l4;count:1;install-nvidia-driver).
  local p="^~^sdk_container_image=${TEMPLATE_IMAGE}~gcp_project=${PROJECT}~model_backend=${BACKEND}"
  p="${p}~delivery_mode=${DELIVERY_MODE}"
  if [ -n "$PARAMETERS" ]; then p="${p}~${PARAMETERS}"; fi
  printf '%s' "$p"
}

run_template() {  # extra gcloud flags in "$@"
  gcloud dataflow flex-template run "$JOB_NAME" \
    --project "$PROJECT" --region "$REGION" \
    --template-file-gcs-location "$TEMPLATE_FILE" \
    --enable-streaming-engine \
    --num-workers "$NUM_WORKERS" --max-workers "$MAX_WORKERS" \
    --temp-location "gs://${BUCKET}/tmp" --staging-location "gs://${BUCKET}/staging" \
    --service-account-email "$SERVICE_ACCOUNT" \
    --parameters "$(template_parameters)" \
    "$@"
}

direct() {  # extra pipeline options in "$@"
  "$PYTHON" -m pipeline.main \
    --runner=DataflowRunner --project="$PROJECT" --region="$REGION" --job_name="$JOB_NAME" \
    --temp_location="gs://${BUCKET}/tmp" --staging_location="gs://${BUCKET}/staging" \
    --sdk_container_image="$WORKER_IMAGE" --sdk_location=container \
    --num_workers="$NUM_WORKERS" --max_num_workers="$MAX_WORKERS" \
    --service_account_email="$SERVICE_ACCOUNT" \
    --gcp_project="$PROJECT" --model_backend="$BACKEND" --delivery_mode="$DELIVERY_MODE" \
    "$@"
}

cmd="${1:-help}"
shift || true
case "$cmd" in
  setup)
    need_project
    gcloud services enable --project "$PROJECT" \
      dataflow.googleapis.com compute.googleapis.com storage.googleapis.com pubsub.googleapis.com \
      firestore.googleapis.com bigquery.googleapis.com artifactregistry.googleapis.com \
      cloudbuild.googleapis.com monitoring.googleapis.com aiplatform.googleapis.com
    gcloud storage buckets create "gs://${BUCKET}" --project "$PROJECT" --location "$REGION" || true
    gcloud artifacts repositories create "$REPOSITORY" --project "$PROJECT" --location "$REGION" \
      --repository-format=docker --description="supportflow images" || true
    gcloud iam service-accounts create "$SA_NAME" --project "$PROJECT" \
      --description="supportflow Dataflow workers and template launcher" || true
    for role in roles/dataflow.worker roles/pubsub.subscriber roles/pubsub.publisher roles/pubsub.viewer \
                roles/datastore.user roles/bigtable.reader roles/bigquery.dataEditor \
                roles/storage.objectAdmin roles/artifactregistry.reader roles/aiplatform.user \
                roles/monitoring.metricWriter roles/logging.logWriter; do
      gcloud projects add-iam-policy-binding "$PROJECT" --member "serviceAccount:${SERVICE_ACCOUNT}" \
        --role "$role" --condition=None >/dev/null
    done
    # Topics, subscriptions (ordering where the stack has it), eval dataset and tables: the local stack's
    # names and schemas (stack/resources.py, contract/eval_rows.py), on the real APIs.
    "$PYTHON" -m deploy.resources --project "$PROJECT"
    echo "Firestore: the customers collection must exist in the project's (default) database (docs/context.md)."
    ;;
  images)
    need_project
    if [ "$BUILDER" = "docker" ]; then
      DOCKER_BUILDKIT=1 docker build -f "$WORKER_DOCKERFILE" -t "$WORKER_IMAGE" .
      DOCKER_BUILDKIT=1 docker build -f deploy/flex_template/Dockerfile --build-arg "WORKER_IMAGE=${WORKER_IMAGE}" \
        -t "$TEMPLATE_IMAGE" .
      docker push "$WORKER_IMAGE"
      docker push "$TEMPLATE_IMAGE"
    else
      gcloud builds submit . --project "$PROJECT" --region "$REGION" --config deploy/cloudbuild.yaml \
        --ignore-file deploy/cloudbuild.gcloudignore \
        --substitutions "_WORKER_DOCKERFILE=${WORKER_DOCKERFILE},_WORKER_IMAGE=${WORKER_IMAGE},_TEMPLATE_IMAGE=${TEMPLATE_IMAGE}"
    fi
    echo "worker image:   ${WORKER_IMAGE}"
    echo "template image: ${TEMPLATE_IMAGE}"
    ;;
  template)
    need_project
    "$PYTHON" -m deploy.template --check
    gcloud dataflow flex-template build "$TEMPLATE_FILE" --project "$PROJECT" \
      --image "$TEMPLATE_IMAGE" --sdk-language PYTHON \
      --metadata-file deploy/flex_template/metadata.json \
      --enable-streaming-engine --max-workers "$MAX_WORKERS" \
      --temp-location "gs://${BUCKET}/tmp" --staging-location "gs://${BUCKET}/staging" \
      --service-account-email "$SERVICE_ACCOUNT"
    ;;
  run)
    need_project
    run_template "$@"
    ;;
  direct)
    need_project
    direct "$@"
    ;;
  scale)
    need_project
    gcloud dataflow jobs update-options "$(active_job_id)" --project "$PROJECT" --region "$REGION" \
      --min-num-workers "$MIN_WORKERS" --max-num-workers "$MAX_WORKERS"
    ;;
  validate-update)
    need_project
    # Dataflow checks the replacement against the running job's graph and state, and launches nothing.
    direct --update --dataflow_service_options=graph_validate_only ${1:+--transform_name_mapping="$1"}
    ;;
  update)
    need_project
    "$PYTHON" -m deploy.transforms --check || {
      if [ -z "${1:-}" ]; then
        echo "transform names changed: pass the mapping, e.g. deploy/deploy.sh update 'Old=New'" >&2
        exit 2
      fi
    }
    gcloud dataflow snapshots create --job-id "$(active_job_id)" --project "$PROJECT" --region "$REGION" \
      --snapshot-sources=true --snapshot-ttl=7d
    if [ -n "${1:-}" ]; then
      run_template --update --transform-name-mappings "$1"
    else
      run_template --update
    fi
    ;;
  drain)
    need_project
    gcloud dataflow jobs drain "$(active_job_id)" --project "$PROJECT" --region "$REGION"
    ;;
  alerts)
    need_project
    for policy in deploy/monitoring/turn-latency-slo.json deploy/monitoring/freshness-slo.json; do
      rendered="$(mktemp --suffix=.json)"
      "$PYTHON" -m deploy.alerts "$policy" --job_name "$JOB_NAME" > "$rendered"
      gcloud alpha monitoring policies create --project "$PROJECT" --policy-from-file "$rendered"
      rm -f "$rendered"
    done
    ;;
  dry-run)
    "$PYTHON" -c "import sys; from deploy.transforms import dry_run_job, DRY_RUN_ARGS; \
job, settings = dry_run_job([*DRY_RUN_ARGS, *sys.argv[1:]]); print(settings.describe()); \
print('job type:', job.proto.type.name)" "$@"
    ;;
  help|-h|--help)
    sed -n '2,24p' "$0"
    ;;
  *)
    echo "unknown command: $cmd (deploy/deploy.sh help)" >&2
    exit 2
    ;;
esac
