"""Kairos, the real-time ML platform, from Python.

    import kairos

    fs = kairos.connect("./kairos-data")          # the engine in this process
    fs = kairos.connect("http://localhost:7070")  # or a server: the same API

    cards = fs.get_or_create_feature_group(
        "cards", primary_key="cc_num", event_time="ts", df=payments
    )
    cards.insert(payments, wait="online")
    cards.get_online([4111111111111111])
    cards.read(start="2025-01-01", as_of="2025-02-01")

Rows go in as pandas, Polars, pyarrow or anything with ``__arrow_c_stream__``, and come back
as pandas (``return_type="polars"`` or ``"arrow"`` on request). Failures are the exceptions
of ``kairos.errors``.
"""

from kairos._internal import __version__
from kairos.aio import AsyncClient, AsyncFeatureGroup, AsyncFeatureView, connect_async
from kairos.client import Client, connect
from kairos.errors import (
    BadInput,
    Conflict,
    InternalError,
    KairosError,
    NotFound,
    Unauthorised,
    Unavailable,
)
from kairos.feature_group import Feature, FeatureGroup, InsertResult
from kairos.feature_view import FeatureView, Join, OnDemand
from kairos.models import Deployment, Model
from kairos.monitoring import Monitor, Pipeline, Recommender
from kairos.udf import Udf, udf

__all__ = [
    "AsyncClient",
    "AsyncFeatureGroup",
    "AsyncFeatureView",
    "BadInput",
    "Client",
    "Conflict",
    "Deployment",
    "Feature",
    "FeatureGroup",
    "FeatureView",
    "InsertResult",
    "InternalError",
    "Join",
    "KairosError",
    "Model",
    "Monitor",
    "NotFound",
    "OnDemand",
    "Pipeline",
    "Recommender",
    "Udf",
    "Unauthorised",
    "Unavailable",
    "__version__",
    "connect",
    "connect_async",
    "udf",
]
