"""Ingest's own MQTT client: MQTT 5 and 3.1.1, acknowledgements after commit (docs/ingest.md).

:func:`connect` returns a :class:`Connection`; messages come in batches from
:meth:`Connection.deliveries` as :data:`Delivery` tuples and are PUBACKed by
:meth:`Connection.ack`. The codec is in :mod:`ingest.mqtt.packets`.
"""

from ingest.mqtt.client import Connection, Delivery, connect

__all__ = ["Connection", "Delivery", "connect"]
