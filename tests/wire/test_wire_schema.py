"""The checked-in generated code is what protoc makes of the checked-in schema (so nobody edits one without the
other): the schema compared with any protoc, the generated file byte for byte with the protoc that made it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from p2p_fast.protocols import pb
from p2p_fast.protocols.pb import messages_pb2

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = [("p2p_fast/protocols/pb/messages.proto", "p2p_fast/protocols/pb/messages_pb2.py"),
           ("tests/wire/v2.proto", "tests/wire/v2_pb2.py")]
PROTOC = shutil.which("protoc")
needs_protoc = pytest.mark.skipif(PROTOC is None, reason="protoc not installed (apt-get install protobuf-compiler; "
                                                        "scripts/setup-env.sh does when run as root)")


def _protoc_version() -> str:
    return subprocess.run([PROTOC, "--version"], capture_output=True, text=True, check=True).stdout.strip()


@needs_protoc
def test_the_schema_compiles_to_the_descriptor_the_package_uses(tmp_path: Path) -> None:
    out = tmp_path / "set.pb"
    subprocess.run([PROTOC, "-I", ".", f"--descriptor_set_out={out}", SCHEMAS[0][0]], cwd=REPO, check=True)
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    for message in fresh.message_type:  # the Python generator leaves out the JSON names
        for field in message.field:
            field.ClearField("json_name")
    used = descriptor_pb2.FileDescriptorProto.FromString(messages_pb2.DESCRIPTOR.serialized_pb)
    assert fresh == used, "messages.proto changed without scripts/gen-proto.sh"


@needs_protoc
@pytest.mark.parametrize("proto, generated", SCHEMAS)
def test_regenerating_gives_the_checked_in_file(tmp_path: Path, proto: str, generated: str) -> None:
    version = _protoc_version()
    if version != pb.GENERATED_BY:
        pytest.skip(f"{version} is not {pb.GENERATED_BY}, which generated the checked-in files (its output differs "
                    f"in form; the schema itself is compared above)")
    subprocess.run([PROTOC, "-I", ".", f"--python_out={tmp_path}", proto], cwd=REPO, check=True)
    assert (tmp_path / generated).read_text() == (REPO / generated).read_text(), \
        f"{generated} is not what protoc makes of {proto}: run scripts/gen-proto.sh"


def test_the_protocol_doc_shows_the_schema_as_it_is() -> None:
    proto = (REPO / SCHEMAS[0][0]).read_text()
    body = proto[proto.index('syntax = "proto3";'):]
    assert f"```proto\n{body}```" in (REPO / "docs/protocol.md").read_text(), "docs/protocol.md shows an old schema"
