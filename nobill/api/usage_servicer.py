"""UsageService: every RPC answers UNIMPLEMENTED (the generated base class) until the
usage capability lands."""

from __future__ import annotations

from nobill.v1 import usage_pb2_grpc


class UsageServicer(usage_pb2_grpc.UsageServiceServicer):
    pass
