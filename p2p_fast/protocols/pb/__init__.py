"""The protobuf schema of our messages (``messages.proto``) and the code ``protoc`` generated from it
(``messages_pb2.py``, checked in; ``scripts/gen-proto.sh`` regenerates it). Only ``codec`` and ``messages`` use it."""

# The protoc that generated messages_pb2.py (Debian bookworm's protobuf-compiler); tests/wire/test_wire_schema.py
# compares a fresh generation byte for byte only with this version, and the schema itself with any protoc.
GENERATED_BY = "libprotoc 3.21.12"
