"""The HTTP server of one replica: ``serve`` (validation, then one gunicorn worker that
owns the state under a master that imports nothing else: ``master``), the Flask app and its
routes (the verbs answered without Flask on their ordinary requests), health and readiness,
the Prometheus scrape, memory tuning.

Flask and gunicorn live here and nowhere else.
"""
