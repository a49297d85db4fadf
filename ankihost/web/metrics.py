"""Prometheus metrics: counted once per request where the request is logged (`RequestLog.write`
calls `Metrics.record`), plus gauges read from the server's state when /metrics is scraped.

Label values are bounded: an endpoint outside the route tables is "other", an unusual HTTP
method "other". Series per user only with ANKIHOST_METRICS_PER_USER, and only for names of
existing accounts (a failed login's name never becomes a label). The admin listener serves
`exposition()`; nothing here reads request bodies or knows about the pages.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from ankihost import __version__

if TYPE_CHECKING:
    from ankihost.accounts.directory import AccountDirectory
    from ankihost.registry import Registry
    from ankihost.storage.paths import DataFolder
    from ankihost.web.request_log import RequestLog

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
# Seconds: a small sync step takes ~1 ms, a full upload of a large collection minutes.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0, 60.0, 300.0)
# Summing every user's media folder is a directory scan per user: done at most this often.
STORAGE_CACHE_SECS = 30
NO_USER = "-"


def endpoints(sync_methods: Iterable[str], media_methods: Iterable[str], pages: Iterable[str]) -> set[str]:
    """The request targets that get an endpoint label of their own."""
    return ({f"/sync/{m}" for m in sync_methods} | {f"/msync/{m}" for m in media_methods}
            | set(pages))


def _area(target: str) -> str:
    head = target.split("/", 2)[1] if target.startswith("/") else ""
    return head if head in ("sync", "msync", "account", "admin") else "other"


@dataclass(frozen=True)
class SyncOutcome:
    kind: str  # normal, full_upload, full_download, media
    result: str  # ok, failed, aborted, refused


def sync_outcome(record: RequestLog) -> SyncOutcome | None:
    """The sync a request ended, if it ended one. A normal sync ends with `finish` (ok) or with
    the `abort` the client sends after any failure; a media sync with `mediaSanity`, or with
    the first media request that fails (media syncs are not aborted)."""
    target, ok = record.target, record.status == 200
    if target == "/sync/finish":
        return SyncOutcome("normal", "ok" if ok else "failed")
    if target == "/sync/abort":
        return SyncOutcome("normal", "aborted")
    if target == "/sync/upload":
        return SyncOutcome("full_upload", "refused" if ok and record.refused else "ok" if ok else "failed")
    if target == "/sync/download":
        return SyncOutcome("full_download", "ok" if ok else "failed")
    if target == "/msync/mediaSanity" or (target.startswith("/msync/") and not ok):
        return SyncOutcome("media", "ok" if ok else "failed")
    return None


def login_outcome(record: RequestLog) -> tuple[str, str] | None:
    """(surface, result) for a sign-in: a sync login, or a page's sign-in form."""
    if record.target == "/sync/hostKey":
        result = {200: "ok", 403: "failed", 429: "throttled"}.get(record.status)
        return None if result is None else ("sync", result)
    if record.login is not None:
        return _area(record.target), record.login
    return None


class Metrics:
    def __init__(self, per_user: bool, is_user: Callable[[str], bool] = lambda name: False) -> None:
        self.known: frozenset[str] = frozenset()
        self.per_user = per_user
        self.is_user = is_user
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._counters(per_user)
        # the labelled series of each (endpoint, method, status), looked up once
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def _counters(self, per_user: bool) -> None:
        user = ("user",) if per_user else ()
        r = self.registry
        self.requests = Counter("ankihost_requests", "HTTP requests answered, by endpoint, method "
                                "and status", ("endpoint", "method", "status"), registry=r)
        self.duration = Histogram("ankihost_request_duration_seconds", "Time to answer a request "
                                  "(until the response starts)", ("endpoint",), registry=r,
                                  buckets=DURATION_BUCKETS)
        self.syncs = Counter("ankihost_syncs", "Syncs ended, by kind (normal, full_upload, "
                             "full_download, media) and result (ok, failed, aborted, refused)",
                             ("kind", "result", *user), registry=r)
        self.received = Counter("ankihost_received_bytes", "Request body bytes received (as sent, "
                                "compressed)", ("area", *user), registry=r)
        self.sent = Counter("ankihost_sent_bytes", "Response body bytes sent (as sent, compressed)",
                            ("area", *user), registry=r)
        self.refused = Counter("ankihost_full_uploads_refused", "Full uploads refused, by reason "
                               "(quota, too_large, corrupt)", ("reason",), registry=r)
        self.logins = Counter("ankihost_logins", "Sign-ins by surface (sync, account, admin) and "
                              "result (ok, failed, throttled)", ("surface", "result"), registry=r)

    def name_endpoints(self, known: set[str]) -> None:
        """The request targets that get an endpoint label of their own (others are "other")."""
        self.known = frozenset(known)

    def record(self, record: RequestLog, seconds: float) -> None:
        """Count one request (from `RequestLog.write`, once per request)."""
        endpoint = record.target if record.target in self.known else "other"
        method = record.http_method if record.http_method in HTTP_METHODS else "other"
        key = (endpoint, method, record.status)
        children = self._children.get(key)
        if children is None:  # bounded: endpoints, methods and statuses are
            children = self._children[key] = (
                self.requests.labels(endpoint, method, str(record.status)), self.duration.labels(endpoint))
        children[0].inc()
        children[1].observe(seconds)
        area = _area(record.target)
        user = self._user(record.user)
        if record.bytes_in:
            self.received.labels(area, *user).inc(record.bytes_in)
        if record.bytes_out:
            self.sent.labels(area, *user).inc(record.bytes_out)
        if (outcome := sync_outcome(record)) is not None:
            self.syncs.labels(outcome.kind, outcome.result, *user).inc()
        if record.refused:
            self.refused.labels(record.refused).inc()
        if (login := login_outcome(record)) is not None:
            self.logins.labels(*login).inc()

    def record_sent(self, record: RequestLog, size: int) -> None:
        """Body bytes of a streamed response, counted as they are sent."""
        if size:
            self.sent.labels(_area(record.target), *self._user(record.user)).inc(size)

    def _user(self, name: str) -> tuple[str, ...]:
        if not self.per_user:
            return ()
        return (name,) if name != NO_USER and self.is_user(name) else (NO_USER,)

    def watch(self, directory: AccountDirectory, registry: Registry, folder: DataFolder) -> None:
        """Also report the gauges read from the server's state at each scrape."""
        self.registry.register(StateCollector(directory, registry, folder, self.per_user))

    def exposition(self) -> bytes:
        """The text format (blocking: scans media folders now and then; run it in a thread)."""
        return generate_latest(self.registry)


class StateCollector:
    """Gauges computed when scraped: accounts, devices, sync sessions, storage, free space."""

    def __init__(self, directory: AccountDirectory, registry: Registry, folder: DataFolder,
                 per_user: bool) -> None:
        self.directory = directory
        self.states = registry
        self.folder = folder
        self.per_user = per_user
        self._storage: dict[str, tuple[int, int]] = {}
        self._storage_at = -STORAGE_CACHE_SECS - 1.0

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("ankihost_info", "The server's version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield self._users()
        yield GaugeMetricFamily("ankihost_devices", "Devices with a login key of their own",
                                value=self.directory.device_count())
        sessions = self.states.syncing()
        yield GaugeMetricFamily("ankihost_sync_sessions_active", "Normal syncs in progress",
                                value=sessions)
        yield from self._storage_gauges()
        yield GaugeMetricFamily("ankihost_data_folder_free_bytes", "Free space where SYNC_BASE is",
                                value=shutil.disk_usage(self.folder.base).free)

    def _users(self) -> GaugeMetricFamily:
        users = GaugeMetricFamily("ankihost_users", "Accounts, by where they are defined (env: "
                                  "SYNC_USERn, store: the account store)", labels=["source"])
        counts = {"env": 0, "store": 0}
        for name in self.directory.names():
            account = self.directory.by_name(name)
            if account is not None:
                counts[account.source] = counts.get(account.source, 0) + 1
        for source, count in counts.items():
            users.add_metric([source], count)
        return users

    def _storage_gauges(self) -> Iterator[Metric]:
        sizes = self._sizes()
        labels = ["kind", "user"] if self.per_user else ["kind"]
        storage = GaugeMetricFamily("ankihost_storage_bytes", "Bytes stored: the collections "
                                    "(kind=collection) and media files (kind=media)", labels=labels)
        if self.per_user:
            for name, (collection, media) in sorted(sizes.items()):
                storage.add_metric(["collection", name], collection)
                storage.add_metric(["media", name], media)
        else:
            storage.add_metric(["collection"], sum(c for c, _ in sizes.values()))
            storage.add_metric(["media"], sum(m for _, m in sizes.values()))
        yield storage

    def _sizes(self) -> dict[str, tuple[int, int]]:
        now = time.monotonic()
        if now - self._storage_at > STORAGE_CACHE_SECS:
            sizes = {}
            for name in self.directory.names():
                folder = self.folder.user(name)
                sizes[name] = (folder.collection_bytes(), folder.media_bytes())
            self._storage, self._storage_at = sizes, now
        return self._storage
