"""A controller's connection that stays open but goes silent, and a second one under the same
routing id: what a DEALER's own reconnect after a partition looks like to the master.

    python ghost.py ENDPOINT MASTER_PUBLIC KEY_DIR ROUTING_ID GO_FILE

Connects under ``ROUTING_ID`` with the controller key in ``KEY_DIR``, says Hello and prints
``welcomed`` once the master answers.  Then it keeps that socket open, answering nothing, until
``GO_FILE`` exists; then it connects a second socket under the same routing id and prints
``welcomed again`` when the master answers it, or ``turned away`` when it has not within 15 s
(the master still holds the first connection: ``ROUTER_HANDOVER`` is off).  Exits 0 in both
cases.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import zmq

from cyclone_core import keys
from cyclone_core.engine import protocol


def connect(
    context: zmq.Context[zmq.Socket[bytes]], endpoint: str, master: str, pair: keys.Keypair, rid: str
) -> zmq.Socket[bytes] | None:
    """A DEALER under ``rid`` says Hello: the socket once a Welcome came back, ``None`` when
    none did within 15 s."""
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.ROUTING_ID, rid.encode())
    sock.setsockopt(zmq.LINGER, 0)
    sock.curve_serverkey = master.encode()
    sock.curve_publickey = pair.public.encode()
    sock.curve_secretkey = pair.secret.encode()
    sock.connect(endpoint)
    hello = protocol.Hello(
        controller_id=rid.rsplit(".", 1)[0], host=socket.gethostname(), pid=os.getpid(), workers=1, credit=0,
        task_types=["sleep"],
    )  # fmt: skip
    sock.send(protocol.encode(hello))
    deadline = time.monotonic() + 15
    while (left := deadline - time.monotonic()) > 0:
        if sock.poll(int(left * 1000)) and isinstance(protocol.decode(sock.recv()), protocol.Welcome):
            return sock
    return None


def main() -> None:
    endpoint, master, key_dir, rid, go = sys.argv[1:]
    pair = keys.load_keypair(Path(key_dir) / "controller.secret")
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    first = connect(context, endpoint, master, pair, rid)  # kept open: a socket is closed when dropped
    if first is None:
        sys.exit("no Welcome on the first connection")
    print("welcomed", flush=True)
    while not os.path.exists(go):
        time.sleep(0.05)
    second = connect(context, endpoint, master, pair, rid)
    print("welcomed again" if second is not None else "turned away", flush=True)
    os._exit(0)  # neither socket is closed: no FIN reaches the master before the test ends


if __name__ == "__main__":
    main()
