"""The client port's front: one listener for gRPC and HTTP, as etcd serves both on its client URLs.

grpcio cannot adopt a connection accepted elsewhere and refuses anything but gRPC over HTTP/2, so the
member owns the public listener itself and decides per connection, from its first bytes and without
consuming them (``classify``), who gets it:

- **gRPC** connections are handed, by file descriptor, to a relay process (``relay``) that copies bytes
  between them and grpcio's private listener. TLS stays end to end: grpcio terminates it and checks the
  client certificate exactly as when it owned the port. The copying costs the member's own process
  nothing (it runs in the relay process), and the member never touches a byte after the hand-over.
- **HTTP** connections (etcd's JSON gateway, ``/health``, ``/version``, ``/metrics``) are served in the
  member by ``raftkv.api.gateway``, which terminates TLS with the same certificates and client-certificate
  check and calls the same servicers gRPC calls.

``port`` ties these together; ``--enable-grpc-gateway=false`` leaves all of it out and lets grpcio bind the
client port directly, as before.

This package must not import grpc: the relay process imports it and should start in milliseconds.
"""
