#!/usr/bin/env bash
# Installs what building and testing need, when it is missing. Safe to run
# repeatedly: each step checks first. Debian packages come from apt, Rust
# tools from crates.io into $CARGO_INSTALL_ROOT (or ~/.cargo).
set -euo pipefail

# Debian packages the tests need: redis-server (the gateway's rate-limit
# tests start a private one to stop mid-test) and psql (test database
# clean-up). protoc is vendored from crates.io; librdkafka is built from
# its crate.
# Each entry is command:package; the package is installed only when the
# command is missing.
NEEDED=(redis-server:redis-server psql:postgresql-client)

missing=()
for entry in "${NEEDED[@]}"; do
  command -v "${entry%%:*}" >/dev/null 2>&1 || missing+=("${entry#*:}")
done
# Webhook deliveries use the system's TLS (OpenSSL) through native-tls.
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev)
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}"
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

# The OpenAPI tools the conformance test runs (tests/tests/openapi_conformance.rs),
# pinned with everything they pull in, in a venv of their own.
TOOLS_DIR="${PLATFORM_TOOLS_DIR:-$HOME/.cache/platform-tools}"
VENV="$TOOLS_DIR/venv"
REQUIREMENTS="$(dirname "$0")/requirements-api.txt"
STAMP="$VENV/.requirements"
if ! cmp -s "$REQUIREMENTS" "$STAMP" 2>/dev/null; then
  echo "installing the OpenAPI tools into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
  cp "$REQUIREMENTS" "$STAMP"
fi
