# A Kairos Python worker: runs views' Python functions for a server (or a CLI process) that
# cannot run Python itself. Started by the engine with the interpreter its configuration names;
# it needs pyarrow, plus numpy for vectorised functions and whatever the functions import.
#
# Protocol, over stdin and stdout, one call at a time: a request is a 4-byte big-endian length
# and a JSON header (name, source, sha256, mode, returns), then a 4-byte length and an Arrow IPC
# stream of one batch holding the input columns in order. The answer is a 4-byte length and a
# JSON header ({"ok": true} or {"ok": false, "error": "..."}), then, when ok, a 4-byte length
# and an Arrow IPC stream of one batch of one column. Anything the function prints goes to
# stderr, never into the answers.
import json
import struct
import sys
import traceback

import pyarrow as pa

_answers = sys.stdout.buffer
sys.stdout = sys.stderr
_requests = sys.stdin.buffer
_functions = {}


def _read(n):
    data = _requests.read(n)
    if len(data) < n:
        raise EOFError
    return data


def _frame():
    (n,) = struct.unpack(">I", _read(4))
    return _read(n)


def _send(*frames):
    for frame in frames:
        _answers.write(struct.pack(">I", len(frame)))
        _answers.write(frame)
    _answers.flush()


_TYPES = {
    "bool": pa.bool_(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "string": pa.string(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
}


def _load(header):
    key = (header["name"], header["sha256"])
    if key not in _functions:
        namespace = {"__name__": "kairos.udf." + header["name"]}
        exec(compile(header["source"], "<kairos udf %s>" % header["name"], "exec"), namespace)
        _functions[key] = namespace[header["name"]]
    return _functions[key]


def _call(header, batch):
    function = _load(header)
    target = _TYPES[header["returns"]]
    columns = batch.columns
    if header["mode"] == "vectorized":
        arrays = [column.to_numpy(zero_copy_only=False) for column in columns]
        return pa.array(function(*arrays), type=target, from_pandas=True)
    rows = zip(*(column.to_pylist() for column in columns))
    return pa.array([None if None in r else function(*r) for r in rows], type=target)


def main():
    while True:
        try:
            header = json.loads(_frame())
            payload = _frame()
        except EOFError:
            return
        try:
            batch = pa.ipc.open_stream(payload).read_next_batch()
            out = _call(header, batch)
            sink = pa.BufferOutputStream()
            result = pa.record_batch([out], names=["out"])
            with pa.ipc.new_stream(sink, result.schema) as writer:
                writer.write_batch(result)
            _send(b'{"ok": true}', sink.getvalue().to_pybytes())
        except Exception as error:  # the function's failure is the caller's answer
            lines = traceback.format_exception_only(type(error), error)
            _send(json.dumps({"ok": False, "error": "".join(lines).strip()}).encode())


main()
