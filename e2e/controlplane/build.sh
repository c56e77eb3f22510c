#!/usr/bin/env bash
# Build the upstream control plane the end-to-end tests run against: etcd, kube-apiserver,
# kube-scheduler and kube-controller-manager, at the versions go.mod pins, once, into a
# cache outside the work tree. Idempotent: a second run with the same go.mod/go.sum
# prints the directory and exits. Prints the directory on its last line.
#
#   MC_CONTROLPLANE_CACHE  where versions are kept (default ~/.cache/machine-catalog/controlplane)
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v go >/dev/null 2>&1; then
  echo "controlplane: 'go' is not on PATH; make e2e needs Go 1.26 and the Go module proxy" >&2
  exit 2
fi

k8s=$(awk '$1 == "k8s.io/kubernetes" {print $2}' go.mod)
etcd=$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2}' go.mod)
# The release the binaries report (/version, kubectl version, helm's kubeVersion check), as
# upstream's hack/lib/version.sh stamps it; without it they say v0.0.0-master.
minor=$(echo "$k8s" | cut -d. -f2)
version_pkg=k8s.io/component-base/version
ldflags="-s -w -X $version_pkg.gitVersion=$k8s -X $version_pkg.gitMajor=1 -X $version_pkg.gitMinor=$minor"
ldflags="$ldflags -X $version_pkg.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$k8s"
key=$( (cat go.mod go.sum cmd/etcd/main.go; echo "$ldflags") | sha256sum | cut -c1-12)
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
# -v prints each package as it is compiled: the progress on a cold build.
go build -v -trimpath -ldflags="$ldflags" -o "$tmp/" \
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
