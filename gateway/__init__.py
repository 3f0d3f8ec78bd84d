"""The farm gateway: signs what a farm's sensors and packing lines record, and sends it.

The runtime (:mod:`gateway.runtime`, :mod:`gateway.outbox`) does what docs/protocol.md asks of
device firmware: sequence numbers, signatures, a persistent outbox, resends with jittered
backoff, receipts verified under the pinned log key, and the device's own key rotation
(:mod:`gateway.rotation`). ``agritrace gateway`` runs it for a real
farm (docs/gateway.md); the simulator (:mod:`firmware_sim`) runs the same runtime for
simulated farms.
"""

from gateway.outbox import Outbox, OutboxBound, OutboxItem, StoredReceipt
from gateway.provisioned import Sent, send_from_provisioning
from gateway.rotation import RotationResult, RotationState, resume_rotation, rotate_device_key
from gateway.runtime import (
    Device,
    Fleet,
    FleetStats,
    ResendPolicy,
    load_or_create_device_key,
    wall_clock_ms,
)

__all__ = [
    "Device",
    "Fleet",
    "FleetStats",
    "Outbox",
    "OutboxBound",
    "OutboxItem",
    "ResendPolicy",
    "RotationResult",
    "RotationState",
    "Sent",
    "StoredReceipt",
    "load_or_create_device_key",
    "resume_rotation",
    "rotate_device_key",
    "send_from_provisioning",
    "wall_clock_ms",
]
