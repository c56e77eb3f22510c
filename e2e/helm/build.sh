#!/usr/bin/env bash
# Build the helm the end-to-end chart tests run (lint, template, install), at the version
# go.mod pins, once, into a cache outside the work tree, as e2e/controlplane/build.sh does
# for the control plane. Idempotent: a second run with the same go.mod/go.sum prints the
# binary's path and exits. Prints the binary's path on its last line.
#
#   MC_HELM_CACHE  where versions are kept (default ~/.cache/machine-catalog/helm)
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v go >/dev/null 2>&1; then
  echo "helm: 'go' is not on PATH; the chart's e2e tests need Go 1.26 and the Go module proxy" >&2
  exit 2
fi

version=$(awk '$1 == "require" && $2 == "helm.sh/helm/v4" {print $3}' go.mod)
key=$(cat go.mod go.sum | sha256sum | cut -c1-12)
cache=${MC_HELM_CACHE:-$HOME/.cache/machine-catalog/helm}
dest="$cache/helm-$version"

if [ -f "$dest/.built-$key" ]; then
  echo "helm: $version already built" >&2
  echo "$dest/helm"
  exit 0
fi

echo "helm: building $version into $dest (~3 min cold on 2 cores)" >&2
start=$(date +%s)
tmp="$dest.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
go mod download
# The version is stamped as helm's own Makefile does, so `helm version` names the release.
CGO_ENABLED=0 go build -trimpath \
  -ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=$version" \
  -o "$tmp/helm" helm.sh/helm/v4/cmd/helm
test -x "$tmp/helm" || { echo "helm: the binary was not built" >&2; exit 1; }
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
touch "$dest/.built-$key"
echo "helm: built in $(( $(date +%s) - start )) s" >&2
echo "$dest/helm"
