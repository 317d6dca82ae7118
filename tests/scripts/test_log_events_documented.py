"""docs/log-events.md is the operator's list of log lines: every event name the daemons
can write (cq_log_event and the worker's cq_wd_log_request) is documented there, and the
list names no event the code no longer writes. A new line without its row fails here,
before an operator meets an event nobody explained."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCES = ("dispatcher", "fleet", "workerd", "cli")
# The event is the first string literal after the call's level expression.
CALL = re.compile(r'\b(?:cq_log_event|cq_wd_log_request)\s*\((?:[^";]*?),\s*"([a-z0-9_]+)"', re.S)
# ... or a choice of two: `cond ? "replies_refused" : "replies_not_delivered"`.
CHOICE = re.compile(r'\b(?:cq_log_event|cq_wd_log_request)\s*\((?:[^";]*?),\s*[^",;]*\?\s*'
                    r'"([a-z0-9_]+)"\s*:\s*"([a-z0-9_]+)"', re.S)


def events_in_code():
    found = {}
    for part in SOURCES:
        for path in sorted((ROOT / part).glob("*.c")):
            text = path.read_text()
            names = CALL.findall(text) + [n for pair in CHOICE.findall(text) for n in pair]
            for name in names:
                found.setdefault(name, path.relative_to(ROOT))
    return found


def events_in_docs():
    """The first column of the tables headed `| event | ...` (the others list fields)."""
    names, in_events = set(), False
    for line in (ROOT / "docs" / "log-events.md").read_text().splitlines():
        if not line.startswith("|"):
            in_events = False
        elif line.startswith("| event |"):
            in_events = True
        elif in_events and (m := re.match(r"\| `([a-z0-9_]+)` \|", line)):
            names.add(m.group(1))
    return names


def test_the_scan_finds_the_events():
    # A broken pattern would find nothing and let everything pass.
    code = events_in_code()
    assert {"execution", "session_adopted", "dead_lettered", "tracing_started",
            "replies_refused", "replies_not_delivered"} <= set(code)
    assert len(code) > 60


def test_every_event_is_documented():
    missing = {name: str(path) for name, path in events_in_code().items()
               if name not in events_in_docs()}
    assert not missing, f"events without a row in docs/log-events.md: {missing}"


def test_every_documented_event_exists():
    stale = events_in_docs() - set(events_in_code())
    assert not stale, f"docs/log-events.md lists events the code never writes: {sorted(stale)}"
