"""The cluster state one replica owns: the catalog in force, the node and pod cache with its
per-node arrays, and node usage.

Everything here is fed from outside (:mod:`extender.feeds`) and read by the scheduler verbs,
the webhook and the loops. No HTTP, no Kubernetes client: state is data plus the lock that
keeps a reader's view consistent.
"""
