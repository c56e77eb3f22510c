"""kube-scheduler's extender verbs: the wire format, the filter rules, the scorers, and the
verbs that answer ``/scheduler/filter`` and ``/scheduler/prioritize`` from the state.

Formulas and arguments: README.md in this folder.
"""
