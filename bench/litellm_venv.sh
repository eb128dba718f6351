#!/usr/bin/env bash
# Create bench/.litellm-venv with a pinned LiteLLM proxy, isolated from the project's venv.
# Newer LiteLLM releases need a companion package pip cannot resolve; keep the pin.
# Usage: bash bench/litellm_venv.sh [PYTHON]   (default: the project's .venv/bin/python)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.litellm-venv"
python="${1:-$here/../.venv/bin/python}"
version="1.108.7"

if [ -x "$venv/bin/litellm" ] && "$venv/bin/python" -c "import litellm, sys; \
from importlib.metadata import version; sys.exit(version('litellm') != '$version')" 2>/dev/null; then
    echo "litellm $version already in $venv"
    exit 0
fi
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "litellm[proxy]==$version"
"$venv/bin/litellm" --version >/dev/null 2>&1 || "$venv/bin/python" -c "import litellm.proxy.proxy_server"
echo "litellm $version installed in $venv"
