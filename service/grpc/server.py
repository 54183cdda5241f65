"""The gRPC server: started in the app's lifespan, on the same event loop, when CONVZOO_GRPC_PORT is set."""

from __future__ import annotations

import logging
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from tritonclient.grpc import service_pb2_grpc

from service.access.auth import Access
from service.core.errors import ServiceError
from service.core.settings import Settings
from service.grpc.servicer import SERVICE, InferenceServicer
from service.interfaces import Models
from service.services import Services

log = logging.getLogger("convzoo")


class ReadinessHealth(HealthServicer):  # type: ignore[misc]
    """grpc.health.v1: the server and the inference service are SERVING when REST's /health/ready is 200."""

    def __init__(self, manager: Models) -> None:
        super().__init__()
        self.manager = manager

    async def Check(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if request.service in ("", SERVICE):
            try:
                await self.manager.refresh()
                ready = self.manager.ready()[0]
            except ServiceError:  # a front whose service does not answer: not serving
                ready = False
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if ready
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            return health_pb2.HealthCheckResponse(status=status)
        return await super().Check(request, context)


def options(settings: Settings, *, shared: bool = False) -> list[tuple[str, int]]:
    """The same upload limit as REST: a larger message is refused with RESOURCE_EXHAUSTED."""
    return [
        ("grpc.max_receive_message_length", settings.max_upload_bytes),
        ("grpc.max_send_message_length", -1),
        # Front processes and workers share the port (as they share REST's); one process alone fails on a
        # port in use.
        ("grpc.so_reuseport", 1 if shared or settings.workers > 1 else 0),
    ]


def credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS with CONVZOO_TLS_CERT_FILE and _KEY_FILE; mutual TLS (a client certificate required) with
    CONVZOO_TLS_CLIENT_CA_FILE too; None without them."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    pair = (settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())
    ca = settings.tls_client_ca_file
    return grpc.ssl_server_credentials(
        [pair],
        root_certificates=ca.read_bytes() if ca is not None else None,
        require_client_auth=ca is not None,
    )


async def start(
    services: Services, version: str, *, shared: bool = False, access: Access | None = None
) -> grpc.aio.Server | None:
    """Serve gRPC on CONVZOO_HOST:CONVZOO_GRPC_PORT with the REST app's manager, statistics and metrics;
    `access`: the API keys every call but the health checks needs (service/access/auth.py)."""
    settings = services.settings
    if settings.grpc_port is None:
        return None
    manager = services.manager
    server = grpc.aio.server(options=options(settings, shared=shared))
    servicer = InferenceServicer(
        manager=manager,
        settings=settings,
        statistics=services.statistics,
        metrics=services.metrics,
        version=version,
        pool=services.preprocess_pool,
        access=access,
        watch=services.monitor,
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(ReadinessHealth(manager), server)
    address = f"{settings.host}:{settings.grpc_port}"
    secure = credentials(settings)
    port = server.add_insecure_port(address) if secure is None else server.add_secure_port(address, secure)
    if port == 0:
        raise RuntimeError(f"cannot serve gRPC on {address}")
    await server.start()
    log.info("gRPC (%s) on %s%s", SERVICE, address, "" if secure is None else " (TLS)")
    return server


async def stop(server: grpc.aio.Server | None, grace_s: float) -> None:
    if server is not None:
        await server.stop(grace_s)
