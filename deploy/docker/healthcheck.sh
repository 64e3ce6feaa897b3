#!/bin/sh
# Docker HEALTHCHECK of a bertforge service: grpc.health.v1 on its own gRPC port (health is exempt from the
# bearer token), over TLS when the service serves TLS. The certificate is not verified: this is loopback.
set -eu
if [ -n "${BERTFORGE_TLS_CERT:-}" ]; then
  exec grpc_health_probe -addr="127.0.0.1:${BERTFORGE_PORT}" -tls -tls-no-verify -connect-timeout=2s -rpc-timeout=3s
fi
exec grpc_health_probe -addr="127.0.0.1:${BERTFORGE_PORT}" -connect-timeout=2s -rpc-timeout=3s
