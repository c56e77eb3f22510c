"""Placeholder until the admission webhook lands (POST /webhook/mutate)."""


def register(app, runtime):  # noqa: ARG001
    pass
