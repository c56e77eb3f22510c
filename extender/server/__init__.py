"""The HTTP server of one replica: ``serve`` (gunicorn, one process that owns the state),
the Flask app and its routes, health and readiness, the Prometheus scrape, memory tuning.

Flask and gunicorn live here and nowhere else.
"""
