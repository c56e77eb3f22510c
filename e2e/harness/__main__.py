"""``python -m harness [WORKDIR]`` (from ``e2e/``): the end-to-end cluster, kept up by hand.

Starts what the test session starts (control plane, nodes, ``serve`` with the webhook,
the machine-catalog kube-scheduler, the fake kubelet) and waits for Ctrl-C, printing the
kubeconfig to use with kubectl. For trying the project on a real control plane and for
debugging a failing end-to-end test.
"""

from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path

from harness import objects
from harness.controlplane import build_controlplane, running
from harness.kubelet import FakeKubelet
from harness.server import Server


def main() -> int:
    workdir = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="mc-e2e-"))
    with running(workdir, build_controlplane()) as plane:
        plane.start_controller_manager()
        objects.create_nodes(plane, objects.cluster_nodes())
        server = Server(plane, objects.e2e_catalog(workdir), objects.server_kubeconfig(plane))
        server.start()
        objects.install_webhook(plane, server.url)
        config = plane.scheduler_config(server.url + "/scheduler", name="machine-catalog-scheduler")
        plane.start_scheduler("machine-catalog-scheduler", config)
        kubelet = FakeKubelet(plane.api_client()).start()
        print(f"export KUBECONFIG={plane.kubeconfig}   # logs in {workdir}/logs", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            kubelet.stop()
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
