#!/usr/bin/env bash
# Checks that vendor/actix-http is the published actix-http 3.20.0 with
# exactly vendor/actix-http.patch applied: downloads the crate from
# crates.io, checks its SHA-256, removes what is not vendored (benches,
# examples, tests, Cargo.lock and the crate's packaging files), applies the
# patch and compares the trees. Run by .ci/run; needs curl, tar, git and
# the network to crates.io (as cargo does).
#
# ACTIX_HTTP_CRATE=path uses a copy of the .crate already downloaded (its
# SHA-256 is checked all the same).
#
# After changing the vendored crate, write the patch again:
#   scripts/vendor-check.sh --write
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=3.20.0
SHA256=d20a22850ea7fecad12c5f8cd97d246c3af1f04ef400033977c2f13425c45816
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -n "${ACTIX_HTTP_CRATE:-}" ]; then cp "$ACTIX_HTTP_CRATE" "$work/crate.tar.gz"; else
    curl -sSfL -o "$work/crate.tar.gz" "https://static.crates.io/crates/actix-http/actix-http-$VERSION.crate"
fi
echo "$SHA256  $work/crate.tar.gz" | sha256sum -c --quiet
tar xzf "$work/crate.tar.gz" -C "$work"
pristine="$work/actix-http-$VERSION"
rm -rf "$pristine"/{.cargo_vcs_info.json,Cargo.lock,Cargo.toml.orig,benches,examples,tests}
if [ "${1:-}" = "--write" ]; then
    mv "$pristine" "$work/a" && cp -r vendor/actix-http "$work/b"
    (cd "$work" && diff -ruN a b | sed -E 's/^(---|\+\+\+) ([^\t]*)\t.*$/\1 \2/' > patch) || true
    cp "$work/patch" vendor/actix-http.patch
    echo "wrote vendor/actix-http.patch"
    exit 0
fi
(cd "$pristine" && git apply --whitespace=nowarn "$OLDPWD/vendor/actix-http.patch")
if ! diff -r "$pristine" vendor/actix-http; then
    echo "vendor/actix-http is not actix-http $VERSION with vendor/actix-http.patch applied" >&2
    echo "(after an intended change: scripts/vendor-check.sh --write)" >&2
    exit 1
fi
echo "vendor/actix-http = actix-http $VERSION + vendor/actix-http.patch"
