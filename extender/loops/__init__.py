"""Background loops that act on the cluster: they write, so they run in one replica only
(the Lease holder). Today: re-creating pods stranded on a full family.
"""
