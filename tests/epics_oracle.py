"""Facts read from EPICS's own C libraries, in a separate process.

Loading libca or libCom into the test process corrupts the heap at
interpreter exit (glibc aborts the run after every test has passed), so
the C tables and messages the tests compare with are read by a short-lived
child process and handed back as JSON.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import textwrap
from typing import Any

_PROGRAM = textwrap.dedent(
    """
    import ctypes, json, os, sys
    import epics.ca
    import epicscorelibs.path
    libca = ctypes.CDLL(epics.ca.find_libca())
    libcom = ctypes.CDLL(os.path.join(epicscorelibs.path.lib_path, "libCom.so"))
    libca.ca_message.restype = ctypes.c_char_p
    libca.ca_message.argtypes = [ctypes.c_long]
    def table(lib, name, ctype, count=39):
        return list((ctype * count).in_dll(lib, name))
    def strings(lib, name, count):
        return [s.decode() for s in (ctypes.c_char_p * count).in_dll(lib, name)]
    codes = json.loads(sys.argv[1])
    print(json.dumps({
        "dbr_size": table(libca, "dbr_size", ctypes.c_ushort),
        "dbr_value_size": table(libca, "dbr_value_size", ctypes.c_ushort),
        "dbr_value_offset": table(libca, "dbr_value_offset", ctypes.c_ushort),
        "DBR_XXXXToEpicsType": table(libca, "DBR_XXXXToEpicsType", ctypes.c_int),
        "dbr_value_class": table(libca, "dbr_value_class", ctypes.c_int),
        "ca_message": {str(c): libca.ca_message(c).decode() for c in codes},
        "epicsAlarmConditionStrings": strings(libcom, "epicsAlarmConditionStrings", 22),
        "epicsAlarmSeverityStrings": strings(libcom, "epicsAlarmSeverityStrings", 4),
    }))
    sys.stdout.flush()
    os._exit(0)  # skip the C libraries' exit handlers here too
    """
)


@functools.cache
def facts(codes: tuple[int, ...] = ()) -> dict[str, Any]:
    """The tables of libca and libCom (and libca's text for ``codes``)."""
    result = subprocess.run(
        [sys.executable, "-c", _PROGRAM, json.dumps(list(codes))],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)  # type: ignore[no-any-return]
