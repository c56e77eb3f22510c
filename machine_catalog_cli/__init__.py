"""The ``machine-catalog`` command: the top layer, above the core and the server.

``machine_catalog`` (the pure core) knows nothing of HTTP or Kubernetes clients;
``extender`` (the server) builds on the core; this package builds on both and nothing
imports it. The layers are checked by import-linter (``.importlinter``).
"""
