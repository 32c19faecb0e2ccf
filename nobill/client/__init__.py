"""NOBill's Python client for internal services: typed stubs with token injection and a
batching usage recorder. Depends only on grpcio and protobuf (and nobill.v1).

    from nobill.client import NobillClient, UsageRecorder
"""

from nobill.client.recorder import RecorderStats, UsageRecorder
from nobill.client.stubs import NobillClient, TokenInjector

__all__ = ["NobillClient", "RecorderStats", "TokenInjector", "UsageRecorder"]
