"""The mutating admission webhook: the family choice, the rewrite of CPU values into
physical millicores, the pin, reinvocation, in-place resize, exempt pods, and the
per-family pools the choice ranks.

Pure functions except :mod:`.webhook`, which decodes a review, reads the state and encodes
the answer (bytes in, bytes out; the HTTP route is in :mod:`extender.server`).
"""
