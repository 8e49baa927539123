"""The benchmark gate's floors (``bench/floors.py``, ``bench/gate.py``): a floor per machine, a conservative and
announced default for an unknown machine, lost macro rounds as failures. Real floors files in ``tmp_path``; the one
end-to-end run measures the real micro ratios."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import floors  # noqa: E402
from floors import FloorsError, Machine  # noqa: E402

XEON = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
cpu MHz\t\t: 2100.000

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
cpu MHz\t\t: 2100.000
"""
ARM = """processor\t: 0
BogoMIPS\t: 48.00
CPU part\t: 0xd0c

processor\t: 1
BogoMIPS\t: 48.00
CPU part\t: 0xd0c

processor\t: 2
CPU part\t: 0xd0c

processor\t: 3
CPU part\t: 0xd0c
"""
FAST = Machine("Fast CPU 9000", 2)
SLOW = Machine("Slow CPU 100", 2)


def _floors_file(tmp_path: Path, machines: list[dict]) -> Path:
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps({"format": 2, "tolerance": 0.25, "machines": machines}))
    return path


def _two_machines(tmp_path: Path) -> Path:
    return _floors_file(tmp_path, [
        {"cpu_model": FAST.cpu_model, "cores": 2, "how": "t", "ratios": {"micro.a": 3.0, "micro.b": 10.0}, "runs": []},
        {"cpu_model": SLOW.cpu_model, "cores": 2, "how": "t", "ratios": {"micro.a": 2.0, "micro.b": 12.0,
                                                                          "macro.c": 4.0}, "runs": []},
        {"cpu_model": None, "cores": 2, "how": "model not recorded", "ratios": {"micro.a": 2.5}, "runs": []},
    ])


def test_machine_is_cpu_model_and_core_count_from_cpuinfo(tmp_path: Path) -> None:
    assert floors.machine_from_cpuinfo(XEON) == Machine("Intel(R) Xeon(R) Processor", 2)
    assert floors.machine_from_cpuinfo(ARM) == Machine("CPU part 0xd0c", 4)
    (tmp_path / "cpuinfo").write_text(XEON)
    assert floors.this_machine(tmp_path / "cpuinfo") == Machine("Intel(R) Xeon(R) Processor", 2)
    here = floors.this_machine()  # the real /proc/cpuinfo
    assert here.cpu_model and here.cores >= 1


def test_a_known_machine_is_held_to_its_own_floor_not_the_lowest(tmp_path: Path) -> None:
    doc = floors.load(_two_machines(tmp_path))
    fast, note = floors.baseline_for(doc, FAST)
    assert fast == {"micro.a": 3.0, "micro.b": 10.0} and note is None
    # 2.1 passes the lowest floor of all machines (2.0 x 0.75 = 1.5) but is a regression on the fast machine
    # (3.0 x 0.75 = 2.25): the point of keeping a floor per machine.
    assert floors.below_floor({"micro.a": 2.1, "micro.b": 10.0}, fast, 0.25) == ["micro.a"]
    slow, note = floors.baseline_for(doc, SLOW)
    assert slow["micro.a"] == 2.0 and note is None
    assert floors.below_floor({"micro.a": 2.1, "micro.b": 10.0}, slow, 0.25) == []
    # The same model with another core count is another machine.
    _, note = floors.baseline_for(doc, Machine(FAST.cpu_model, 4))
    assert note is not None


def test_an_unknown_machine_gets_the_most_conservative_floor_and_a_note(tmp_path: Path) -> None:
    path = _two_machines(tmp_path)
    base, note = floors.baseline_for(floors.load(path), Machine("Unknown CPU", 8), str(path))
    # Per ratio, the lowest baseline of every machine, the unrecorded-model one included.
    assert base == {"micro.a": 2.0, "micro.b": 10.0, "macro.c": 4.0}
    assert note is not None
    assert "Unknown CPU, 8 cores" in note and str(path) in note and "3 recorded machine" in note
    assert "python bench/gate.py --write-baseline" in note
    # An entry whose model was not recorded never matches, even a machine that reports no model.
    _, note = floors.baseline_for(floors.load(path), Machine("cpu unknown", 2))
    assert note is not None


def test_a_file_without_machines_or_in_the_old_form_is_refused_with_the_command(tmp_path: Path) -> None:
    with pytest.raises(FloorsError, match="no floors file .*--write-baseline"):
        floors.load(tmp_path / "missing.json")
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"tolerance": 0.25, "ratios": {"micro.a": 2.0}, "how": "lowest of all"}))
    with pytest.raises(FloorsError, match="format 2.*--write-baseline"):
        floors.load(old)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(FloorsError, match="not JSON"):
        floors.load(tmp_path / "bad.json")
    with pytest.raises(FloorsError, match="records no machine"):
        floors.baseline_for(floors.load(_floors_file(tmp_path, [])), FAST)
    noratios = _floors_file(tmp_path, [{"cpu_model": "x", "cores": 2}])
    with pytest.raises(FloorsError, match="machine 1 needs"):
        floors.load(noratios)


def test_recording_a_machine_replaces_its_entry_and_keeps_the_others(tmp_path: Path) -> None:
    path = _two_machines(tmp_path)
    doc = floors.record_machine(floors.load(path), SLOW, "new", {"micro.a": 2.2, "micro.b": 11.0}, [{"micro.a": 2.2}])
    path.write_text(json.dumps(doc))
    again = floors.load(path)
    assert len(again["machines"]) == 3
    slow, _ = floors.baseline_for(again, SLOW)
    # A --skip-macro measurement keeps this machine's macro ratio.
    assert slow == {"micro.a": 2.2, "micro.b": 11.0, "macro.c": 4.0}
    assert floors.baseline_for(again, FAST)[0] == {"micro.a": 3.0, "micro.b": 10.0}
    new = floors.record_machine(again, Machine("New CPU", 2), "n", {"micro.a": 5.0}, [])
    assert len(new["machines"]) == 4 and floors.baseline_for(new, Machine("New CPU", 2)) == ({"micro.a": 5.0}, None)
    fresh = floors.record_machine(None, FAST, "first", {"micro.a": 1.0}, [])
    assert fresh["format"] == 2 and fresh["machines"][0]["cpu_model"] == FAST.cpu_model


def test_a_macro_round_that_lost_messages_is_named() -> None:
    rounds = [{"stock": {"sent": 1000, "lost": 0}, "ours": {"sent": 6000, "lost": 0}},
              {"stock": {"sent": 1100, "lost": 0}, "ours": {"sent": 6100, "lost": 12}},
              {"stock": {"sent": 900, "lost": 3}, "ours": {"sent": 5900, "lost": 0}}]
    assert floors.lost_rounds(rounds, "256 B capacity, 1.5 s") == [
        "macro round 2 of 3 (ours pair, 256 B capacity, 1.5 s): 12 of 6100 messages lost",
        "macro round 3 of 3 (stock pair, 256 B capacity, 1.5 s): 3 of 900 messages lost"]
    assert floors.lost_rounds(rounds[:1], "x") == []


def test_the_repository_floors_file_is_per_machine() -> None:
    doc = floors.load(BENCH / "baseline.json")
    models = [m["cpu_model"] for m in doc["machines"]]
    assert "Intel(R) Xeon(R) Processor" in models
    xeon, note = floors.baseline_for(doc, Machine("Intel(R) Xeon(R) Processor", 2))
    assert note is None and "macro.gossip_msgs_per_s" in xeon
    assert all(len(m["ratios"]) == len(xeon) for m in doc["machines"])


@pytest.mark.slow
def test_the_gate_fails_naming_the_ratio_below_this_machines_floor(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """End to end on the real micro ratios (~10-30 s): this machine known to the file, one floor out of reach."""
    pytest.importorskip("p2p_fast._ext._framing_c", reason="the compiled hot paths are not built")
    import gate

    (tmp_path / "cpuinfo").write_text(XEON)
    # One floor out of reach, one always met (a compiled path at least half as fast as its twin).
    ratios = {"micro.framing.encode_frame": 1000.0, "micro.framing.decode_uvarint": 0.5}
    path = _floors_file(tmp_path, [{"cpu_model": "Intel(R) Xeon(R) Processor", "cores": 2, "how": "t",
                                    "ratios": ratios, "runs": []}])
    rc = gate.main(["--skip-macro", "--baseline", str(path), "--cpuinfo", str(tmp_path / "cpuinfo")])
    err = capsys.readouterr().err
    assert rc == 1
    assert "REGRESSION: micro.framing.encode_frame" in err and "Intel(R) Xeon(R) Processor, 2 cores" in err
    assert "has no floors of its own" not in err
    assert err.count("REGRESSION") == 1, err
