"""River's detectors over the streams `kairos bench detectors` wrote: updates per second and
the indices where each signalled. Usage: python3 river_detectors.py DIR (reads DIR/*.f64)."""

import json
import sys
import time
from array import array
from pathlib import Path

import river
from river import drift

DETECTORS = {
    "adwin": (drift.ADWIN, "gaussian"),
    "page_hinkley": (drift.PageHinkley, "gaussian"),
    "ddm": (drift.binary.DDM, "errors"),
}

out = {"river": river.__version__, "results": {}}
for name, (make, stream_name) in DETECTORS.items():
    stream = array("d")
    stream.frombytes((Path(sys.argv[1]) / f"{stream_name}.f64").read_bytes())
    stream = stream.tolist()
    if stream_name == "errors":
        stream = [int(x) for x in stream]
    detector = make()
    drifts = []
    start = time.perf_counter()
    for i, x in enumerate(stream):
        detector.update(x)
        if detector.drift_detected:
            drifts.append(i)
    seconds = time.perf_counter() - start
    out["results"][name] = {"updates": len(stream), "seconds": seconds, "drifts": drifts}
print(json.dumps(out))
