"""The p2pd control protocol messages, built at import time in a private protobuf descriptor pool.

Why not ``p2pclient``'s generated ``p2pd_pb2``: importing p2pclient next to libp2p registers ``crypto.pb.KeyType``
twice in protobuf's default pool and fails. Our schema lives in its own :class:`DescriptorPool`, so it can never
clash with libp2p (or anything else) and needs no ``protoc`` and no generated code pinned to a protobuf version.

Only the messages the driver uses are declared; proto2 keeps unknown fields, so a daemon that sends more (newer
forks add fields) still parses. Field numbers follow the daemon's ``pb/p2pd.proto``.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_PACKAGE = "testing.interop.p2pd"

_F = descriptor_pb2.FieldDescriptorProto
_OPT, _REQ, _REP = _F.LABEL_OPTIONAL, _F.LABEL_REQUIRED, _F.LABEL_REPEATED
_SCALARS = {
    "bytes": _F.TYPE_BYTES,
    "string": _F.TYPE_STRING,
    "bool": _F.TYPE_BOOL,
    "int64": _F.TYPE_INT64,
    "int32": _F.TYPE_INT32,
}

# message name -> (enums {name: {value_name: number}}, fields [(label, type, name, number)]).
# A type that is not a scalar names a message, or an enum as "Message.Enum".
_SCHEMA: dict[str, tuple[dict[str, dict[str, int]], list[tuple[int, str, str, int]]]] = {
    "Request": (
        {
            "Type": {
                "IDENTIFY": 0,
                "CONNECT": 1,
                "STREAM_OPEN": 2,
                "STREAM_HANDLER": 3,
                "DHT": 4,
                "LIST_PEERS": 5,
                "CONNMANAGER": 6,
                "DISCONNECT": 7,
                "PUBSUB": 8,
                "PERSISTENT_CONN_UPGRADE": 9,
                "REMOVE_STREAM_HANDLER": 10,
            }
        },
        [
            (_REQ, "Request.Type", "type", 1),
            (_OPT, "ConnectRequest", "connect", 2),
            (_OPT, "DisconnectRequest", "disconnect", 7),
            (_OPT, "PSRequest", "pubsub", 8),
        ],
    ),
    "Response": (
        {"Type": {"OK": 0, "ERROR": 1}},
        [
            (_REQ, "Response.Type", "type", 1),
            (_OPT, "ErrorResponse", "error", 2),
            (_OPT, "IdentifyResponse", "identify", 4),
            (_REP, "PeerInfo", "peers", 6),
            (_OPT, "PSResponse", "pubsub", 7),
        ],
    ),
    "IdentifyResponse": ({}, [(_REQ, "bytes", "id", 1), (_REP, "bytes", "addrs", 2)]),
    "ConnectRequest": (
        {},
        [(_REQ, "bytes", "peer", 1), (_REP, "bytes", "addrs", 2), (_OPT, "int64", "timeout", 3)],
    ),
    "DisconnectRequest": ({}, [(_REQ, "bytes", "peer", 1)]),
    "ErrorResponse": ({}, [(_REQ, "string", "msg", 1)]),
    "PeerInfo": ({}, [(_REQ, "bytes", "id", 1), (_REP, "bytes", "addrs", 2)]),
    "PSRequest": (
        {"Type": {"GET_TOPICS": 0, "LIST_PEERS": 1, "PUBLISH": 2, "SUBSCRIBE": 3}},
        [(_REQ, "PSRequest.Type", "type", 1), (_OPT, "string", "topic", 2), (_OPT, "bytes", "data", 3)],
    ),
    "PSMessage": (
        {},
        [
            (_OPT, "bytes", "from", 1),
            (_OPT, "bytes", "data", 2),
            (_OPT, "bytes", "seqno", 3),
            (_REP, "string", "topicIDs", 4),
            (_OPT, "bytes", "signature", 5),
            (_OPT, "bytes", "key", 6),
        ],
    ),
    "PSResponse": ({}, [(_REP, "string", "topics", 1), (_REP, "bytes", "peerIDs", 2)]),
}


def _build() -> descriptor_pool.DescriptorPool:
    fdp = descriptor_pb2.FileDescriptorProto(name="p2p_fast_interop_p2pd.proto", package=_PACKAGE, syntax="proto2")
    for msg_name, (enums, fields) in _SCHEMA.items():
        msg = fdp.message_type.add(name=msg_name)
        for enum_name, values in enums.items():
            enum = msg.enum_type.add(name=enum_name)
            for value_name, number in values.items():
                enum.value.add(name=value_name, number=number)
        for label, type_name, field_name, number in fields:
            field = msg.field.add(name=field_name, number=number, label=label)
            if type_name in _SCALARS:
                field.type = _SCALARS[type_name]
            else:
                owner = type_name.split(".")[0]
                is_enum = "." in type_name and type_name.split(".")[1] in _SCHEMA[owner][0]
                field.type = _F.TYPE_ENUM if is_enum else _F.TYPE_MESSAGE
                field.type_name = f".{_PACKAGE}.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(fdp.SerializeToString())
    return pool


_POOL = _build()


def _cls(name: str):
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.{name}"))


Request = _cls("Request")
Response = _cls("Response")
IdentifyResponse = _cls("IdentifyResponse")
ConnectRequest = _cls("ConnectRequest")
DisconnectRequest = _cls("DisconnectRequest")
ErrorResponse = _cls("ErrorResponse")
PeerInfo = _cls("PeerInfo")
PSRequest = _cls("PSRequest")
PSMessage = _cls("PSMessage")
PSResponse = _cls("PSResponse")

__all__ = [
    "Request",
    "Response",
    "IdentifyResponse",
    "ConnectRequest",
    "DisconnectRequest",
    "ErrorResponse",
    "PeerInfo",
    "PSRequest",
    "PSMessage",
    "PSResponse",
]
