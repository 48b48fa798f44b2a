"""Drives a running Kairos server with NVIDIA's tritonclient, over HTTP and gRPC, and checks
the answers: server and model metadata, readiness, model configuration, and inference with
JSON and binary tensors on a deployment (entity keys and request values in, the transformer
inside) and on a registered ONNX model (feature tensor in).

    python3 tritonclient_check.py HOST:PORT EXPECTED_JSON

EXPECTED_JSON names the deployment, the ONNX model and the answers to compare with:
{"deployment", "cards", "request", "probabilities", "model", "inputs", "model_probabilities"}.
Needs: pip install "tritonclient[http,grpc]" numpy
"""

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def close(actual, expected, tolerance, what):
    actual = np.asarray(actual, dtype=np.float64).ravel()
    expected = np.asarray(expected, dtype=np.float64).ravel()
    if actual.shape != expected.shape or not np.allclose(actual, expected, atol=tolerance, rtol=0):
        raise AssertionError(f"{what}: {actual.tolist()} != {expected.tolist()}")


def deployment_inputs(module, expected, binary):
    cards = expected["cards"]
    n = len(cards)
    request = expected["request"]
    columns = [
        ("cc_num", np.array(cards, dtype=np.int64), "INT64"),
        ("ts", np.array([request["ts"].encode()] * n, dtype=np.object_), "BYTES"),
        ("amount", np.full(n, request["amount"], dtype=np.float64), "FP64"),
        ("category", np.array([request["category"].encode()] * n, dtype=np.object_), "BYTES"),
        ("latitude", np.full(n, request["latitude"], dtype=np.float64), "FP64"),
        ("longitude", np.full(n, request["longitude"], dtype=np.float64), "FP64"),
    ]
    inputs = []
    for i, (name, values, datatype) in enumerate(columns):
        tensor = module.InferInput(name, [n], datatype)
        if module is httpclient:
            # Binary and JSON tensors side by side in one request.
            tensor.set_data_from_numpy(values, binary_data=binary and i % 2 == 0)
        else:
            tensor.set_data_from_numpy(values)
        inputs.append(tensor)
    return inputs


def check(module, client, expected):
    name = expected["deployment"]
    assert client.is_server_live(), "server not live"
    assert client.is_server_ready(), "server not ready"
    as_json = {"as_json": True} if module is grpcclient else {}

    server = client.get_server_metadata(**as_json)
    assert server["name"] == "kairos", server
    assert "model_configuration" in server["extensions"], server

    metadata = client.get_model_metadata(name, **as_json)
    inputs = {t["name"]: t for t in metadata["inputs"]}
    assert inputs["cc_num"]["datatype"] == "INT64", metadata
    assert [int(d) for d in inputs["cc_num"]["shape"]] == [-1], metadata
    assert inputs["category"]["datatype"] == "BYTES", metadata
    assert [o["name"] for o in metadata["outputs"]] == ["probability", "label"], metadata
    assert client.is_model_ready(name), "deployment not ready"
    assert not client.is_model_ready("no_such_model"), "an unknown model reads ready"

    config = client.get_model_config(name, **as_json)
    config = config.get("config", config)
    assert config["name"] == name, config
    assert {i["name"] for i in config["input"]} == set(inputs), config

    for binary in ([True, False] if module is httpclient else [True]):
        outputs = [module.InferRequestedOutput("probability", **({"binary_data": binary} if module is httpclient else {})),
                   module.InferRequestedOutput("label", **({"binary_data": binary} if module is httpclient else {}))]
        result = client.infer(name, deployment_inputs(module, expected, binary), outputs=outputs, request_id="check-1")
        close(result.as_numpy("probability"), expected["probabilities"], 1e-9, f"{module.__name__} probability")
        labels = result.as_numpy("label")
        assert labels.dtype == np.int64, labels.dtype
        assert labels.tolist() == [int(p >= 0.5) for p in expected["probabilities"]], labels
        response = result.get_response(**as_json)
        assert response["model_name"] == name and response["id"] == "check-1", response

    # A registered ONNX model, fed its feature tensor directly.
    model = expected["model"]
    x = np.asarray(expected["inputs"], dtype=np.float32)
    tensor = module.InferInput("X", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer(model, [tensor])
    close(result.as_numpy("probabilities")[:, 1], expected["model_probabilities"], 1e-6, f"{module.__name__} {model}")
    assert result.as_numpy("label").tolist() == [int(p >= 0.5) for p in expected["model_probabilities"]]

    # Errors come back as errors, with the reason.
    bad = module.InferInput("X", [1, 3], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    try:
        client.infer(model, [bad])
    except InferenceServerException as e:
        assert "expected [rows, 4]" in str(e), str(e)
    else:
        raise AssertionError("a tensor of the wrong shape was accepted")


def main():
    url, expected = sys.argv[1], json.loads(sys.argv[2])
    check(httpclient, httpclient.InferenceServerClient(url=url), expected)
    check(grpcclient, grpcclient.InferenceServerClient(url=url), expected)
    print("tritonclient: HTTP and gRPC checks passed")


if __name__ == "__main__":
    main()
