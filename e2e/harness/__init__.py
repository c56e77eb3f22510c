"""A real Kubernetes control plane for the end-to-end tests and the throughput benchmark."""
