"""The FunctionCall ('F') message, which libpq only exposes through PQfn / large objects."""

import struct

import pgwire


def oid_of(w, regproc):
    return int(w.scalar(f"select '{regproc}'::regprocedure::oid"))


def test_function_call_text_and_binary(relay):
    """Bug guarded: 'F' messages are rejected as unknown or their FunctionCallResponse ('V') is not
    relayed back."""
    with pgwire.connect(relay.port) as w:
        int4pl = oid_of(w, "int4pl(int4,int4)")
        w.send(pgwire.function_call(int4pl, ["2", "3"], [0], 0))
        v = w.expect("V")
        assert v.payload == struct.pack("!i", 1) + b"5"
        assert w.expect("Z").payload == b"I"

        w.send(pgwire.function_call(int4pl, [struct.pack("!i", 2), struct.pack("!i", 40)], [1], 1))
        v = w.expect("V")
        assert v.payload == struct.pack("!ii", 4, 42)
        w.expect("Z")

        # NULL result from a strict function called with a NULL argument.
        w.send(pgwire.function_call(int4pl, [None, "1"], [0], 0))
        v = w.expect("V")
        assert v.payload == struct.pack("!i", -1)
        w.expect("Z")
        assert w.scalar("select 'still in sync'") == "still in sync"


def test_function_call_error(relay):
    """Bug guarded: an error answer to a FunctionCall desynchronises the session."""
    with pgwire.connect(relay.port) as w:
        int4div = oid_of(w, "int4div(int4,int4)")
        w.send(pgwire.function_call(int4div, ["1", "0"], [0], 0))
        e = w.expect("E")
        assert pgwire.parse_error_fields(e.payload)["C"] == "22012"
        assert w.expect("Z").payload == b"I"
        w.send(pgwire.function_call(999999999, ["1"], [0], 0))
        e = w.expect("E")
        assert pgwire.parse_error_fields(e.payload)["C"] in ("42883", "XX000")
        w.expect("Z")
        assert w.scalar("select 3") == "3"
