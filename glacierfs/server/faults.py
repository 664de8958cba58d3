"""Fault injection for reliability tests: which requests fail, and how.

SPEC is a comma-separated list of rules `OPERATION:KIND:WHEN`:
  OPERATION  an operation name (UploadMultipartPart, ...) or * for all
  KIND       500 | 503 | 408 | throttle | drop | hang | hang-after | 404 | corrupt | job-fails
             hang: hold the request unhandled until the fault spec is next changed (or 10
             minutes pass), then answer 503. hang-after: handle the request, then hold the
             reply the same way (the change is made; the client never hears of it). Crash
             tests use them to kill a client at an exact point.
             404: ResourceNotFoundException, what a job (or upload) the service has
             forgotten answers. corrupt: handle the request, then flip every bit of the byte in
             the middle of the reply body, headers (the tree-hash header too) left as they were:
             a transfer error a checksum must catch. job-fails (InitiateJob only): the job is
             created, and ends Failed.
  WHEN       a fraction 0-1 of that operation's requests (random, reproducible with --seed),
             or #N for exactly its Nth request (1-based; #N+ for the Nth and every one after)
Example: `UploadMultipartPart:500:0.1,CompleteMultipartUpload:drop:#1`.
The first rule that fires wins. A faulted request changes nothing on the server (except
hang-after, corrupt and job-fails, by design).
"""

from __future__ import annotations

import random
import re
import threading
from collections import Counter
from dataclasses import dataclass

from ..errors import UserError

KINDS = ("500", "503", "408", "throttle", "drop", "hang", "hang-after", "404", "corrupt",
         "job-fails")
# Kinds that let the request be carried out, and act on its reply (or its job) afterwards.
AFTER_KINDS = ("hang-after", "corrupt", "job-fails")
HOLD_LIMIT = 600.0  # seconds a hang holds a request at most
_WHEN = re.compile(r"#(\d+)(\+?)|(0(\.\d+)?|1(\.0+)?|\.\d+)")


@dataclass(frozen=True)
class Rule:
    operation: str
    kind: str
    fraction: float | None  # random rate, or
    nth: int | None  # exactly this request number of the operation
    and_after: bool  # with nth: every request from nth on

    def __str__(self) -> str:
        when = f"#{self.nth}{'+' if self.and_after else ''}" if self.nth else str(self.fraction)
        return f"{self.operation}:{self.kind}:{when}"


def parse_spec(spec: str, operations: frozenset[str]) -> list[Rule]:
    rules = []
    for text in filter(None, (part.strip() for part in spec.split(","))):
        pieces = text.split(":")
        if len(pieces) != 3:
            raise UserError(f"fault rule {text!r} is not OPERATION:KIND:WHEN")
        operation, kind, when = pieces
        if operation != "*" and operation not in operations:
            raise UserError(f"fault rule {text!r}: unknown operation {operation!r}")
        if kind not in KINDS:
            raise UserError(f"fault rule {text!r}: kind must be one of {', '.join(KINDS)}")
        if kind == "job-fails" and operation != "InitiateJob":
            raise UserError(f"fault rule {text!r}: job-fails applies to InitiateJob only")
        match = _WHEN.fullmatch(when)
        if not match:
            raise UserError(f"fault rule {text!r}: WHEN must be a fraction 0-1 or #N")
        if match.group(1):
            rules.append(Rule(operation, kind, None, int(match.group(1)), bool(match.group(2))))
        else:
            rules.append(Rule(operation, kind, float(when), None, False))
    return rules


class FaultInjector:
    """Decides per request whether to fail it; also counts requests per operation."""

    def __init__(self, operations: frozenset[str], spec: str = "", seed: int | None = None):
        self._operations = operations
        self._lock = threading.Lock()
        self._seed = seed
        self.requests: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self._released = threading.Event()
        self.set_spec(spec)

    def set_spec(self, spec: str) -> None:
        rules = parse_spec(spec, self._operations)
        with self._lock:
            self._released.set()  # let held requests go
            self._released = threading.Event()
            self._rules = rules
            self._random = random.Random(self._seed)
            self._seen: Counter[str] = Counter()  # requests per operation since this spec

    @property
    def spec(self) -> str:
        return ",".join(str(rule) for rule in self._rules)

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.injected.clear()

    def next_fault(self, operation: str) -> str | None:
        """Count one request of `operation`; return the fault kind to inject, if any."""
        with self._lock:
            self.requests[operation] += 1
            self._seen[operation] += 1
            number = self._seen[operation]
            for rule in self._rules:
                if rule.operation not in ("*", operation):
                    continue
                if rule.nth is not None:
                    fires = number == rule.nth or (rule.and_after and number > rule.nth)
                else:
                    fires = self._random.random() < rule.fraction
                if fires:
                    self.injected[f"{operation}:{rule.kind}"] += 1
                    return rule.kind
            return None

    def hold(self) -> None:
        """Block (a `hang` fault) until the spec changes, or HOLD_LIMIT passes."""
        with self._lock:
            released = self._released
        released.wait(HOLD_LIMIT)

    def snapshot(self) -> dict:
        with self._lock:
            return {"requests": dict(self.requests), "faults": dict(self.injected),
                    "spec": self.spec}
