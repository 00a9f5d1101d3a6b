"""A server loads the filter and channel-name modules with the first decorated name.

Plain names (found or not) are answered without them, so an IOC whose
clients never ask for ``$``, a field or a filter does not pay for importing
them at start-up; the first decorated name loads them and is served as
before.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

CODE = """
import json, sys

before = set(sys.modules)  # what the interpreter's start-up loaded (site, .pth files)
from caioc.server import ChannelDouble, ChannelString, ServerConfig
from caioc.server._server_logic import ServerLogic

LAZY = ("caioc.server._filters", "caioc.server._names", "caioc.server._access")

def loaded():
    return sorted(m for m in LAZY if m in sys.modules and m not in before)

logic = ServerLogic(
    {"a": ChannelDouble(value=1.0), "s": ChannelString(value="text")}, ServerConfig()
)
found = {
    "a": logic.lookup("a") is logic.pvdb["a"],
    "missing": logic.lookup("other:ioc:pv") is None,
}
plain = loaded()
found["a.VAL"] = logic.lookup("a.VAL") is logic.pvdb["a"]
found["missing.VAL"] = logic.lookup("other.VAL") is None
filtered = logic.lookup('a.{"dbnd":{"d":0.5}}')
long_string = logic.lookup("s.$")
found["filtered"] = type(filtered).__name__
found["long_string"] = (long_string.native_type, long_string.max_length)
found["bad filter"] = logic.lookup('a.{"nonsense":{}}') is None
print(json.dumps({"plain": plain, "decorated": loaded(), "found": found}))
"""


def test_plain_names_are_served_without_the_filter_modules() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CODE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.splitlines()[-1])
    assert result["plain"] == []
    assert result["decorated"] == ["caioc.server._filters", "caioc.server._names"]
    assert result["found"] == {
        "a": True,
        "missing": True,
        "a.VAL": True,
        "missing.VAL": True,
        "filtered": "FilteredChannel",
        "long_string": [4, 40],  # DBR_CHAR x 40: a STRING seen through '$'
        "bad filter": True,
    }
