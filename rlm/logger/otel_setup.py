"""Whether an RLM traces, and with which providers: ``RLM(..., tracing=...)``.

Tracing is off unless configured. It is on when

- ``tracing=True``, a ``TracerProvider``, or a ``Tracing(...)`` is passed to ``RLM``;
- or ``tracing`` is left at ``None`` and either ``RLM_OTEL`` is set (``1``, ``true``...)
  or the process already has a global tracer provider (an SDK one: someone called
  ``opentelemetry.trace.set_tracer_provider``).

``tracing=False`` turns it off whatever the environment says. When tracing is on and
no provider was given or configured globally, rlmx builds one per process: the SDK's,
exporting over OTLP/HTTP to where the standard ``OTEL_EXPORTER_OTLP_*`` variables say
(``http://localhost:4318`` by default), for spans and metrics alike
(``OTEL_METRICS_EXPORTER=none``: spans only).

Nothing here imports OpenTelemetry until tracing is on, and a process that never
imported ``opentelemetry.trace`` has no global provider to find: with tracing off an
``RLM`` costs one dictionary look-up and one environment read, and its event bus stays
without a subscriber (so the loop builds no event payloads).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rlm.base.errors import ConfigurationError
from rlm.base.events import EventBus
from rlm.logger.otel_conventions import capture_from_env

ENV_SWITCH = "RLM_OTEL"
_TRUE = {"1", "true", "yes", "on"}
INSTALL_HINT = "pip install 'rlmx[otel]'"


@dataclass(frozen=True)
class Tracing:
    """Tracing settings for ``RLM(tracing=Tracing(...))``.

    ``tracer_provider`` / ``meter_provider``: where spans and metrics go (``None``: the
    global ones if configured, else rlmx's OTLP/HTTP exporter). ``capture_content``:
    record prompts, replies, code and cell output on spans (``None``: the
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` variable decides; off by
    default, as the GenAI conventions ask)."""

    tracer_provider: Any = None
    meter_provider: Any = None
    capture_content: bool | None = None


def _env_on() -> bool:
    return os.environ.get(ENV_SWITCH, "").strip().lower() in _TRUE


def _installed() -> bool:
    try:
        return importlib.util.find_spec("opentelemetry.sdk") is not None
    except (ImportError, ValueError):
        return False


def global_provider_configured() -> bool:
    """True when the process has a real global tracer provider (not the API's proxy or
    no-op one). Only looks if ``opentelemetry.trace`` is already imported: nobody can
    have set a provider otherwise, and ``import rlm`` never imports it."""
    api = sys.modules.get("opentelemetry.trace")
    if api is None:
        return False
    provider = api.get_tracer_provider()
    return not isinstance(provider, api.ProxyTracerProvider | api.NoOpTracerProvider)


def resolve(tracing: Any) -> Tracing | None:
    """The settings ``tracing`` (an ``RLM`` argument) stands for, or None when off."""
    if tracing is False:
        return None
    if tracing is None:
        if global_provider_configured():
            return Tracing()
        if not _env_on():
            return None
        if not _installed():
            warnings.warn(
                f"{ENV_SWITCH} is set but OpenTelemetry is not installed ({INSTALL_HINT}); "
                "tracing stays off",
                stacklevel=3,
            )
            return None
        return Tracing()
    if tracing is True:
        settings = Tracing()
    elif isinstance(tracing, Tracing):
        settings = tracing
    elif callable(getattr(tracing, "get_tracer", None)):  # a TracerProvider
        settings = Tracing(tracer_provider=tracing)
    else:
        raise ConfigurationError(
            "tracing must be True, False, None, an OpenTelemetry TracerProvider or "
            f"rlm.logger.otel_setup.Tracing(...), got {type(tracing).__name__}"
        )
    if not _installed():
        raise ConfigurationError(f"tracing needs OpenTelemetry: {INSTALL_HINT}")
    return settings


_default_lock = threading.Lock()
_defaults: tuple[Any, Any] | None = None


def default_providers() -> tuple[Any, Any]:
    """The process's OTLP/HTTP tracer and meter providers, made on first use (not set
    as the global ones: rlmx does not change the process's configuration). The SDK
    flushes them at exit."""
    global _defaults
    with _default_lock:
        if _defaults is None:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter,
            )
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter,
            )
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            name = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "rlmx"}
            resource = Resource.create(name)
            tracer_provider = TracerProvider(resource=resource)
            tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            meter_provider: MeterProvider | None = None  # OTEL_METRICS_EXPORTER=none
            if os.environ.get("OTEL_METRICS_EXPORTER", "").strip().lower() != "none":
                reader = PeriodicExportingMetricReader(OTLPMetricExporter())
                meter_provider = MeterProvider([reader], resource=resource)
            _defaults = (tracer_provider, meter_provider)
        return _defaults


def attach_tracing(
    bus: EventBus,
    tracing: Any,
    *,
    backend: str,
    providers: dict[str, str] | None = None,
    environment: str | None = None,
) -> Callable[[], None] | None:
    """Subscribe an ``OtelSubscriber`` to ``bus`` if tracing is on; returns its
    unsubscribe function, or None (nothing subscribed) when tracing is off.
    ``ConfigurationError`` for a ``tracing`` value it cannot use."""
    settings = resolve(tracing)
    if settings is None:
        return None
    from rlm.logger.otel import OtelSubscriber

    tracer_provider, meter_provider = settings.tracer_provider, settings.meter_provider
    if tracer_provider is None and not global_provider_configured():
        tracer_provider, default_meter = default_providers()
        meter_provider = meter_provider if meter_provider is not None else default_meter
    capture = settings.capture_content
    subscriber = OtelSubscriber(
        tracer_provider,
        meter_provider,
        backend=backend,
        providers=providers,
        capture_content=capture_from_env() if capture is None else bool(capture),
        environment=environment,
    )
    return bus.subscribe(subscriber)
