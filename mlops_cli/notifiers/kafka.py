"""Kafka: each notification as one JSON event on a topic, through kafka-python's KafkaProducer.

The value is `Notification.as_event()` as UTF-8 JSON (title, text, severity, kind, fields, link,
event, time); the key is the alert's fingerprint when there is one, so every update of one alert
lands on the same partition, in order. The producer is made on first use and kept; after a
failure it is closed and made again on the next send. A broker that cannot be reached, a timeout
or a retriable broker error is a retryable DeliveryError; a message the broker refuses as such
(too large, an invalid record) is a permanent one; an authorization or a configuration error, or
any other broker refusal, refuses every message: `sink_down` (the relay keeps the alerts queued
and reports the sink down). The SASL password never appears in a message.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from . import DeliveryError, Notification

if TYPE_CHECKING:
    from ..settings import KafkaSettings, Settings

# kafka-python logs every failed connection attempt at ERROR/WARNING: our one-line error says it once.
logging.getLogger("kafka").addHandler(logging.NullHandler())


def event_bytes(note: Notification) -> tuple[bytes | None, bytes]:
    """The message's key and value."""
    fingerprint = note.event.get("fingerprint")
    key = str(fingerprint).encode() if fingerprint else None
    return key, json.dumps(note.as_event(), separators=(",", ":"), sort_keys=True).encode()


def producer_config(cfg: KafkaSettings) -> dict[str, Any]:
    timeout_ms = int(cfg.timeout_s * 1000)
    config: dict[str, Any] = {
        "bootstrap_servers": list(cfg.bootstrap_servers),
        "client_id": cfg.client_id,
        "acks": "all",
        "retries": 0,  # the caller (notify, the relay's queue) retries with backoff
        "enable_idempotence": False,  # with retries 0 it adds nothing but a round trip
        "bootstrap_timeout_ms": timeout_ms,  # the first connection, when the producer is made
        "max_block_ms": timeout_ms,  # waiting for metadata when the brokers are unreachable
        "request_timeout_ms": timeout_ms,
        "delivery_timeout_ms": timeout_ms + 1000,  # at least request_timeout_ms + linger_ms
        "reconnect_backoff_max_ms": 1000,
        "security_protocol": cfg.security_protocol,
    }
    if cfg.sasl_mechanism:
        config.update(
            sasl_mechanism=cfg.sasl_mechanism,
            sasl_plain_username=cfg.sasl_username,
            sasl_plain_password=cfg.sasl_password.get_secret_value() if cfg.sasl_password else None,
        )
    if cfg.ssl_cafile is not None:
        config["ssl_cafile"] = str(cfg.ssl_cafile)
    return config


def _message_errors() -> tuple[type, ...]:
    """Broker refusals of one message (it will never be accepted as it is), not of the sink."""
    from kafka import errors

    return tuple(
        getattr(errors, n)
        for n in ("MessageSizeTooLargeError", "RecordListTooLargeError", "InvalidRecordError", "CorruptRecordError")
        if hasattr(errors, n)
    )


class KafkaNotifier:
    name = "kafka"

    def __init__(self, settings: Settings):
        cfg = settings.notify.kafka
        if not cfg.bootstrap_servers:
            raise ConfigError(
                "the kafka notifier has no brokers",
                hint="set notify.kafka.bootstrap_servers (or MLOPS_NOTIFY__KAFKA__BOOTSTRAP_SERVERS)",
            )
        if cfg.security_protocol.startswith("SASL") and not (cfg.sasl_mechanism and cfg.sasl_username):
            raise ConfigError("notify.kafka: SASL needs sasl_mechanism and sasl_username (and sasl_password)")
        self.cfg = cfg
        self.topic = cfg.topic
        self._producer: Any = None
        self._lock = threading.Lock()

    def _connect(self) -> Any:
        from kafka import KafkaProducer
        from kafka.errors import KafkaConfigurationError, KafkaError

        try:
            return KafkaProducer(**producer_config(self.cfg))
        except KafkaConfigurationError as exc:
            raise DeliveryError(f"kafka: bad configuration: {exc}", retryable=False, sink_down=True) from None
        except KafkaError as exc:  # NoBrokersAvailable and friends
            raise DeliveryError(
                f"kafka brokers {','.join(self.cfg.bootstrap_servers)} unreachable: {type(exc).__name__}",
                retryable=True,
            ) from None
        except (OSError, ValueError) as exc:
            raise DeliveryError(
                f"kafka brokers {','.join(self.cfg.bootstrap_servers)} unreachable: {exc}", retryable=True
            ) from None

    def send(self, note: Notification) -> None:
        from kafka.errors import AuthorizationError, KafkaError

        MESSAGE_ERRORS = _message_errors()
        key, value = event_bytes(note)
        with self._lock:
            if self._producer is None:
                self._producer = self._connect()
            try:
                future = self._producer.send(
                    self.topic,
                    value=value,
                    key=key,
                    headers=[("kind", note.kind.encode()), ("severity", note.severity.encode())],
                )
                future.get(timeout=self.cfg.timeout_s * 2 + 1)
            except AuthorizationError as exc:
                self._reset()
                raise DeliveryError(
                    f"kafka refused topic {self.topic}: {type(exc).__name__}", retryable=False, sink_down=True
                ) from None
            except KafkaError as exc:
                self._reset()
                retryable = (
                    bool(getattr(exc, "retriable", False))
                    or "Timeout" in type(exc).__name__
                    or "Connection" in type(exc).__name__
                )
                this_message = isinstance(exc, MESSAGE_ERRORS)
                raise DeliveryError(
                    f"kafka publish to {self.topic} failed: {type(exc).__name__} {exc}".rstrip(),
                    retryable=retryable,
                    sink_down=not retryable and not this_message,
                ) from None

    def _reset(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=0)
            except Exception:  # closing a broken producer must not hide the delivery error
                pass

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=self.cfg.timeout_s)
                self._producer = None
