// The oldest Kubernetes minor the manifests support (see the README), built beside the
// newest (../go.mod) by `MC_KUBERNETES_VERSION=1.34 bash e2e/controlplane/build.sh`.
// Nothing here is product code.
module machine-catalog.local/e2e/controlplane/v1.34

go 1.26.0

require (
	go.etcd.io/etcd/server/v3 v3.6.4
	k8s.io/kubernetes v1.34.0
)
