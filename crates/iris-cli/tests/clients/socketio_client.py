"""python-socketio (the sync client) streams one tell from a live `iris serve`
(crates/iris-cli/tests/socketio.rs):

    python socketio_client.py URL KEY

Prints the chunks and the answer as JSON; exits 1 when something is missing.
"""
import json
import sys
import threading

import socketio

url, key = sys.argv[1], sys.argv[2]
sio = socketio.Client(reconnection=False)
chunks = []
done = threading.Event()
result = {}


@sio.on("tell:chunk")
def on_chunk(data):
    chunks.append(data["chunk"])


@sio.on("tell:complete")
def on_complete(data):
    result.update(data)
    done.set()


@sio.on("tell:error")
def on_error(data):
    result.update(data)
    done.set()


sio.connect(url, auth={"token": key}, transports=["websocket"], wait_timeout=10)
ack = sio.call("tell:start", {"toTeam": "demo", "message": "from python [[delay=150]]", "fromTeam": "py"}, timeout=15)
if not done.wait(15):
    sys.exit("no tell:complete within 15 s")
sio.disconnect()
print(json.dumps({"ack": ack, "chunks": chunks, "result": result}))
ok = ack.get("ok") and result.get("response") == "from python" and "".join(chunks) == "from python"
sys.exit(0 if ok else 1)
