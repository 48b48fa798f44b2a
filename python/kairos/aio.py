"""The asyncio client: the same API, each method an awaitable that runs the engine on a worker
thread (the engine releases the GIL), so the event loop never blocks."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from typing import TYPE_CHECKING, Any

from kairos.client import Client, connect
from kairos.feature_group import Feature, FeatureGroup, InsertResult, Time, Wait
from kairos.feature_view import FeatureView, VectorReturnType

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

    from kairos._frames import ReturnType


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

    async def insert(self, data: Any, *, wait: Wait = "stored") -> InsertResult:
        return await asyncio.to_thread(self.sync.insert, data, wait=wait)

    async def read(
        self,
        *,
        start: Time | None = None,
        end: Time | None = None,
        as_of: Time | None = None,
        return_type: ReturnType = "pandas",
    ) -> Any:
        return await asyncio.to_thread(
            self.sync.read, start=start, end=end, as_of=as_of, return_type=return_type
        )

    async def get_online(self, keys: Sequence[Any], *, return_type: ReturnType = "pandas") -> Any:
        return await asyncio.to_thread(self.sync.get_online, keys, return_type=return_type)

    async def status(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.status)

    async def delete(self) -> None:
        await asyncio.to_thread(self.sync.delete)


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

    async def get_feature_vector(
        self,
        entry: Any,
        *,
        request: dict[str, Any] | None = None,
        training_dataset_version: int | None = None,
        return_type: VectorReturnType = "list",
    ) -> Any:
        return await asyncio.to_thread(
            self.sync.get_feature_vector,
            entry,
            request=request,
            training_dataset_version=training_dataset_version,
            return_type=return_type,
        )

    async def get_feature_vectors(
        self,
        entries: Sequence[Any],
        *,
        request: dict[str, Any] | Sequence[dict[str, Any]] | None = None,
        training_dataset_version: int | None = None,
        return_type: VectorReturnType = "list",
    ) -> Any:
        return await asyncio.to_thread(
            self.sync.get_feature_vectors,
            entries,
            request=request,
            training_dataset_version=training_dataset_version,
            return_type=return_type,
        )

    async def training_data(
        self,
        *,
        start: Time | None = None,
        end: Time | None = None,
        spine: Any = None,
        strict: bool = False,
        as_known_at: bool = False,
        return_type: ReturnType = "pandas",
    ) -> tuple[Any, Any]:
        return await asyncio.to_thread(
            self.sync.training_data,
            start=start,
            end=end,
            spine=spine,
            strict=strict,
            as_known_at=as_known_at,
            return_type=return_type,
        )


class AsyncClient:
    """``kairos.Client`` with awaitable methods; open it with ``kairos.connect_async``."""

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

    async def close(self) -> None:
        await asyncio.to_thread(self.sync.close)

    async def create_feature_group(
        self,
        name: str,
        *,
        primary_key: str | Sequence[str],
        event_time: str,
        features: dict[str, str] | Sequence[Feature] | None = None,
        df: Any = None,
        online_enabled: bool = True,
        description: str = "",
        ttl: dt.timedelta | int | None = None,
        expectations: Sequence[dict[str, Any]] | None = None,
    ) -> AsyncFeatureGroup:
        group = await asyncio.to_thread(
            self.sync.create_feature_group,
            name,
            primary_key=primary_key,
            event_time=event_time,
            features=features,
            df=df,
            online_enabled=online_enabled,
            description=description,
            ttl=ttl,
            expectations=expectations,
        )
        return AsyncFeatureGroup(group)

    async def get_feature_group(self, name: str, version: int | None = None) -> AsyncFeatureGroup:
        return AsyncFeatureGroup(
            await asyncio.to_thread(self.sync.get_feature_group, name, version)
        )

    async def feature_groups(self) -> list[AsyncFeatureGroup]:
        groups = await asyncio.to_thread(self.sync.feature_groups)
        return [AsyncFeatureGroup(g) for g in groups]

    async def get_feature_view(self, name: str, version: int | None = None) -> AsyncFeatureView:
        view = await asyncio.to_thread(self.sync.get_feature_view, name, version)
        return AsyncFeatureView(view)


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
