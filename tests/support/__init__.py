"""What the tests share, so no test module imports another.

- :mod:`support.helpers`: a real ``machine-catalog serve`` on loopback, the catalogs and the
  snapshot it serves, request builders.
- :mod:`support.fakeapi`: a loopback fake API server speaking list and watch.
- :mod:`support.nodes`: labelled nodes (the real-world fixture plus one per catalog family)
  and the one node-selector oracle the tests check the code's matching against.
- :mod:`support.strategies`: hypothesis strategies for pods, resources and selector terms.
- :mod:`support.webhook`: the webhook through the Flask test client, and AdmissionReviews.
- :mod:`support.configmap`: a ConfigMap volume as the kubelet writes and swaps it.

pytest puts ``tests/`` on ``sys.path`` (``pythonpath`` in ``pyproject.toml``), so these import
as ``from support.helpers import ...`` in every import mode.
"""
