#!/usr/bin/env bash
# Start the tracking services on a cluster's head node: PostgreSQL (Debian's package, data on the
# head's own disk) as MLflow's backend store and the MLflow server with basic auth, artifacts in
# object storage. Idempotent: `ray up` re-runs it on every update.
#
#   head_services.sh ARTIFACTS_URI            e.g. s3://my-bucket/mlflow or gs://my-bucket/mlflow
#
# Secrets live in ~/.resnetctl (mode 0700), generated on first run, never in the cluster config nor on
# a command line (which every user of the node can read in `ps`):
#   db_password     the `resnetctl` database role's password (MLflow gets the store URI in its environment)
#   admin_password  the MLflow admin's password (give it to submitters as MLFLOW_TRACKING_PASSWORD)
# The nodes' MLflow clients (jobs, Train workers) read the admin's credentials from
# /mnt/shared/.resnetctl/mlflow_credentials (mode 0600; each node's ~/.mlflow/credentials links to it).
set -euo pipefail
ARTIFACTS_URI=${1:?usage: head_services.sh ARTIFACTS_URI}
PORT=${MLFLOW_PORT:-5000}
STATE=$HOME/.resnetctl
mkdir -p "$STATE" && chmod 700 "$STATE"
secret() { [ -s "$STATE/$1" ] || (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$STATE/$1"); cat "$STATE/$1"; }
DB_PASSWORD=$(secret db_password)
ADMIN_PASSWORD=$(secret admin_password)
FLASK_KEY=$(secret flask_secret_key)

# PostgreSQL: listens on localhost only; MLflow is its only client.
sudo systemctl enable --now postgresql
# the password goes to psql on stdin (printf is bash's own), not on its command line
sudo -u postgres psql -v ON_ERROR_STOP=1 -tAc "SELECT 1 FROM pg_roles WHERE rolname='resnetctl'" | grep -q 1 \
  || printf "CREATE ROLE resnetctl LOGIN PASSWORD '%s';\n" "$DB_PASSWORD" | sudo -u postgres psql -v ON_ERROR_STOP=1
sudo -u postgres psql -tAc "SELECT 1 FROM pg_database WHERE datname='mlflow'" | grep -q 1 \
  || sudo -u postgres createdb -O resnetctl mlflow

# MLflow: reachable by the workers on the head's private address (the cluster's security group /
# firewall keeps it off the internet), Host headers limited to that address, basic auth on.
HEAD_IP=$(hostname -I | awk '{print $1}')
cat > "$STATE/basic_auth.ini" <<INI
[mlflow]
default_permission = READ
database_uri = sqlite:///$STATE/basic_auth.db
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
SHARED=/mnt/shared/.resnetctl
mkdir -p "$SHARED" && chmod 700 "$SHARED"
(umask 077; printf '[mlflow]\nmlflow_tracking_username = admin\nmlflow_tracking_password = %s\n' "$ADMIN_PASSWORD" \
  > "$SHARED/mlflow_credentials")
if ! curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; then
  MLFLOW_AUTH_CONFIG_PATH=$STATE/basic_auth.ini MLFLOW_AUTH_ADMIN_PASSWORD=$ADMIN_PASSWORD \
  MLFLOW_FLASK_SERVER_SECRET_KEY=$FLASK_KEY MLFLOW_DISABLE_TELEMETRY=true \
  MLFLOW_BACKEND_STORE_URI="postgresql+psycopg2://resnetctl:$DB_PASSWORD@127.0.0.1:5432/mlflow" \
  nohup mlflow server \
    --artifacts-destination "$ARTIFACTS_URI" --serve-artifacts \
    --host 0.0.0.0 --port "$PORT" --workers 4 --app-name basic-auth \
    --allowed-hosts "localhost,localhost:*,127.0.0.1,127.0.0.1:*,$HEAD_IP,$HEAD_IP:*" \
    > "$STATE/mlflow.log" 2>&1 &
  for _ in $(seq 60); do curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break; sleep 2; done
fi
curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null
echo "MLflow tracking server: http://$HEAD_IP:$PORT (user admin, password in $STATE/admin_password)"
