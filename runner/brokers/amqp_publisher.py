"""Publishing to RabbitMQ with streamed publisher confirms (one :class:`Publisher` per thread).

Waiting for each message's confirm costs a RabbitMQ round trip plus its disk write (about
0.75 ms on a 2-core machine) on every ``delay()``; not using confirms at all (kombu's default)
loses, silently, what RabbitMQ had not written when it went down. A Publisher does neither:

- a publish returns once the message is written to the socket; the confirms are read as they
  come, while the thread publishes again, and waited for in :meth:`Publisher.flush`;
- a message stays in memory until RabbitMQ confirms it. After an outage the new connection
  sends again, in order, what the old one left unconfirmed (so it may arrive twice). A copy
  sent again carries the header ``RESENT``: the consumer takes it for a redelivery, so a worker
  that finds its result stored settles it instead of running it again. A nacked message, or
  one returned as unroutable (a delay queue expired meanwhile), is sent again too (a nacked
  one after a backoff, as after an outage);
- at most ``WINDOW`` messages are unconfirmed: a producer faster than RabbitMQ's disk waits.

The broker flushes before it acks (a task's follow-up messages are confirmed before the message
that made them is gone), in ``close()``, and at interpreter exit. With the transport option
``confirm_publish=True`` each publish waits for its own confirm instead.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import pika
from pika.adapters.blocking_connection import BlockingChannel

from runner.exceptions import BrokerError, RunnerError
from runner.stores.amqp import OUTAGE_ERRORS, Link

logger = logging.getLogger("runner.amqp")

RESENT = "x-runner-resent"  # header of a message sent again after its confirm was lost
WINDOW = 1000  # unconfirmed messages at most, per publishing thread
WAIT_SLICE = 1.0  # seconds: a wait for confirms wakes this often (to notice a dead connection)


@dataclass(slots=True)
class Outgoing:
    """A message on its way: kept until RabbitMQ confirms it, to be sent again if need be."""

    queue: str
    body: bytes
    properties: pika.BasicProperties
    eta: float | None


#: declares what a publish of ``Outgoing`` needs on ``channel`` and returns the exchange
Route = Callable[[BlockingChannel, Outgoing, bool], str]


class Publisher:
    """One thread's publishing link, with its unconfirmed messages."""

    def __init__(self, link: Link, route: Route, wait: bool = False):
        self.link = link
        self.route = route
        self.wait = wait  # confirm_publish: each publish waits for its own confirm
        self.outbox: collections.deque[Outgoing] = collections.deque()  # not sent yet
        #: delivery tag -> message, in tag order (an OrderedDict pops its oldest in O(1))
        self.unconfirmed: collections.OrderedDict[int, Outgoing] = collections.OrderedDict()
        self._generation = -1  # the link's connection whose channel is in confirm mode
        self._tag = 0
        self._redeclare = False  # a message came back unroutable: declare its route again
        self.refused: collections.deque[Outgoing] = collections.deque()  # nacked: again later
        self._refusals = 0  # rounds of nacks in a row
        self._retry_at = 0.0  # when the refused ones go out again

    def send(self, messages: list[Outgoing]) -> None:
        """Publish ``messages`` (after any outage, reconnecting with backoff)."""
        self.outbox.extend(messages)
        self.link.run("enqueue", lambda channel: self._sync(channel, 0 if self.wait else WINDOW))

    def flush(self, reconnect: bool = True, timeout: float | None = None) -> None:
        """Return once RabbitMQ has confirmed every message sent so far. Without
        ``reconnect`` (closing, exiting) an outage is not waited out, and confirms are waited
        for ``timeout`` seconds at most: either raises."""
        if not self.pending:
            return
        if reconnect:
            self.link.run("confirm", lambda channel: self._sync(channel, 0))
        else:
            self._sync(self.link.channel(), 0,
                       None if timeout is None else time.monotonic() + timeout)

    @property
    def pending(self) -> int:
        return len(self.outbox) + len(self.unconfirmed) + len(self.refused)

    # -- inside Link.run ----------------------------------------------------------------------

    def _sync(self, channel: BlockingChannel, most: int, deadline: float | None = None) -> None:
        """Send the outbox; then read confirms until at most ``most`` are outstanding."""
        if self._generation != self.link.generation:
            self._select(channel)
        self._send_outbox(channel)
        while len(self.unconfirmed) > most or self.outbox or (self.refused and not most):
            if deadline is not None and time.monotonic() >= deadline:
                raise BrokerError(f"RabbitMQ at {self.link.url.masked} did not confirm "
                                  f"{self.pending} message(s) in time")
            self._release_refused()
            if self.outbox:
                self._send_outbox(channel)
            elif self.unconfirmed:
                self._read(channel, self._fewer_unconfirmed())
            else:  # only refused ones are left: wait for their turn
                if self.link.max_retries and self._refusals >= self.link.max_retries:
                    raise BrokerError(
                        f"RabbitMQ at {self.link.url.masked} refused {len(self.refused)} "
                        f"message(s) {self._refusals} times in a row (nack; a queue at its "
                        f"max-length with overflow reject-publish?); they are not sent")
                time.sleep(max(0.0, self._retry_at - time.monotonic()))

    def _fewer_unconfirmed(self) -> Callable[[], bool]:
        """True once a confirm came (or a message is to be sent again)."""
        before = len(self.unconfirmed)
        return lambda: len(self.unconfirmed) < before or bool(self.outbox)

    def _select(self, channel: BlockingChannel) -> None:
        """Put a new channel in confirm mode; what the last one left unconfirmed goes first."""
        selected: list[bool] = []
        impl = channel._impl  # pika's blocking channel can only wait for each confirm
        impl.confirm_delivery(ack_nack_callback=self._on_confirm,
                              callback=lambda _frame: selected.append(True))
        impl.add_on_return_callback(self._on_return)
        self._read(channel, lambda: bool(selected))
        again = list(self.unconfirmed.values())
        if again:
            logger.warning("enqueue: sending again %d message(s) RabbitMQ had not confirmed "
                           "when the connection was lost", len(again))
        for message in again:  # it may have arrived: tell the consumer it may be a copy
            message.properties.headers = {**(message.properties.headers or {}), RESENT: 1}
        self.outbox.extendleft(reversed(again))
        self.unconfirmed.clear()
        self._tag = 0
        self._generation = self.link.generation

    def _release_refused(self) -> None:
        """Refused messages whose backoff is over go back to the outbox."""
        if self.refused and time.monotonic() >= self._retry_at:
            self.outbox.extend(self.refused)
            self.refused.clear()

    def _send_outbox(self, channel: BlockingChannel) -> None:
        self._release_refused()
        while self.outbox:
            message = self.outbox[0]
            try:
                exchange = self.route(channel, message, self._redeclare)
            except RunnerError:  # its queue cannot be declared as configured: the caller is
                self.outbox.popleft()  # told now; sending it again at exit would fail too
                raise
            self._redeclare = False
            # counted before it is sent: its confirm can come while basic_publish still runs
            self._tag += 1
            self.unconfirmed[self._tag] = self.outbox.popleft()
            try:
                with self.link.corked():  # its three frames in one send
                    channel.basic_publish(exchange, message.queue, message.body,
                                          message.properties, mandatory=True)
            except OUTAGE_ERRORS:
                raise  # (the next connection sends it again with the rest unconfirmed)
            except BaseException:  # refused by pika before it was sent: not sent at all
                del self.unconfirmed[self._tag]
                self._tag -= 1
                self.outbox.appendleft(message)
                raise

    def _read(self, channel: BlockingChannel, done: Callable[[], bool]) -> None:
        """Process what RabbitMQ sent (confirms, returns) until ``done()``, or WAIT_SLICE."""
        connection = self.link.connection
        deadline = time.monotonic() + WAIT_SLICE
        timer = connection.call_later(WAIT_SLICE, lambda: None)  # wakes the poll
        try:
            # pika's public process_data_events() returns early only for its own events
            connection._flush_output(lambda: done() or time.monotonic() >= deadline)
        finally:
            connection.remove_timeout(timer)

    def _on_confirm(self, frame) -> None:
        method = frame.method
        tag = method.delivery_tag
        confirmed = []
        if method.multiple:
            while self.unconfirmed and next(iter(self.unconfirmed)) <= tag:
                confirmed.append(self.unconfirmed.popitem(last=False)[1])
        elif tag in self.unconfirmed:
            confirmed.append(self.unconfirmed.pop(tag))

        if not isinstance(method, pika.spec.Basic.Nack):
            self._refusals = 0
            return
        if not confirmed:  # (not ours: sent on an earlier channel)
            return
        self.refused.extend(confirmed)  # RabbitMQ could not take them (a full queue): later
        now = time.monotonic()
        if now < self._retry_at:
            return  # (more of this round: one backoff step and one warning per round)
        self._refusals += 1
        delay = Link.backoff(self._refusals)
        self._retry_at = now + delay
        logger.warning("enqueue: RabbitMQ at %s refused %d message(s) (nack; a queue at its "
                       "max-length with overflow reject-publish?); sending again in %.2fs",
                       self.link.url.masked, len(confirmed), delay)

    def _on_return(self, _channel, method, properties, body) -> None:
        """A message no queue took (its delay queue expired meanwhile): send it again, after
        declaring what it needs (its confirm comes anyway, as an ack)."""
        eta_ms = (properties.headers or {}).get("eta_ms")
        self._redeclare = True
        self.outbox.append(Outgoing(method.routing_key, body, properties,
                                    eta_ms / 1000 if eta_ms else None))
