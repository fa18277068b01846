#!/usr/bin/env bash
# Offline checks of the deployment artifacts: Dockerfiles (hadolint + policy), docker compose
# (compose-spec schema + Compose's own loader), the Helm chart (lint, schema, render), the rendered
# manifests (kubernetes-validate strict, checkov), the Tiltfile (starlark with stubbed builtins)
# and their agreement with deploy/services.toml. No Docker engine, cluster, helm or tilt needed.
#   bash scripts/deploy_check.sh [pytest args...]
# The tools live in their own uv project, tests/deploy (not a workspace member); the first run
# installs them from tests/deploy/uv.lock.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The root workspace's environment must not leak into the tools' project.
unset UV_PROJECT_ENVIRONMENT VIRTUAL_ENV

exec uv run --project tests/deploy --locked --quiet pytest tests/deploy -q "$@"
