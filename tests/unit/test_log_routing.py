"""py-libp2p's log records go through the node's handler and format, and its network events are one line.

Each case runs in a fresh interpreter: what is tested is the order of imports and logging set-up that ``p2p-node``
goes through (``p2p_fast.app.cli.configure_logging``, then the node imports the rest of py-libp2p).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

PRELUDE = """
import logging, sys, trio
from p2p_fast.stack.patches import prepare_imports
prepare_imports()
from p2p_fast.app.cli import configure_logging
configure_logging("info", FMT)
import libp2p.network.swarm, libp2p.identity.identify  # what the node imports after the set-up
swarm = logging.getLogger("libp2p.network.swarm")
identify = logging.getLogger("libp2p.identity.identify")

def deadline_cancelled():
    caught = []
    async def main():
        with trio.move_on_after(0):
            try:
                await trio.sleep(1)
            except trio.Cancelled as exc:
                caught.append(exc)
                raise
    trio.run(main)
    return caught[0]
"""


def run(fmt: str, body: str) -> list[str]:
    code = PRELUDE.replace("FMT", repr(fmt)) + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stderr.splitlines() if line.strip()]


def test_a_libp2p_warning_is_a_json_record_like_ours() -> None:
    lines = run("json", 'swarm.warning("dial to %s failed", "peer-a")\n')
    assert len(lines) == 1, lines
    doc = json.loads(lines[0])
    assert doc["logger"] == "libp2p.network.swarm"
    assert doc["level"] == "warning"
    assert doc["msg"] == "dial to peer-a failed"


def test_a_libp2p_warning_has_time_and_level_in_text_format() -> None:
    lines = run("text", 'swarm.warning("dial failed")\n')
    assert len(lines) == 1, lines
    assert " WARNING libp2p.network.swarm: dial failed" in lines[0]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_add_conn_cut_off_by_its_deadline_is_one_line(fmt: str) -> None:
    # Swarm.add_conn (py-libp2p 0.8.1) formats the traceback into its own message
    body = """
    import traceback
    exc = deadline_cancelled()
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    assert tb.startswith("Traceback")
    swarm.warning("[ADDCONN_FAIL] add_conn failed for peer %s: %r\\n%s", "peer-a", exc, tb[-2000:])
    """
    lines = run(fmt, body)
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    assert "[ADDCONN_FAIL] add_conn failed for peer peer-a: Cancelled(source='deadline'" in lines[0]


def test_a_reset_connection_logged_with_exc_info_is_one_line_naming_the_error() -> None:
    body = """
    try:
        raise BrokenPipeError(32, "Broken pipe")
    except BrokenPipeError:
        identify.warning("Error sending identify response to %s", "peer-b", exc_info=True)
    """
    lines = run("text", body)
    assert len(lines) == 1, lines
    assert "Error sending identify response to peer-b (BrokenPipeError: [Errno 32] Broken pipe)" in lines[0]


def test_a_group_of_network_events_is_one_line_too() -> None:
    body = """
    exc = BaseExceptionGroup("nursery", [deadline_cancelled(), ConnectionResetError("reset")])
    try:
        raise exc
    except BaseExceptionGroup:
        swarm.warning("notify failed", exc_info=True)
    """
    lines = run("text", body)
    assert len(lines) == 1, lines


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_any_other_exception_keeps_its_traceback(fmt: str) -> None:
    body = """
    try:
        {}["missing"]
    except KeyError:
        swarm.warning("handler crashed", exc_info=True)
    """
    lines = run(fmt, body)
    text = "\n".join(lines)
    assert "Traceback (most recent call last)" in text
    assert "KeyError" in text


def test_a_group_with_one_real_failure_keeps_its_traceback() -> None:
    body = """
    exc = BaseExceptionGroup("nursery", [ConnectionResetError("reset"), ValueError("bug")])
    try:
        raise exc
    except BaseExceptionGroup:
        swarm.warning("notify failed", exc_info=True)
    """
    assert "ValueError: bug" in "\n".join(run("text", body))


def test_our_own_records_keep_their_tracebacks() -> None:
    body = """
    try:
        raise ConnectionResetError("reset")
    except ConnectionResetError:
        logging.getLogger("p2p_fast.x").warning("ours", exc_info=True)
    """
    assert "Traceback (most recent call last)" in "\n".join(run("text", body))


@pytest.mark.parametrize("logger,message", [
    ("libp2p.host.basic_host", "Failed to open stream to peer PEER:\n  Error: handshake read failed"),
    ("libp2p.network.swarm", "fail to upgrade mux for peer %s"),
    ("libp2p.protocol_muxer.multiselect_client", "MultiselectClient handshake: read failed: %s"),
])
def test_an_error_py_libp2p_also_raises_to_its_caller_is_a_debug_record(logger: str, message: str) -> None:
    body = f"""
    log = logging.getLogger({logger!r})
    log.error({message!r}, *(["x"] if "%s" in {message!r} else []))
    log.error("some other failure")
    """
    lines = run("text", body)
    assert len(lines) == 1, lines  # only the other one, still at ERROR
    assert f" ERROR   {logger}: some other failure" in lines[0]


def test_at_debug_level_those_records_are_shown_as_debug() -> None:
    code = PRELUDE.replace('configure_logging("info", FMT)', 'configure_logging("debug", "text")').replace(
        "FMT", "'text'") + 'logging.getLogger("libp2p.network.swarm").error("fail to upgrade mux for peer %s", "p")\n'
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert " DEBUG   libp2p.network.swarm: fail to upgrade mux for peer p" in proc.stderr


def test_a_multiselect_write_failure_is_raised_too_so_a_debug_record() -> None:
    body = """
    logging.getLogger("libp2p.protocol_muxer.multiselect_client").error(
        "MultiselectClient handshake: write failed: %s", "fail to write to multiselect communicator")
    """
    assert run("text", body) == []


@pytest.mark.parametrize("detail,level", [("", "WARNING"), ("Cannot write to stream; stream is reset", "WARNING"),
                                          ("Write operation failed: TCP connection reset by remote peer: socket "
                                           "connection broken: [Errno 32] Broken pipe", "WARNING"),
                                          ("unexpected field 7", "ERROR")])
def test_an_autonat_asker_that_went_away_is_a_warning_other_failures_stay_errors(detail: str, level: str) -> None:
    body = f"""
    logging.getLogger("libp2p.host.autonat.autonat").error("Error handling AutoNAT stream: %s", {detail!r})
    """
    lines = run("text", body)
    assert len(lines) == 1 and f" {level:<7} libp2p.host.autonat.autonat: Error handling AutoNAT stream:" in lines[0]


def test_a_libp2p_module_that_sets_its_own_level_does_not_bypass_the_librarys() -> None:
    # libp2p.network.auto_connector sets its logger to INFO at import (py-libp2p 0.8.1)
    body = """
    import libp2p.network.auto_connector
    logging.getLogger("libp2p.network.auto_connector").info("AUTO_CONNECTOR_STATE: num_connections=0")
    logging.getLogger("p2p_fast.x").info("ours at info")
    """
    lines = run("text", body)
    assert len(lines) == 1 and "ours at info" in lines[0], lines


def test_a_network_error_raised_from_an_authentication_failure_keeps_its_traceback() -> None:
    # the failure issue 12 is about must stay visible: InvalidTag under a connection error
    body = """
    from cryptography.exceptions import InvalidTag
    from libp2p.network.exceptions import SwarmException
    try:
        try:
            raise InvalidTag()
        except InvalidTag as exc:
            raise SwarmException("connection failed") from exc
    except SwarmException:
        swarm.warning("upgrade failed", exc_info=True)
    """
    text = "\\n".join(run("text", body))
    assert "Traceback (most recent call last)" in text and "InvalidTag" in text


@pytest.mark.parametrize("logger,message,detail", [
    ("libp2p.identity.identify_push.identify_push", "Error pushing identify to peer %s: %s",
     "failed to open a stream to peer peer-c"),
    ("libp2p.identity.identify.identify", "Error sending identify response to %s: %s",
     "Write operation failed: connection closed after 0"),
])
def test_identify_to_a_peer_that_is_gone_is_a_warning(logger: str, message: str, detail: str) -> None:
    body = f"""
    logging.getLogger({logger!r}).error({message!r}, "peer-c", {detail!r})
    """
    lines = run("text", body)
    assert len(lines) == 1 and f" WARNING {logger}: Error " in lines[0], lines
