"""Drives a Kairos server that has TLS and API keys with NVIDIA's tritonclient, over HTTPS and
gRPC with TLS: the health probes answer without a key; metadata needs one, sent as a header,
and is refused without it (401 over HTTP, UNAUTHENTICATED over gRPC).

    python3 tritonclient_tls_check.py HOST:PORT CA_CERT_PEM API_KEY

Needs: pip install "tritonclient[http,grpc]"
"""

import ssl
import sys

import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def refused(call, says):
    try:
        call()
    except InferenceServerException as e:
        assert says in str(e).lower(), str(e)
    else:
        raise AssertionError("a call without a key was answered")


def main():
    url, ca, key = sys.argv[1], sys.argv[2], sys.argv[3]
    headers = {"authorization": f"Bearer {key}"}

    http = httpclient.InferenceServerClient(
        url=url, ssl=True, ssl_context_factory=lambda: ssl.create_default_context(cafile=ca)
    )
    assert http.is_server_live(), "HTTPS: not live"
    assert http.get_server_metadata(headers=headers)["name"] == "kairos"
    refused(lambda: http.get_server_metadata(), "api key")

    grpc = grpcclient.InferenceServerClient(url=url, ssl=True, root_certificates=ca)
    assert grpc.is_server_live(), "gRPC over TLS: not live"
    assert grpc.get_server_metadata(headers=headers, as_json=True)["name"] == "kairos"
    refused(lambda: grpc.get_server_metadata(), "unauthenticated")
    print("tritonclient: HTTPS and gRPC over TLS with an API key passed")


if __name__ == "__main__":
    main()
