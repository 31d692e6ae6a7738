#!/usr/bin/env bash
# What TLS and basic authentication cost per request: /metrics under wrk,
# plain HTTP against TLS (keep-alive), TLS with basic auth (keep-alive), and
# TLS with a new connection (a full handshake) per request. Same machine,
# same run, one mirror each; reports requests per second and the ratio to
# plain HTTP.
# Usage: scripts/tls-cost.sh [JOBS] [SECONDS]   (needs wrk and openssl)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${1:-1000}
secs=${2:-10}
for tool in wrk openssl; do
  command -v "$tool" >/dev/null || { echo "$tool not found (apt-get install $tool)" >&2; exit 2; }
done
cargo build --release --quiet --bin orchmirror --example bcrypt_hash
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
target/release/orchmirror generate "$work/db.sqlite" --jobs "$jobs" >/dev/null 2>&1
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$work/tls.key" -out "$work/tls.crt" 2>/dev/null
hash=$(printf 's3cret' | target/release/examples/bcrypt_hash)
printf 'tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n' > "$work/tls.yml"
printf 'tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\nbasic_auth_users:\n  bench: %s\n' "$hash" > "$work/auth.yml"
serve() { # port [web config]
  local vars=(ORCH_DB_PATH="$work/db.sqlite" ORCH_BIND="127.0.0.1:$1" RUST_LOG=warn)
  [ -n "${2:-}" ] && vars+=(ORCH_WEB_CONFIG_FILE="$2")
  env "${vars[@]}" target/release/orchmirror &
  sleep 2
}
serve 18821
serve 18822 "$work/tls.yml"
serve 18823 "$work/auth.yml"
rps() { wrk -t2 -c16 -d"${secs}s" "$@" | awk '/Requests\/sec/ {print $2}'; }
plain=$(rps http://127.0.0.1:18821/metrics)
tls=$(rps https://127.0.0.1:18822/metrics)
auth=$(rps -H "Authorization: Basic $(printf 'bench:s3cret' | base64)" https://127.0.0.1:18823/metrics)
handshake=$(rps -H "Connection: close" https://127.0.0.1:18822/metrics)
plain_close=$(rps -H "Connection: close" http://127.0.0.1:18821/metrics)
ratio() { echo "scale=2; $1 / $2" | bc; }
echo "jobs=$jobs plain_rps=$plain tls_rps=$tls ($(ratio "$tls" "$plain")) tls_auth_rps=$auth ($(ratio "$auth" "$plain"))"
echo "  a new connection per request: plain_rps=$plain_close tls_handshake_rps=$handshake ($(ratio "$handshake" "$plain_close"))"
