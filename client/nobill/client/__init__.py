"""NOBill's Python client for internal services: channels that send a token on every
call, typed stubs for every service, and a batching usage recorder. Part of the
nobill-client distribution: it needs only grpcio and protobuf (and nobill.v1).

    from nobill.client import NobillClient, UsageRecorder, insecure_channel
"""

from nobill.client.channels import (
    BearerToken,
    TokenSource,
    aio_insecure_channel,
    aio_secure_channel,
    bearer,
    dev_settings,
    insecure_channel,
    secure_channel,
)
from nobill.client.recorder import RecorderStats, UsageRecorder
from nobill.client.stubs import NobillClient

__all__ = [
    "BearerToken",
    "NobillClient",
    "RecorderStats",
    "TokenSource",
    "UsageRecorder",
    "aio_insecure_channel",
    "aio_secure_channel",
    "bearer",
    "dev_settings",
    "insecure_channel",
    "secure_channel",
]
