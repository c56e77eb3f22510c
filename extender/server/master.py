"""The gunicorn master of a replica, in a process that never imports the application.

``machine-catalog serve`` validates everything in its own process (the catalog, the
cluster source, the TLS files, the ports), then replaces itself with this module
(``exec``, same pid, so a container's signals and exit code are unchanged; see
:data:`BOOTSTRAP`). The master
only supervises: it forks the one worker, restarts it if it dies, and passes signals on.
Everything that owns state (the catalog, the cache and its watch, the loops) is built in
the worker by :func:`extender.server.serve.worker_app`, after the fork.

Why a fresh process: the validation imports the Kubernetes client, numpy and pydantic
and loads the catalog; a master that kept them held 82 MB of RSS for nothing, a third of a
replica's memory at 50,000 pods (benchmarks/README.md, section 6). This module imports
gunicorn and the standard library only, and ``tests/test_server.py`` checks that it stays
so.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import ssl
import sys
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

log = logging.getLogger(__name__)

#: Seconds a worker gets to finish in-flight requests after SIGTERM. Below the pod's
#: default terminationGracePeriodSeconds (30) so the kubelet never has to SIGKILL.
GRACEFUL_TIMEOUT = 25
#: Idle keep-alive seconds. kube-scheduler's Go client keeps idle connections 90 s; a server
#: that closes them much sooner makes it race a POST against the close (an error, as POST
#: is not retried). Idle connections cost a poller entry in gthread, not a thread.
KEEPALIVE = 75
#: gunicorn's worker class (a string: the master imports it, as gunicorn does its own).
WORKER_CLASS = "extender.server.worker.ThreadWorker"
#: The worker's runtime, for the exit hook (set by ``load`` in the worker).
_WORKER: dict[str, Any] = {}


def _ssl_context(conf: Any, default_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """gunicorn's default context (cert, key, ciphers) with TLS 1.2 as the floor."""
    context = default_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _worker_exit(server: Any, worker: Any) -> None:
    """In the worker, on its way out: stop the watcher threads."""
    runtime = _WORKER.get("runtime")
    if runtime is not None:
        from extender.server.serve import shutdown_runtime

        shutdown_runtime(runtime)


def _post_worker_init(worker: Any) -> None:
    runtime = _WORKER.get("runtime")
    if runtime is not None:
        log.info(
            "worker %d ready: catalog %s, cache %s",
            os.getpid(),
            runtime.catalogs.current.version,
            runtime.cluster.source,
        )


def _bound_body_reads(timeout: float) -> Callable[[Any, Any], None]:
    """A ``pre_request`` hook: a read timeout on the connection's socket for the body.

    gthread puts the socket back into plain blocking mode (no timeout) for every request it
    hands a thread, so this bounds exactly the body reads of this request. A stalled body
    then ends as werkzeug's ClientDisconnected: a 400 with a JSON error.
    """

    def hook(worker: Any, req: Any) -> None:
        sock = getattr(getattr(req, "unreader", None), "sock", None)
        if sock is not None:
            sock.settimeout(timeout)

    return hook


def gunicorn_options(config: Any) -> dict[str, Any]:
    """gunicorn's settings for ``config`` (a ServeConfig, or its fields as attributes)."""
    options: dict[str, Any] = {
        "bind": [config.bind],
        "workers": 1,  # one process owns the state: see extender.server.serve
        # gthread, with no thread parked on a connection that has not sent a request: the
        # webhook stall of issue 17 (extender/server/worker.py).
        "worker_class": WORKER_CLASS,
        "threads": config.threads,
        "keepalive": KEEPALIVE,
        "graceful_timeout": GRACEFUL_TIMEOUT,
        "timeout": 30,
        "accesslog": "-" if config.access_log else None,
        "errorlog": "-",
        "loglevel": config.log_level.lower(),
        "proc_name": "machine-catalog",
        "preload_app": False,  # the worker builds the runtime after the fork
        "worker_exit": _worker_exit,
        "post_worker_init": _post_worker_init,
        "pre_request": _bound_body_reads(config.body_timeout),
        # gunicorn >= 25.1 opens a control socket in $HOME by default: two servers on one
        # host (or one test run beside another) would fight over it, and nothing uses it.
        "control_socket_disable": True,
    }
    if config.certfile:
        options.update(certfile=config.certfile, keyfile=config.keyfile, ssl_context=_ssl_context)
    if os.path.isdir("/dev/shm"):
        # Worker heartbeats are file writes; on a container's overlay fs they can stall.
        options["worker_tmp_dir"] = "/dev/shm"
    return options


def _application(fields: Mapping[str, Any]) -> Any:
    from gunicorn.app.base import BaseApplication

    options = gunicorn_options(SimpleNamespace(**fields))

    class Application(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                if key in self.cfg.settings and value is not None:
                    self.cfg.set(key, value)

        def load(self) -> Any:
            # In the worker, after the fork: the only place the application is imported.
            from extender.server.serve import ServeConfig, worker_app

            app, runtime = worker_app(ServeConfig(**fields))
            _WORKER["runtime"] = runtime
            return app

    return Application()


def configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter(
                "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
                "%Y-%m-%d %H:%M:%S %z",
            )
        )
        root.addHandler(handler)
    root.setLevel(level.upper())


def exit_code(code: Any) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    log.error("%s", code)
    return 1


#: What the exec'd interpreter runs: the parent's import path exactly (not the working
#: directory ``python -m`` would put first, which could shadow an installed package with a
#: source tree), then :func:`main`.
BOOTSTRAP = (
    "import json, sys; payload = json.loads(sys.argv[1]); sys.path[:] = payload['path']; "
    "from extender.server.master import main; sys.exit(main(payload))"
)


def command(fields: Mapping[str, Any], cleanup: list[str]) -> list[str]:
    """The argv that makes a fresh interpreter this replica's master for ``fields`` (a
    ServeConfig's), importing from where this process imported."""
    payload = json.dumps({"config": dict(fields), "cleanup": cleanup, "path": sys.path})
    return [sys.executable, "-c", BOOTSTRAP, payload]


def run(fields: Mapping[str, Any], cleanup: list[str]) -> int:
    """Supervise the worker until SIGTERM/SIGINT; remove ``cleanup`` (the temporary state
    directory) on the way out; the process exit code."""
    configure_logging(str(fields["log_level"]))
    # The worker leaves by raising SystemExit through this very frame (gunicorn forks it
    # inside application.run()): only the master may clean up, or the worker's exit would
    # delete the last-good-catalog directory under its successor.
    master = os.getpid()
    try:
        try:
            _application(fields).run()
        except SystemExit as exc:
            return exit_code(exc.code)
        return 0
    finally:
        if os.getpid() == master:
            for path in cleanup:
                shutil.rmtree(path, ignore_errors=True)


def main(payload: Mapping[str, Any]) -> int:
    return run(payload["config"], payload["cleanup"])
