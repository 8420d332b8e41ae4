"""Packet sources and sinks: PacketBatch, capture files, (later) raw sockets and TAP."""
