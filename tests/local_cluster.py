"""A multi-node Ray cluster on loopback for tests (ray.cluster_utils.Cluster), kept by a process of its own.

The test process stays connected to the session's local Ray (conftest.ray_session); a
driver can be connected to one Ray at a time, and Cluster.shutdown() resets the calling
process's Ray client state. So a keeper process owns the nodes and obeys `add NAME` /
`remove NAME` lines on stdin; drivers are subprocesses with RAY_ADDRESS set, as under
`ray job submit`. Every node has 1 CPU (the head as many as asked) and a custom resource named after it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

REPLY = "cluster-keeper: "
# No node_ip_address: a driver given RAY_ADDRESS=127.0.0.1:port has it rewritten to the machine's
# own address (ray._private.services.canonicalize_bootstrap_address), which a GCS bound to
# 127.0.0.1 never answers: the drivers waited forever. Nodes on the machine's address are reached
# from here either way (the traffic stays on this host).
NODE_ARGS = {"num_cpus": 1, "object_store_memory": 100 * 1024**2}


def patient_node_start() -> None:
    """Give a starting node 120 s to register instead of Ray's fixed 30 s (node.py), in this process only.

    On a 2-core machine shared with other work the raylet's Python agents alone can take longer.
    """
    from ray._private import services

    get_node = services.get_node

    def wait_for(gcs_address, node_id):
        deadline = time.monotonic() + 120
        while True:
            try:
                return get_node(gcs_address, node_id)
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    services.get_node = wait_for


def keep() -> None:
    from ray.cluster_utils import Cluster

    patient_node_start()

    # No dashboard: fewer processes to start. Ray Train's placement-group cleaner then only
    # warns that it cannot query the state API (it cleans up when its controller exits anyway).
    cluster = Cluster(initialize_head=True, head_node_args=NODE_ARGS | {"num_cpus": int(sys.argv[1]), "resources": {"head": 1}, "include_dashboard": False})
    nodes = {"head": cluster.head_node}

    def reply(**fields) -> None:
        print(REPLY + json.dumps(fields | {"nodes": {name: node.node_id for name, node in nodes.items()}}), flush=True)

    reply(address=cluster.address, session=cluster.head_node.get_session_dir_path())
    for line in sys.stdin:
        command, name = line.split()
        if command == "add":
            nodes[name] = cluster.add_node(**NODE_ARGS, resources={name: 1})
            cluster.wait_for_nodes()
        elif command == "remove":
            cluster.remove_node(nodes.pop(name), allow_graceful=False)  # as a node that vanishes
        reply()
    cluster.shutdown()


class LocalCluster:
    """The test side: start the keeper, add and remove nodes, stop everything."""

    def __init__(self, *workers: str, head_cpus: int = 1, attempts: int = 3):
        # Ray gives a starting raylet 30 s to register, which a loaded 2-core machine can exceed:
        # then the keeper dies and its half-started processes go with its process group
        for attempt in range(attempts):
            self.process = subprocess.Popen(
                [sys.executable, __file__, str(head_cpus)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True
            )
            try:
                first = self._read()
                for name in workers:
                    self.add(name)
                break
            except (RuntimeError, OSError):  # the keeper died (its stdin pipe with it)
                self._kill()
                if attempt == attempts - 1:
                    raise
        self.address, self.session = first["address"], first["session"]

    def _kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()

    def _read(self) -> dict:
        for line in self.process.stdout:
            if line.startswith(REPLY):
                reply = json.loads(line[len(REPLY) :])
                self.nodes: dict[str, str] = reply["nodes"]
                return reply
        raise RuntimeError(f"the cluster keeper exited with {self.process.wait()}")

    def _command(self, line: str) -> dict[str, str]:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self._read()["nodes"]

    def add(self, name: str) -> dict[str, str]:
        return self._command(f"add {name}")

    def remove(self, name: str) -> dict[str, str]:
        return self._command(f"remove {name}")

    def env(self) -> dict[str, str]:
        """A driver's environment: joins this cluster (orchestration.runtime.init_ray reads RAY_ADDRESS)."""
        return os.environ | {"RAY_ADDRESS": self.address}

    def close(self, processes_mentioning) -> None:
        """Stop every node; assert that none of the cluster's processes outlived it."""
        self.process.stdin.close()
        self.process.wait(timeout=120)
        self._kill()  # whatever a node that failed to start left behind
        deadline = time.time() + 30
        while processes_mentioning(self.session) and time.time() < deadline:
            time.sleep(0.5)
        leftover = processes_mentioning(self.session)
        assert not leftover, f"processes of the test cluster outlived it: {leftover}"


if __name__ == "__main__":
    keep()
