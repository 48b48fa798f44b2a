"""The asyncio client: the same API, each method an awaitable that runs the engine on a worker
thread (the engine releases the GIL), so the event loop never blocks.

Every method here is its blocking twin's, made awaitable by ``off_loop``: one signature and
one behaviour, typed from the original. A method that answers a feature group or view answers
its awaitable twin.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from kairos.client import Client, connect
from kairos.feature_group import FeatureGroup
from kairos.feature_view import FeatureView

if TYPE_CHECKING:
    from types import TracebackType

P = ParamSpec("P")
R = TypeVar("R")
W = TypeVar("W")
Awaitable = Callable[Concatenate[Any, P], Coroutine[Any, Any, R]]


def off_loop(method: Callable[Concatenate[Any, P], R]) -> Awaitable[P, R]:
    """``method`` of the object's ``sync`` twin, as an awaitable run on a worker thread."""

    async def run(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.to_thread(method, self.sync, *args, **kwargs)

    return _named_after(run, method)


def off_loop_as(
    method: Callable[Concatenate[Any, P], R], wrap: Callable[[R], W]
) -> Awaitable[P, W]:
    """``off_loop``, its answer made awaitable too by ``wrap``."""

    async def run(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> W:
        return wrap(await asyncio.to_thread(method, self.sync, *args, **kwargs))

    return _named_after(run, method)


F = TypeVar("F", bound=Callable[..., Any])


def _named_after(twin: F, method: Callable[..., Any]) -> F:
    """``twin`` with ``method``'s name and docstring, for help() and tracebacks."""
    twin.__name__ = method.__name__
    twin.__qualname__ = method.__qualname__
    twin.__doc__ = method.__doc__
    return twin


class AsyncFeatureGroup:
    """A feature group whose methods are awaitables."""

    def __init__(self, group: FeatureGroup) -> None:
        self.sync = group
        """The same group with blocking methods (its properties are plain values)."""

    @property
    def name(self) -> str:
        return self.sync.name

    @property
    def version(self) -> int:
        return self.sync.version

    def __repr__(self) -> str:
        return f"AsyncFeatureGroup({self.name!r}, version={self.version})"

    insert = off_loop(FeatureGroup.insert)
    read = off_loop(FeatureGroup.read)
    get_online = off_loop(FeatureGroup.get_online)
    status = off_loop(FeatureGroup.status)
    check = off_loop(FeatureGroup.check)
    compact = off_loop(FeatureGroup.compact)
    delete = off_loop(FeatureGroup.delete)


class AsyncFeatureView:
    """A feature view whose methods are awaitables."""

    def __init__(self, view: FeatureView) -> None:
        self.sync = view
        """The same view with blocking methods (its properties are plain values)."""

    @property
    def name(self) -> str:
        return self.sync.name

    @property
    def version(self) -> int:
        return self.sync.version

    @property
    def features(self) -> list[str]:
        return self.sync.features

    def __repr__(self) -> str:
        return f"AsyncFeatureView({self.name!r}, version={self.version})"

    get_feature_vector = off_loop(FeatureView.get_feature_vector)
    get_feature_vectors = off_loop(FeatureView.get_feature_vectors)
    create_training_data = off_loop(FeatureView.create_training_data)
    training_data = off_loop(FeatureView.training_data)
    train_test_split = off_loop(FeatureView.train_test_split)
    train_validation_test_split = off_loop(FeatureView.train_validation_test_split)
    get_training_data = off_loop(FeatureView.get_training_data)
    read_training_dataset = off_loop(FeatureView.read_training_dataset)
    delete = off_loop(FeatureView.delete)


def _groups(groups: list[FeatureGroup]) -> list[AsyncFeatureGroup]:
    return [AsyncFeatureGroup(g) for g in groups]


def _views(views: list[FeatureView]) -> list[AsyncFeatureView]:
    return [AsyncFeatureView(v) for v in views]


class AsyncClient:
    """``kairos.Client`` with awaitable methods; open it with ``kairos.connect_async``.
    Models, deployments, pipelines, monitors and recommenders come back as the blocking
    client's objects: call theirs through ``asyncio.to_thread``, or use the client's own
    ``predict`` and ``push``, which are awaitable here."""

    def __init__(self, client: Client) -> None:
        self.sync = client
        """The same client with blocking methods."""

    @property
    def backend(self) -> str:
        return self.sync.backend

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.close()

    close = off_loop(Client.close)
    create_feature_group = off_loop_as(Client.create_feature_group, AsyncFeatureGroup)
    get_feature_group = off_loop_as(Client.get_feature_group, AsyncFeatureGroup)
    get_or_create_feature_group = off_loop_as(Client.get_or_create_feature_group, AsyncFeatureGroup)
    feature_groups = off_loop_as(Client.feature_groups, _groups)
    create_feature_view = off_loop_as(Client.create_feature_view, AsyncFeatureView)
    create_feature_view_from_file = off_loop_as(
        Client.create_feature_view_from_file, AsyncFeatureView
    )
    get_feature_view = off_loop_as(Client.get_feature_view, AsyncFeatureView)
    feature_views = off_loop_as(Client.feature_views, _views)
    get_historical_features = off_loop(Client.get_historical_features)
    register_model = off_loop(Client.register_model)
    train = off_loop(Client.train)
    get_model = off_loop(Client.get_model)
    models = off_loop(Client.models)
    deploy = off_loop(Client.deploy)
    get_deployment = off_loop(Client.get_deployment)
    deployments = off_loop(Client.deployments)
    predict = off_loop(Client.predict)
    deploy_pipeline = off_loop(Client.deploy_pipeline)
    get_pipeline = off_loop(Client.get_pipeline)
    pipelines = off_loop(Client.pipelines)
    push = off_loop(Client.push)
    apply_monitor = off_loop(Client.apply_monitor)
    get_monitor = off_loop(Client.get_monitor)
    monitors = off_loop(Client.monitors)
    apply_recommender = off_loop(Client.apply_recommender)
    get_recommender = off_loop(Client.get_recommender)
    recommenders = off_loop(Client.recommenders)


async def connect_async(
    target: str | os.PathLike[str],
    *,
    api_key: str | None = None,
    ca_cert: str | os.PathLike[str] | bytes | None = None,
) -> AsyncClient:
    """``kairos.connect`` for asyncio: opening an embedded engine reads its data dir, so that
    too runs off the loop."""
    client = await asyncio.to_thread(connect, target, api_key=api_key, ca_cert=ca_cert)
    return AsyncClient(client)
