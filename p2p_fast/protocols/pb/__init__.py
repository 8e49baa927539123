"""The protobuf schema of our messages (``messages.proto``) and the code ``protoc`` generated from it
(``messages_pb2.py``, checked in; ``scripts/gen-proto.sh`` regenerates it). Only ``codec`` and ``messages`` use it."""
