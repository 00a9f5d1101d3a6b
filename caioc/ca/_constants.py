"""Wire constants of the Channel Access protocol.

Every number here is fixed by the CA protocol specification (protocol
version 4.13) and by epics-base's headers (caProto.h, db_access.h,
caerr.h, alarm.h, caeventmask.h); the comment on each enum names where.
"""

from __future__ import annotations

import enum

__all__ = [
    "CA_MAJOR_PROTOCOL_REVISION",
    "CA_MINOR_PROTOCOL_REVISION",
    "DEFAULT_MAX_ARRAY_BYTES",
    "ECA",
    "EPICS_EPOCH_OFFSET",
    "MAX_ENUM_STATES",
    "MAX_ENUM_STRING_SIZE",
    "MAX_RECORD_LENGTH",
    "MAX_STRING_SIZE",
    "MAX_UNITS_SIZE",
    "PRIORITY_MAX",
    "PRIORITY_MIN",
    "REPEATER_PORT",
    "SERVER_PORT",
    "AccessRights",
    "AlarmSeverity",
    "AlarmStatus",
    "CommandId",
    "ECASeverity",
    "Role",
    "SearchReply",
    "SubscriptionMask",
]

#: Spec "Protocol version": this implementation speaks CA 4.13.
CA_MAJOR_PROTOCOL_REVISION = 4
CA_MINOR_PROTOCOL_REVISION = 13

#: caProto.h: CA_PORT_BASE + 2 * major revision, and the next port up.
SERVER_PORT = 5064
REPEATER_PORT = 5065

#: caProto.h CA_PROTO_PRIORITY_MIN / _MAX (VERSION's data_type field).
PRIORITY_MIN = 0
PRIORITY_MAX = 99

#: db_access.h MAX_STRING_SIZE, MAX_UNITS_SIZE, MAX_ENUM_STRING_SIZE,
#: MAX_ENUM_STATES; dbDefs.h PVNAME_STRINGSZ (record + field name).
MAX_STRING_SIZE = 40
MAX_UNITS_SIZE = 8
MAX_ENUM_STRING_SIZE = 26
MAX_ENUM_STATES = 16
MAX_RECORD_LENGTH = 61

#: EPICS_CA_MAX_ARRAY_BYTES default in epics-base (envDefs / CONFIG_ENV).
DEFAULT_MAX_ARRAY_BYTES = 16384

#: Seconds from the POSIX epoch to the EPICS epoch (1990-01-01 00:00 UTC).
EPICS_EPOCH_OFFSET = 631152000


class Role(enum.Enum):
    """Which end of a conversation a state machine or parser speaks for."""

    # Members are singletons: identity hashing is exact, and far cheaper than
    # Enum's hash of the name on the per-message path of the state machines.
    __hash__ = object.__hash__

    CLIENT = "client"
    SERVER = "server"
    #: The CA repeater: takes registrations, fans out beacons (UDP only).
    REPEATER = "repeater"


class CommandId(enum.IntEnum):
    """Command numbers of the header's first field (spec "Commands"; caProto.h)."""

    VERSION = 0
    EVENT_ADD = 1
    EVENT_CANCEL = 2
    READ = 3  # deprecated since 3.13; recognised and rejected
    WRITE = 4
    SNAPSHOT = 5  # obsolete
    SEARCH = 6
    BUILD = 7  # obsolete
    EVENTS_OFF = 8
    EVENTS_ON = 9
    READ_SYNC = 10  # deprecated; recognised and rejected
    ERROR = 11
    CLEAR_CHANNEL = 12
    RSRV_IS_UP = 13  # the beacon
    NOT_FOUND = 14
    READ_NOTIFY = 15
    READ_BUILD = 16  # obsolete
    REPEATER_CONFIRM = 17
    CREATE_CHAN = 18
    WRITE_NOTIFY = 19
    CLIENT_NAME = 20
    HOST_NAME = 21
    ACCESS_RIGHTS = 22
    ECHO = 23
    REPEATER_REGISTER = 24
    SIGNAL = 25  # obsolete
    CREATE_CH_FAIL = 26
    SERVER_DISCONN = 27


class SearchReply(enum.IntEnum):
    """SEARCH request data_type: whether the server answers "not found" (caProto.h)."""

    DO_REPLY = 10
    DONT_REPLY = 5


class AccessRights(enum.IntFlag):
    """ACCESS_RIGHTS parameter bits (caProto.h CA_PROTO_ACCESS_RIGHT_*)."""

    NO_ACCESS = 0
    READ = 1
    WRITE = 2
    READ_WRITE = 3


class SubscriptionMask(enum.IntFlag):
    """EVENT_ADD trigger mask (caeventmask.h DBE_*)."""

    VALUE = 1
    LOG = 2  # also called DBE_ARCHIVE
    ALARM = 4
    PROPERTY = 8


class AlarmSeverity(enum.IntEnum):
    """Alarm severities (alarm.h epicsAlarmSeverity)."""

    NO_ALARM = 0
    MINOR = 1
    MAJOR = 2
    INVALID = 3


class AlarmStatus(enum.IntEnum):
    """Alarm conditions, the STAT field (alarm.h epicsAlarmCondition)."""

    NO_ALARM = 0
    READ = 1
    WRITE = 2
    HIHI = 3
    HIGH = 4
    LOLO = 5
    LOW = 6
    STATE = 7
    COS = 8
    COMM = 9
    TIMEOUT = 10
    HWLIMIT = 11
    CALC = 12
    SCAN = 13
    LINK = 14
    SOFT = 15
    BAD_SUB = 16
    UDF = 17
    DISABLE = 18
    SIMM = 19
    READ_ACCESS = 20
    WRITE_ACCESS = 21


class ECASeverity(enum.IntEnum):
    """Low three bits of an ECA status code (caerr.h CA_K_*)."""

    WARNING = 0
    SUCCESS = 1
    ERROR = 2
    INFO = 3
    SEVERE = 4
    FATAL = 6


_WARNING = ECASeverity.WARNING
_SUCCESS = ECASeverity.SUCCESS
_ERROR = ECASeverity.ERROR
_INFO = ECASeverity.INFO
_FATAL = ECASeverity.FATAL


class ECA(enum.IntEnum):
    """CA status codes (caerr.h ECA_*), each with libca's message text.

    A code is ``(message_number << 3) | severity``; the text is what
    ``ca_message()`` returns for it, so peers print the same words.
    """

    message: str
    severity: ECASeverity
    message_number: int

    def __new__(cls, message_number: int, severity: ECASeverity, message: str) -> ECA:
        member = int.__new__(cls, (message_number << 3) | int(severity))
        member._value_ = (message_number << 3) | int(severity)
        member.message = message
        member.severity = severity
        member.message_number = message_number
        return member

    @property
    def successful(self) -> bool:
        """True for codes whose severity bit says success (CA_M_SUCCESS)."""
        return bool(self.value & 1)

    NORMAL = (0, _SUCCESS, "Normal successful completion")
    MAXIOC = (1, _ERROR, "Maximum simultaneous IOC connections exceeded")
    UKNHOST = (2, _ERROR, "Unknown internet host")
    UKNSERV = (3, _ERROR, "Unknown internet service")
    SOCK = (4, _ERROR, "Unable to allocate a new socket")
    CONN = (5, _WARNING, "Unable to connect to internet host or service")
    ALLOCMEM = (6, _WARNING, "Unable to allocate additional dynamic memory")
    UKNCHAN = (7, _WARNING, "Unknown IO channel")
    UKNFIELD = (8, _WARNING, "Record field specified inappropriate for channel specified")
    TOLARGE = (
        9,
        _WARNING,
        "The requested data transfer is greater than available memory or EPICS_CA_MAX_ARRAY_BYTES",
    )
    TIMEOUT = (10, _WARNING, "User specified timeout on IO operation expired")
    NOSUPPORT = (11, _WARNING, "Sorry, that feature is planned but not supported at this time")
    STRTOBIG = (12, _WARNING, "The supplied string is unusually large")
    DISCONNCHID = (
        13,
        _ERROR,
        "The request was ignored because the specified channel is disconnected",
    )
    BADTYPE = (14, _ERROR, "The data type specified is invalid")
    CHIDNOTFND = (15, _INFO, "Remote Channel not found")
    CHIDRETRY = (16, _INFO, "Unable to locate all user specified channels")
    INTERNAL = (17, _FATAL, "Channel Access Internal Failure")
    DBLCLFAIL = (18, _WARNING, "The requested local DB operation failed")
    GETFAIL = (19, _WARNING, "Channel read request failed")
    PUTFAIL = (20, _WARNING, "Channel write request failed")
    ADDFAIL = (21, _WARNING, "Channel subscription request failed")
    BADCOUNT = (22, _WARNING, "Invalid element count requested")
    BADSTR = (23, _ERROR, "Invalid string")
    DISCONN = (24, _WARNING, "Virtual circuit disconnect")
    DBLCHNL = (25, _WARNING, "Identical process variable names on multiple servers")
    EVDISALLOW = (26, _ERROR, "Request inappropriate within subscription (monitor) update callback")
    BUILDGET = (27, _WARNING, "Database value get for that channel failed during channel search")
    NEEDSFP = (28, _WARNING, "Unable to initialize without the vxWorks VX_FP_TASK task option set")
    OVEVFAIL = (29, _WARNING, "Event queue overflow has prevented first pass event after event add")
    BADMONID = (30, _ERROR, "Bad event subscription (monitor) identifier")
    NEWADDR = (31, _WARNING, "Remote channel has new network address")
    NEWCONN = (32, _INFO, "New or resumed network connection")
    NOCACTX = (33, _WARNING, "Specified task isn't a member of a CA context")
    DEFUNCT = (34, _FATAL, "Attempt to use defunct CA feature failed")
    EMPTYSTR = (35, _WARNING, "The supplied string is empty")
    NOREPEATER = (36, _WARNING, "Unable to spawn the CA repeater thread- auto reconnect will fail")
    NOCHANMSG = (37, _WARNING, "No channel id match for search reply- search reply ignored")
    DLCKREST = (38, _WARNING, "Resetting dead connection- will try to reconnect")
    SERVBEHIND = (
        39,
        _WARNING,
        "Server (IOC) has fallen behind or is not responding- still waiting",
    )
    NOCAST = (40, _WARNING, "No internet interface with broadcast available")
    BADMASK = (41, _ERROR, "Invalid event selection mask")
    IODONE = (42, _INFO, "IO operations have completed")
    IOINPROGRESS = (43, _INFO, "IO operations are in progress")
    BADSYNCGRP = (44, _ERROR, "Invalid synchronous group identifier")
    PUTCBINPROG = (45, _ERROR, "Put callback timed out")
    NORDACCESS = (46, _WARNING, "Read access denied")
    NOWTACCESS = (47, _WARNING, "Write access denied")
    ANACHRONISM = (48, _ERROR, "Requested feature is no longer supported")
    NOSEARCHADDR = (49, _WARNING, "Empty PV search address list")
    NOCONVERT = (50, _WARNING, "No reasonable data conversion between client and server types")
    BADCHID = (51, _ERROR, "Invalid channel identifier")
    BADFUNCPTR = (52, _ERROR, "Invalid function pointer")
    ISATTACHED = (53, _WARNING, "Thread is already attached to a client context")
    UNAVAILINSERV = (54, _WARNING, "Not supported by attached service")
    CHANDESTROY = (55, _WARNING, "User destroyed channel")
    BADPRIORITY = (56, _ERROR, "Invalid channel priority")
    NOTTHREADED = (
        57,
        _ERROR,
        "Preemptive callback not enabled - additional threads may not join context",
    )
    # caerr.h spells it ECA_16KARRAYCLIENT, not a valid Python name.
    ARRAY16KCLIENT = (
        58,
        _WARNING,
        "Client's protocol revision does not support transfers exceeding 16k bytes",
    )
    CONNSEQTMO = (59, _WARNING, "Virtual circuit connection sequence aborted")
    UNRESPTMO = (60, _WARNING, "Virtual circuit unresponsive")
