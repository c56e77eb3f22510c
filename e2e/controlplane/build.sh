#!/usr/bin/env bash
# Build the upstream control plane the end-to-end tests run against: etcd, kube-apiserver,
# kube-scheduler and kube-controller-manager, at the versions a go.mod pins, once, into a
# cache outside the work tree. Idempotent: a second run with the same go.mod/go.sum
# prints the directory and exits. Prints the directory on its last line.
#
# One Go module per supported Kubernetes minor: this directory's go.mod is the newest
# (the default), v<minor>/go.mod an older one (v1.34: the oldest the manifests support).
# Each replaces every k8s.io staging module with the same release's v0.<minor>.<patch>.
#
#   MC_KUBERNETES_VERSION  the minor to build, e.g. 1.34 or v1.37 (default: this directory's)
#   MC_CONTROLPLANE_CACHE  where versions are kept (default ~/.cache/machine-catalog/controlplane)
set -euo pipefail
cd "$(dirname "$0")"
script="$PWD/build.sh"

want=${MC_KUBERNETES_VERSION:-}
want=${want#v}
if [ -n "$want" ] && [ -f "v$want/go.mod" ]; then
  cd "v$want"
elif [ -n "$want" ] && ! awk -v m="v$want." '$1 == "k8s.io/kubernetes" && index($2, m) == 1 {f=1} END {exit !f}' go.mod; then
  have=$(awk '$1 == "k8s.io/kubernetes" {print $2}' go.mod v*/go.mod | sed -E 's/^v([0-9]+\.[0-9]+).*/\1/' | sort -V | tr '\n' ' ')
  echo "controlplane: no module for Kubernetes $want here (have: $have)" >&2
  exit 2
fi

if ! command -v go >/dev/null 2>&1; then
  echo "controlplane: 'go' is not on PATH; make e2e needs Go 1.26 and the Go module proxy" >&2
  exit 2
fi

k8s=$(awk '$1 == "k8s.io/kubernetes" {print $2}' go.mod)
etcd=$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2}' go.mod)
key=$(cat go.mod go.sum cmd/etcd/main.go "$script" | sha256sum | cut -c1-12)
cache=${MC_CONTROLPLANE_CACHE:-$HOME/.cache/machine-catalog/controlplane}
dest="$cache/kubernetes-$k8s-etcd-$etcd"
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler)

if [ -f "$dest/.built-$key" ]; then
  echo "controlplane: kubernetes $k8s, etcd $etcd already built" >&2
  echo "$dest"
  exit 0
fi

echo "controlplane: building kubernetes $k8s and etcd $etcd into $dest" >&2
echo "controlplane: a cold build downloads ~1 GB of modules and takes ~6 min on 2 cores" >&2
start=$(date +%s)
tmp="$dest.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
go mod download -x 2>&1 | awk '/^# get .*\.zip$/ {n++; if (n % 50 == 0) printf "controlplane: %d modules downloaded\n", n > "/dev/stderr"}'
# The release's version stamped as upstream's release build does (hack/lib/version.sh), so
# /version and --version say what runs, not v0.0.0-master; only the link step sees these.
minor=$(echo "$k8s" | cut -d. -f2)
stamp=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  stamp="$stamp -X $pkg.gitVersion=$k8s -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done
# -v prints each package as it is compiled: the progress on a cold build.
go build -v -trimpath -ldflags="-s -w$stamp" -o "$tmp/" \
  ./cmd/etcd \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler 2>&1 |
  awk '{n++; if (n % 200 == 0) printf "controlplane: %d packages compiled (%s)\n", n, $0 > "/dev/stderr"}'
for b in "${binaries[@]}"; do
  test -x "$tmp/$b" || { echo "controlplane: $b was not built" >&2; exit 1; }
done
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
touch "$dest/.built-$key"
echo "controlplane: built in $(( $(date +%s) - start )) s, $(du -sh "$dest" | cut -f1) of binaries" >&2
echo "$dest"
