"""planlock.durable: the durable engine: runs as DBOS workflows that survive crashes."""

from planlock.durable._client import DurableClient, DurableWorker, system_database_url
from planlock.durable._workflow import WorkerContext

__all__ = ["DurableClient", "DurableWorker", "WorkerContext", "system_database_url"]
