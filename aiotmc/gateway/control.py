"""Remote control, safely: allow-listed operations per role, value limits and an audit log.

Nobody sends SCPI by default. The config defines *operations* (``set_voltage`` on ``psu1``
maps to ``VOLT {value}``, a float between 0 and 30) and *roles* (who may run which of them);
raw SCPI (operation ``scpi``) needs a role with ``scpi = true``. Every request, allowed or
refused, is written to the audit log: a JSON-lines file and the ``aiotmc.gateway.audit``
logger. The MQTT command topics and the web API both go through :class:`GatewayController`.

Config (docs/gateway.md, "Remote control and security")::

    [control]
    audit_log = "audit.jsonl"   # in data_dir unless absolute
    timeout = 5.0               # seconds per command
    check_errors = false        # query SYST:ERR? after each write

    [[control.operations]]
    name = "set_voltage"
    instruments = ["psu1"]
    command = "VOLT {value}"
    type = "float"              # float, int, bool, choice or none
    min = 0.0
    max = 30.0
    unit = "V"
    readback = "VOLT?"          # optional: its answer is the command's answer

    [[roles]]
    name = "operator"
    users = ["alice"]
    allow = ["set_voltage"]     # operation names, or "*" for all of them
    instruments = ["psu1"]      # optional: only these instruments
"""

from __future__ import annotations

import enum
import json
import logging
import math
import string
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import anyio

from aiotmc._exceptions import AiotmcError, ConfigError
from aiotmc.gateway.model import CommandRequest, CommandResult
from aiotmc.instrument import Instrument

__all__ = [
    "AuditLog",
    "CommandRefusal",
    "GatewayController",
    "InstrumentLookup",
    "Operation",
    "Refusal",
    "Role",
    "ValueType",
    "from_config",
]

audit_log: Final = logging.getLogger("aiotmc.gateway.audit")

#: Finds the open instrument of a name; raises ``LookupError`` (or returns None) when it is
#: unknown or not open right now. The gateway's sources own the instruments.
InstrumentLookup = Callable[[str], Instrument | None]

#: The operation name of raw SCPI (admin roles only).
SCPI: Final = "scpi"
_MAX_SCPI = 1000  # characters of raw SCPI accepted in one command


class Refusal(enum.StrEnum):
    """Why a command was not carried out (``error`` in the MQTT reply, an HTTP status on
    the web: 403, 404, 400, 422, 503, 502)."""

    NOT_ALLOWED = "not_allowed"
    UNKNOWN_OPERATION = "unknown_operation"
    BAD_VALUE = "bad_value"
    OUT_OF_LIMITS = "out_of_limits"
    UNAVAILABLE = "unavailable"
    FAILED = "failed"


class _Refused(ValueError):
    """A value an operation does not take (``reason``: bad_value or out_of_limits)."""

    def __init__(self, reason: Refusal, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CommandRefusal(CommandResult):
    """A :class:`CommandResult` with ``ok`` false and a machine-readable ``reason``."""

    reason: Refusal = Refusal.FAILED


def refuse(reason: Refusal, detail: str) -> CommandRefusal:
    """A refusal for ``reason``."""
    return CommandRefusal(ok=False, detail=detail, reason=reason)


class ValueType(enum.StrEnum):
    """The type of an operation's value."""

    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    CHOICE = "choice"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Operation:
    """One allow-listed operation on some instruments: its SCPI template and value rules."""

    name: str
    instruments: frozenset[str] | None  # None: any instrument
    command: str
    type: ValueType = ValueType.NONE
    minimum: float | None = None
    maximum: float | None = None
    unit: str = ""
    choices: tuple[str, ...] = ()
    true: str = "1"
    false: str = "0"
    readback: str | None = None
    check_errors: bool = False

    def applies_to(self, instrument: str) -> bool:
        return self.instruments is None or instrument in self.instruments

    @property
    def is_query(self) -> bool:
        return self.command.rstrip().endswith("?")

    def render(self, value: Any) -> str:
        """The SCPI text for ``value``; a :class:`ValueError` (with a ``reason``, bad_value
        or out_of_limits) when the value is of the wrong type or outside the limits."""
        return self.command.format(value=self._checked(value))

    def sample(self) -> Any:
        """A value this operation accepts (to try its template on)."""
        if self.type is ValueType.BOOL:
            return True
        if self.type is ValueType.CHOICE:
            return self.choices[0]
        if self.type is ValueType.NONE:
            return None
        number = self.minimum if self.minimum is not None else self.maximum or 0
        return int(number) if self.type is ValueType.INT else float(number)

    def _checked(self, value: Any) -> str | float | int:
        """The value to put in the template: a number for ``float``/``int`` (so that a
        format spec such as ``{value:.3f}`` applies), else the text to send."""
        kind = self.type
        if kind is ValueType.NONE:
            if value is not None:
                raise _Refused(Refusal.BAD_VALUE, f"{self.name} takes no value")
            return ""
        if value is None:
            raise _Refused(Refusal.BAD_VALUE, f"{self.name} needs a value")
        if kind is ValueType.BOOL:
            if not isinstance(value, bool):
                raise _Refused(Refusal.BAD_VALUE, f"{self.name} needs true or false")
            return self.true if value else self.false
        if kind is ValueType.CHOICE:
            if not isinstance(value, str) or value not in self.choices:
                shown = ", ".join(self.choices)
                raise _Refused(Refusal.BAD_VALUE, f"{self.name} needs one of {shown}")
            return value
        number = _number(value, integer=kind is ValueType.INT)
        if number is None:
            raise _Refused(Refusal.BAD_VALUE, f"{self.name} needs a finite {kind.value}")
        unit = f" {self.unit}" if self.unit else ""
        if self.minimum is not None and number < self.minimum:
            raise _Refused(
                Refusal.OUT_OF_LIMITS,
                f"{self.name}: {number}{unit} is below the minimum {self.minimum}{unit}",
            )
        if self.maximum is not None and number > self.maximum:
            raise _Refused(
                Refusal.OUT_OF_LIMITS,
                f"{self.name}: {number}{unit} is above the maximum {self.maximum}{unit}",
            )
        return number


def _number(value: Any, *, integer: bool) -> float | int | None:
    """``value`` as a finite number (a numeric string is accepted), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = int(value.strip()) if integer else float(value.strip())
        except ValueError:
            return None
    if integer:
        return value if isinstance(value, int) else None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


@dataclass(frozen=True, slots=True)
class Role:
    """Who holds the role and what it allows (``allow`` ``*``: every operation)."""

    name: str
    users: frozenset[str]
    allow: frozenset[str]
    instruments: frozenset[str] | None = None
    scpi: bool = False

    def permits(self, operation: str, instrument: str) -> bool:
        if self.instruments is not None and instrument not in self.instruments:
            return False
        if operation == SCPI:
            return self.scpi
        return "*" in self.allow or operation in self.allow


class AuditLog:
    """Appends one JSON object per command to a file and logs it on ``aiotmc.gateway.audit``
    (INFO when executed, WARNING when refused). ``path`` None: the logger only."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, request: CommandRequest, result: CommandResult, **extra: Any) -> None:
        now = time.time()
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
            "timestamp": now,
            "user": request.user,
            "roles": list(request.roles),
            "source": request.source,
            "instrument": request.instrument,
            "operation": request.operation,
            "value": request.value,
            "ok": result.ok,
            "reason": result.reason.value if isinstance(result, CommandRefusal) else None,
            "detail": result.detail,
            "answer": result.answer,
            **extra,
        }
        line = json.dumps(entry, default=str)
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as file:
                file.write(line + "\n")
        level = logging.INFO if result.ok else logging.WARNING
        audit_log.log(level, "%s", line)


class GatewayController:
    """The gateway's :class:`~aiotmc.gateway.Controller`: checks, executes and audits.

    ``instrument_for(name)`` returns the open instrument (the sources own it); commands
    share it with acquisition through the instrument's own lock.
    """

    def __init__(
        self,
        *,
        operations: Sequence[Operation] = (),
        roles: Sequence[Role] = (),
        instrument_for: InstrumentLookup,
        audit: AuditLog,
        timeout: float = 5.0,
    ) -> None:
        self.operations = tuple(operations)
        self.roles = {role.name: role for role in roles}
        self.instrument_for = instrument_for
        self.audit = audit
        self.timeout = timeout

    def roles_of(self, user: str) -> tuple[str, ...]:
        """The roles the config gives ``user`` (for front ends without their own)."""
        return tuple(name for name, role in self.roles.items() if user in role.users)

    def operation(self, name: str, instrument: str) -> Operation | None:
        """The operation ``name`` as defined for ``instrument``, if any."""
        for op in self.operations:
            if op.name == name and op.applies_to(instrument):
                return op
        return None

    def permitted(self, request: CommandRequest) -> bool:
        """Whether any of the request's roles allows its operation on its instrument."""
        return any(
            role.permits(request.operation, request.instrument)
            for name in request.roles
            if (role := self.roles.get(name)) is not None
        )

    async def execute(self, request: CommandRequest) -> CommandResult:
        """Check ``request`` against roles and limits, run it, audit the outcome."""
        started = time.perf_counter()
        sent: str | None = None
        # Audited in ``finally``: a command cancelled half-way (shutdown) is recorded too.
        result: CommandResult = refuse(Refusal.FAILED, "cancelled")
        try:
            checked = self._check(request)
            if isinstance(checked, CommandRefusal):
                result = checked
            else:
                sent, operation = checked
                result = await self._run(request.instrument, sent, operation)
        except Exception as exc:  # a bug must not lose the audit entry
            result = refuse(Refusal.FAILED, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            elapsed = round((time.perf_counter() - started) * 1000, 3)
            self.audit.record(request, result, command=sent, duration_ms=elapsed)
        return result

    def deny(self, request: CommandRequest, reason: Refusal, detail: str) -> CommandRefusal:
        """Refuse ``request`` before it reaches the checks (a front end found it malformed),
        and audit that."""
        result = refuse(reason, detail)
        self.audit.record(request, result, command=None, duration_ms=0.0)
        return result

    def _check(self, request: CommandRequest) -> tuple[str, Operation | None] | CommandRefusal:
        """The SCPI text to send (and its operation, None for raw SCPI), or a refusal."""
        name, instrument = request.operation, request.instrument
        if not self.permitted(request):
            roles = ", ".join(request.roles) or "none"
            return refuse(
                Refusal.NOT_ALLOWED,
                f"{request.user!r} (roles: {roles}) may not run {name!r} on {instrument!r}",
            )
        if name == SCPI:
            text = request.value
            if not isinstance(text, str) or not text.strip():
                return refuse(Refusal.BAD_VALUE, "scpi needs the command text as its value")
            if len(text) > _MAX_SCPI or any(ord(c) < 0x20 for c in text):
                return refuse(
                    Refusal.BAD_VALUE,
                    f"scpi text must be one line of at most {_MAX_SCPI} characters",
                )
            return text.strip(), None
        operation = self.operation(name, instrument)
        if operation is None:
            return refuse(
                Refusal.UNKNOWN_OPERATION, f"no operation {name!r} on instrument {instrument!r}"
            )
        try:
            return operation.render(request.value), operation
        except _Refused as exc:
            return refuse(exc.reason, str(exc))
        except (ValueError, TypeError) as exc:  # the template rejected a checked value
            return refuse(Refusal.BAD_VALUE, f"{name}: {exc}")

    def _lookup(self, name: str) -> Instrument | None:
        try:
            return self.instrument_for(name)
        except LookupError:
            return None

    async def _run(self, name: str, text: str, operation: Operation | None) -> CommandResult:
        instrument = self._lookup(name)
        if instrument is None or instrument.closed:
            return refuse(Refusal.UNAVAILABLE, f"instrument {name!r} is not available")
        query = operation.is_query if operation is not None else "?" in text
        try:
            with anyio.fail_after(self.timeout):
                async with instrument.lock():
                    answer: str | None = None
                    checking = operation is not None and operation.check_errors
                    if checking:  # older errors are not this command's: drain them first
                        await instrument.errors()
                    if query:
                        answer = await instrument.query(text)
                    else:
                        await instrument.write(text)
                    if operation is not None and operation.readback:
                        answer = await instrument.query(operation.readback)
                    if checking:
                        await instrument.check_errors()
        except TimeoutError:
            return refuse(Refusal.FAILED, f"{name}: no answer within {self.timeout} s")
        except anyio.ClosedResourceError:
            return refuse(Refusal.UNAVAILABLE, f"instrument {name!r} was closed")
        except AiotmcError as exc:
            return refuse(Refusal.FAILED, f"{type(exc).__name__}: {exc}")
        return CommandResult(ok=True, detail=f"{name}: {text}", answer=answer)


# -- configuration ------------------------------------------------------------------------

_TYPES = {t.value: t for t in ValueType}
_OPERATION_KEYS = frozenset(
    {"name", "instruments", "command", "type", "min", "max", "unit", "choices", "true"}
    | {"false", "readback", "check_errors"}
)
_ROLE_KEYS = frozenset({"name", "users", "allow", "instruments", "scpi"})
_CONTROL_KEYS = frozenset({"audit_log", "timeout", "check_errors", "operations"})


def from_config(
    section: Mapping[str, Any],
    key: tuple[str | int, ...] = (),
    *,
    instrument_for: InstrumentLookup,
    data_dir: Path | str | None = None,
    instruments: Collection[str] | None = None,
) -> GatewayController:
    """Build the controller from ``section["control"]`` and ``section["roles"]``.

    ``section`` is the whole config document (other keys are ignored) found at ``key``;
    ``instruments``, when given, are the configured instrument names that operations and
    roles may name. Raises :class:`~aiotmc.ConfigError` with the key path of a bad field.
    """
    control = section.get("control", {})
    if not isinstance(control, Mapping):
        raise ConfigError("must be a table", key=(*key, "control"))
    ckey = (*key, "control")
    _no_unknown(control, _CONTROL_KEYS, ckey)
    timeout = _positive(control.get("timeout", 5.0), (*ckey, "timeout"))
    check_errors = _bool(control.get("check_errors", False), (*ckey, "check_errors"))
    audit_name = control.get("audit_log", "audit.jsonl")
    if not isinstance(audit_name, str) or not audit_name:
        raise ConfigError("must be a file name", key=(*ckey, "audit_log"))
    audit_path = Path(audit_name)
    if not audit_path.is_absolute():
        audit_path = Path(data_dir if data_dir is not None else ".") / audit_path

    raw_ops = control.get("operations", [])
    if not isinstance(raw_ops, list):
        raise ConfigError("must be an array of tables", key=(*ckey, "operations"))
    known = None if instruments is None else frozenset(instruments)
    operations = [
        _operation(entry, (*ckey, "operations", i), check_errors, known)
        for i, entry in enumerate(raw_ops)
    ]
    _no_overlap(operations, (*ckey, "operations"))

    raw_roles = section.get("roles", [])
    if not isinstance(raw_roles, list):
        raise ConfigError("must be an array of tables ([[roles]])", key=(*key, "roles"))
    names = {op.name for op in operations}
    roles: list[Role] = []
    for i, entry in enumerate(raw_roles):
        role = _role(entry, (*key, "roles", i), names, known)
        if any(r.name == role.name for r in roles):
            raise ConfigError(f"role {role.name!r} is defined twice", key=(*key, "roles", i))
        roles.append(role)
    return GatewayController(
        operations=operations,
        roles=roles,
        instrument_for=instrument_for,
        audit=AuditLog(audit_path),
        timeout=timeout,
    )


def _operation(
    entry: Any, key: tuple[str | int, ...], check_errors: bool, known: frozenset[str] | None
) -> Operation:
    if not isinstance(entry, Mapping):
        raise ConfigError("must be a table", key=key)
    _no_unknown(entry, _OPERATION_KEYS, key)
    name = _name(entry.get("name"), (*key, "name"))
    if name == SCPI:
        raise ConfigError("'scpi' is reserved for raw SCPI (a role's scpi = true)", key=key)
    kind_text = entry.get("type", "none")
    if kind_text not in _TYPES:
        raise ConfigError(f"must be one of {', '.join(_TYPES)}", key=(*key, "type"))
    kind = _TYPES[kind_text]
    command = entry.get("command")
    if not isinstance(command, str) or not command.strip():
        raise ConfigError("must be the SCPI template, e.g. 'VOLT {value}'", key=(*key, "command"))
    _template(command, kind, (*key, "command"))
    instruments = _names(entry.get("instruments"), (*key, "instruments"), known)
    minimum = _limit(entry.get("min"), (*key, "min"), kind)
    maximum = _limit(entry.get("max"), (*key, "max"), kind)
    if minimum is not None and maximum is not None and minimum > maximum:
        raise ConfigError(f"min {minimum} is above max {maximum}", key=(*key, "min"))
    choices: tuple[str, ...] = ()
    if kind is ValueType.CHOICE:
        raw = entry.get("choices")
        if not isinstance(raw, list) or not raw or not all(_safe_word(c) for c in raw):
            raise ConfigError(
                "must list the allowed values (words of letters, digits, '.', '_', '+', '-')",
                key=(*key, "choices"),
            )
        choices = tuple(raw)
    elif "choices" in entry:
        raise ConfigError("only for type = 'choice'", key=(*key, "choices"))
    true, false = entry.get("true", "1"), entry.get("false", "0")
    for field, text in (("true", true), ("false", false)):
        if not _safe_word(text):
            raise ConfigError("must be a word such as ON, OFF, 1 or 0", key=(*key, field))
    readback = entry.get("readback")
    if readback is not None and (not isinstance(readback, str) or not readback.endswith("?")):
        raise ConfigError("must be a query (ending with '?')", key=(*key, "readback"))
    unit = entry.get("unit", "")
    if not isinstance(unit, str):
        raise ConfigError("must be a string", key=(*key, "unit"))
    operation = Operation(
        name=name,
        instruments=instruments,
        command=command.strip(),
        type=kind,
        minimum=minimum,
        maximum=maximum,
        unit=unit,
        choices=choices,
        true=true,
        false=false,
        readback=readback,
        check_errors=_bool(entry.get("check_errors", check_errors), (*key, "check_errors")),
    )
    try:
        operation.render(operation.sample())
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"the template does not take a {kind.value}: {exc}", key=(*key, "command")
        ) from None
    return operation


def _role(
    entry: Any, key: tuple[str | int, ...], operations: set[str], known: frozenset[str] | None
) -> Role:
    if not isinstance(entry, Mapping):
        raise ConfigError("must be a table", key=key)
    _no_unknown(entry, _ROLE_KEYS, key)
    name = _name(entry.get("name"), (*key, "name"))
    users = entry.get("users", [])
    if not isinstance(users, list) or not all(isinstance(u, str) and u for u in users):
        raise ConfigError("must be a list of user names", key=(*key, "users"))
    allow = entry.get("allow", [])
    if not isinstance(allow, list) or not all(isinstance(a, str) for a in allow):
        raise ConfigError("must be a list of operation names or '*'", key=(*key, "allow"))
    for i, op in enumerate(allow):
        if op == SCPI:
            raise ConfigError("raw SCPI is granted by scpi = true", key=(*key, "allow", i))
        if op != "*" and op not in operations:
            raise ConfigError(f"no operation {op!r} in [control]", key=(*key, "allow", i))
    return Role(
        name=name,
        users=frozenset(users),
        allow=frozenset(allow),
        instruments=_names(entry.get("instruments"), (*key, "instruments"), known),
        scpi=_bool(entry.get("scpi", False), (*key, "scpi")),
    )


def _no_overlap(operations: Sequence[Operation], key: tuple[str | int, ...]) -> None:
    """Two definitions of one operation name may not share an instrument."""
    for i, op in enumerate(operations):
        for other in operations[:i]:
            if other.name != op.name:
                continue
            if op.instruments is None or other.instruments is None:
                shared = "every instrument"
            elif common := op.instruments & other.instruments:
                shared = ", ".join(sorted(common))
            else:
                continue
            raise ConfigError(f"{op.name!r} is defined twice for {shared}", key=(*key, i))


def _template(command: str, kind: ValueType, key: tuple[str | int, ...]) -> None:
    """Only ``{value}`` (with a format spec at most) may appear, and only when there is one."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(command) if f is not None]
    except ValueError as exc:
        raise ConfigError(f"bad template: {exc}", key=key) from None
    if any(f != "value" for f in fields):
        raise ConfigError("the only placeholder allowed is {value}", key=key)
    if kind is ValueType.NONE and fields:
        raise ConfigError("type = 'none' takes no {value}", key=key)
    if kind is not ValueType.NONE and not fields:
        raise ConfigError("needs a {value} placeholder", key=key)
    if any(ord(c) < 0x20 for c in command):
        raise ConfigError("must be one line", key=key)


def _no_unknown(
    table: Mapping[str, Any], allowed: frozenset[str], key: tuple[str | int, ...]
) -> None:
    for name in table:
        if name not in allowed:
            raise ConfigError(
                f"unknown field (known: {', '.join(sorted(allowed))})", key=(*key, name)
            )


def _name(value: Any, key: tuple[str | int, ...]) -> str:
    """A name that is also safe as an MQTT topic level (no ``+``, ``#``, ``/``, ``$``)."""
    if not isinstance(value, str) or not _safe_word(value) or "+" in value:
        raise ConfigError("must be a name of letters, digits, '_', '-' or '.'", key=key)
    return value


def _names(
    value: Any, key: tuple[str | int, ...], known: frozenset[str] | None
) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError("must be a list of instrument names", key=key)
    for i, name in enumerate(value):
        if known is not None and name not in known:
            raise ConfigError(f"no instrument {name!r} in the config", key=(*key, i))
    return frozenset(value)


def _limit(value: Any, key: tuple[str | int, ...], kind: ValueType) -> float | None:
    if value is None:
        return None
    if kind not in (ValueType.FLOAT, ValueType.INT):
        raise ConfigError("limits apply to float and int operations only", key=key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError("must be a finite number", key=key)
    return float(value)


def _positive(value: Any, key: tuple[str | int, ...]) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError("must be a positive number of seconds", key=key)
    return float(value)


def _bool(value: Any, key: tuple[str | int, ...]) -> bool:
    if not isinstance(value, bool):
        raise ConfigError("must be true or false", key=key)
    return value


def _safe_word(value: Any) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= 64
        and all(c.isascii() and (c.isalnum() or c in "._+-") for c in value)
    )
