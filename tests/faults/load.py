"""Callers that keep sending while a dependency fails, retrying UNAVAILABLE with the same
request_id, as the API contract tells them to."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

import grpc

from interfaces.grpc.gen.notify.v1 import notification_service_pb2_grpc as svc_grpc
from tests.faults.harness import RETRYABLE, Caller, SendResult, webhook_request


@dataclass
class Pending:
    result: SendResult
    next_try: float


@dataclass
class LoadReport:
    results: list[SendResult] = field(default_factory=list)

    @property
    def accepted(self) -> dict[str, str]:
        """request_id -> notification id, for every request that was eventually accepted."""
        return {r.request_id: r.notification_id for r in self.results if r.accepted}

    @property
    def not_accepted(self) -> list[SendResult]:
        return [r for r in self.results if not r.accepted]

    @property
    def unexpected(self) -> list[str]:
        return [f"{r.request_id}: {r.unexpected}" for r in self.results if r.unexpected]

    def count(self, code: str) -> int:
        return sum(r.codes.count(code) for r in self.results)

    @property
    def retried(self) -> int:
        """Requests that needed more than one try."""
        return sum(1 for r in self.results if r.tries > 1)


class SteadyLoad:
    """``clients`` threads; each starts a new request every ``every`` seconds until stop(), and
    keeps retrying its requests that got UNAVAILABLE (every ``retry_every`` seconds, same
    request_id) until they are accepted or ``give_up_at`` (monotonic) passes."""

    def __init__(
        self,
        stub: svc_grpc.NotificationServiceStub,
        caller: Caller,
        url: str,
        *,
        prefix: str,
        clients: int = 4,
        every: float = 0.25,
        retry_every: float = 1.0,
        call_timeout: float = 5.0,
    ) -> None:
        self._stub = stub
        self._caller = caller
        self._url = url
        self._prefix = prefix
        self._every = every
        self._retry_every = retry_every
        self._call_timeout = call_timeout
        self._stopping = threading.Event()
        self._give_up_at = float("inf")
        self.report = LoadReport()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._client, name=f"{prefix}-client-{i}", daemon=True)
            for i in range(clients)
        ]

    def start(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, give_up_after: float) -> LoadReport:
        """No new requests; retries go on for at most ``give_up_after`` seconds."""
        self._give_up_at = time.monotonic() + give_up_after
        self._stopping.set()
        for thread in self._threads:
            thread.join(give_up_after + self._call_timeout + 5)
            assert not thread.is_alive(), f"{thread.name} did not finish"
        return self.report

    def _try(self, result: SendResult) -> bool:
        """One call; True when the request is settled (accepted, or refused for good)."""
        result.tries += 1
        try:
            response = self._stub.SendNotification(
                webhook_request(result.request_id, self._url),
                metadata=self._caller.metadata,
                timeout=self._call_timeout,
            )
        except grpc.RpcError as error:
            code = error.code()  # type: ignore[attr-defined]
            result.codes.append(code.name)
            if code in RETRYABLE:
                return False
            result.unexpected = f"{code.name}: {error.details()}"  # type: ignore[attr-defined]
            return True
        result.notification_id = response.notification.id
        result.accepted_at = time.time()
        return True

    def _client(self) -> None:
        pending: list[Pending] = []
        next_new = time.monotonic()
        while True:
            now = time.monotonic()
            if self._stopping.is_set() and (not pending or now >= self._give_up_at):
                break
            if not self._stopping.is_set() and now >= next_new:
                result = SendResult(f"{self._prefix}-{uuid.uuid4()}")
                with self._lock:
                    self.report.results.append(result)
                if not self._try(result):
                    pending.append(Pending(result, time.monotonic() + self._retry_every))
                next_new = now + self._every
            for item in [p for p in pending if p.next_try <= time.monotonic()]:
                if self._try(item.result):
                    pending.remove(item)
                else:
                    item.next_try = time.monotonic() + self._retry_every
            time.sleep(0.02)
