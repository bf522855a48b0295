"""A local MultiWorkerMirroredStrategy cluster for the tests: free ports and TF_CONFIG."""

import json
import socket


def free_ports(n):
    """`n` distinct ports on 127.0.0.1 that the OS had free a moment ago."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def tf_config(ports, index):
    """The TF_CONFIG value (JSON) of worker `index` of a cluster of workers on 127.0.0.1:ports
    (worker 0 is the chief)."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
