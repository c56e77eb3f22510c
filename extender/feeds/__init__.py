"""What fills the cluster state: list+watch through the Kubernetes client, kubectl output
files (snapshots, metrics lists), and node usage (metrics.k8s.io polls or a metrics file).

The Kubernetes client lives here and in :mod:`extender.loops`, nowhere below.
"""
