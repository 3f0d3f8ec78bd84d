"""Typed device message payloads: readings and events (design.md, "Device protocol").

The payload of a device's COSE_Sign1 is a deterministic CBOR map with text keys. Common fields:

===========  ===========================================================================
``v``        1 (the format version)
``device``   the device id, ``[a-z0-9-]{3,64}``
``seq``      integer 1 … 2**63-1, strictly increasing per device, never reused
``time``     integer milliseconds since the Unix epoch (1970-01-01T00:00:00Z, UTC, leap
             seconds not counted), 0 … 2**53, by the device clock
``products`` array of 1-64 distinct product keys in canonical GS1 Digital Link path form
``type``     ``"reading"`` or ``"event"``
===========  ===========================================================================

A reading adds ``sensors``: 1-64 maps ``{type, value, uom}`` (EPCIS 2.0 sensor measurement type,
an integer or finite float, a UN/CEFACT Recommendation 20 unit code). An event adds ``step`` (a CBV
2.0 business step) and optionally ``parents``, ``location`` and ``data``. A key rotation
(``"type": "key_rotation"``) has no ``products``; it carries ``new_key`` and ``pop``, the new
key's proof of possession (:class:`KeyRotation`). Each field rule that
breaks raises :class:`~tracecore.errors.MalformedMessage` whose detail names the field, the rule
and the value found. docs/protocol.md is the prose version of this module.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, TypeAlias, TypeGuard

import nacl.exceptions
import nacl.signing
from nacl.bindings import crypto_sign_ed25519_pk_to_curve25519
from nacl.exceptions import CryptoError

from tracecore.cbor import decode_strict, encode_deterministic, kind_name
from tracecore.errors import BadRotation, IdentifierError, MalformedMessage
from tracecore.identifiers import ProductKey, parse_device_id
from tracecore.keys import device_kid

__all__ = [
    "BUSINESS_STEPS",
    "FORMAT_VERSION",
    "MAX_DATA_DEPTH",
    "MAX_LOCATION_LENGTH",
    "MAX_PARENTS",
    "MAX_PRODUCTS",
    "MAX_SENSORS",
    "MAX_SEQ",
    "MAX_TIME_MS",
    "ROTATION_POP_CONTEXT",
    "SENSOR_TYPES",
    "AnyMessage",
    "DataValue",
    "DeviceMessage",
    "Event",
    "KeyRotation",
    "Reading",
    "Sensor",
    "decode_payload",
    "encode_payload",
    "from_cbor_map",
    "rotation_pop_input",
    "sign_rotation_pop",
    "try_from_cbor_map",
    "verify_rotation_pop",
]

FORMAT_VERSION: Final = 1
MAX_SEQ: Final = 2**63 - 1
MAX_TIME_MS: Final = 2**53  # exactly representable in a double and in JavaScript
MAX_PRODUCTS: Final = 64
MAX_PARENTS: Final = 64
MAX_SENSORS: Final = 64
MAX_LOCATION_LENGTH: Final = 200
MAX_DATA_DEPTH: Final = 4  # the ``data`` map itself is depth 1
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_UOM_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
# Unicode general category Cc: C0 controls, DEL and C1 controls (docs/protocol.md, location).
_CONTROL_CHARACTER: Final = re.compile("[\x00-\x1f\x7f-\x9f]")

# EPCIS 2.0 sensor measurement types: the enum of ``measurementType`` in the EPCIS 2.0 JSON
# Schema (gs1/EPCIS, EPCIS-JSON-Schema.json, definitions/measurementType; the same names are the
# gs1:MeasurementType values of the GS1 Web Vocabulary, e.g. "Temperature" = gs1:Temperature).
# Names are case-sensitive. Note: there is no "pH" type in EPCIS 2.0.
SENSOR_TYPES: Final = frozenset(
    {
        "AbsoluteHumidity", "AbsorbedDose", "AbsorbedDoseRate", "Acceleration", "Altitude",
        "AmountOfSubstance", "AmountOfSubstancePerUnitVolume", "Angle", "AngularAcceleration",
        "AngularMomentum", "AngularVelocity", "Area", "Capacitance", "Conductance",
        "Conductivity", "Count", "Density", "Dimensionless", "DoseEquivalent",
        "DoseEquivalentRate", "DynamicViscosity", "ElectricCharge", "ElectricCurrent",
        "ElectricCurrentDensity", "ElectricFieldStrength", "Energy", "Exposure", "Force",
        "Frequency", "Illuminance", "Inductance", "Irradiance", "KinematicViscosity", "Length",
        "LinearMomentum", "Luminance", "LuminousFlux", "LuminousIntensity", "MagneticFlux",
        "MagneticFluxDensity", "MagneticVectorPotential", "Mass", "MassConcentration",
        "MassFlowRate", "MassPerAreaTime", "MemoryCapacity", "MolalityOfSolute", "MolarEnergy",
        "MolarMass", "MolarVolume", "Power", "Pressure", "RadiantFlux", "RadiantIntensity",
        "Radioactivity", "RelativeHumidity", "Resistance", "Resistivity", "SolidAngle",
        "SpecificVolume", "Speed", "SurfaceDensity", "SurfaceTension", "Temperature", "Time",
        "Torque", "Voltage", "Volume", "VolumeFlowRate", "VolumeFraction", "VolumetricFlux",
        "Wavenumber",
    }
)  # fmt: skip

# CBV 2.0 business steps (GS1 Core Business Vocabulary 2.0 §7.2; the bare-name enum of
# ``bizStep`` in the EPCIS 2.0 JSON Schema). Bare names only, no URN/URI forms.
BUSINESS_STEPS: Final = frozenset(
    {
        "accepting", "arriving", "assembling", "collecting", "commissioning", "consigning",
        "creating_class_instance", "cycle_counting", "decommissioning", "departing",
        "destroying", "disassembling", "dispensing", "encoding", "entering_exiting", "holding",
        "inspecting", "installing", "killing", "loading", "other", "packing", "picking",
        "receiving", "removing", "repackaging", "repairing", "replacing", "reserving",
        "retail_selling", "sampling", "sensor_reporting", "shipping", "staging_outbound",
        "stock_taking", "stocking", "storing", "transporting", "unloading", "unpacking",
        "void_shipping",
    }
)  # fmt: skip

_COMMON_FIELDS: Final = frozenset({"v", "device", "seq", "time", "products", "type"})
_READING_FIELDS: Final = frozenset({*_COMMON_FIELDS, "sensors"})
_EVENT_FIELDS: Final = frozenset({*_COMMON_FIELDS, "step", "parents", "location", "data"})
_ALL_FIELDS: Final = _READING_FIELDS | _EVENT_FIELDS
_SENSOR_FIELDS: Final = frozenset({"type", "value", "uom"})
_ROTATION_FIELDS: Final = frozenset({"v", "device", "seq", "time", "type", "new_key", "pop"})
_MESSAGE_TYPES: Final = ("reading", "event")
#: Lengths of an Ed25519 public key and signature (RFC 8032 §5.1.5, §5.1.6).
_PUBLIC_KEY_LENGTH: Final = 32
_POP_LENGTH: Final = 64
#: Domain separation of the proof of possession (docs/protocol.md §5, "Key rotations"): the
#: bytes the new key signs can never be a Sig_structure, a receipt or another agritrace text.
ROTATION_POP_CONTEXT: Final = "agritrace key rotation v1"

DataValue: TypeAlias = (
    "int | float | str | bool | tuple[DataValue, ...] | Mapping[str, DataValue] | None"
)
"""A value inside an event's ``data`` map (stored immutably: arrays as tuples, maps read-only)."""


def _fail(detail: str) -> MalformedMessage:
    """Return the error for a broken field rule (the caller raises it)."""
    return MalformedMessage(detail)


def _show(value: object) -> str:
    """Render a found value for an error detail, bounded in length."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_int(value: object) -> bool:
    # type() first: the decoder only makes exact ints; bool is an int subclass to refuse.
    return type(value) is int or (isinstance(value, int) and not isinstance(value, bool))


def _check_int(name: str, value: object, low: int, high: int, note: str = "") -> int:
    """Return ``value`` if it is an int in ``low..high``; else raise naming the rule."""
    if not _is_int(value) or not low <= value <= high:  # type: ignore[operator]
        raise _fail(f"{name} must be an integer {_range(low, high)}{note}, got {_show(value)}")
    return value  # type: ignore[return-value]


def _range(low: int, high: int) -> str:
    return f">= {low}" if high >= _INT64_MAX else f"in {low}..{high}"


def _check_text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise _fail(f"{name} must be text, got {kind_name(value)} {_show(value)}")
    return value


def _check_device(value: object) -> str:
    text = _check_text("device", value)
    try:
        return parse_device_id(text)
    except IdentifierError as exc:
        raise _fail(f"device: {exc}") from exc


def _product_keys(name: str, keys: object, low: int, high: int) -> tuple[ProductKey, ...]:
    """Check a tuple of ProductKey: count in ``low..high``, no duplicates."""
    if not isinstance(keys, tuple) or not all(isinstance(k, ProductKey) for k in keys):
        raise _fail(f"{name} must be a tuple of ProductKey, got {_show(keys)}")
    if not low <= len(keys) <= high:
        raise _fail(f"{name} must hold {low} to {high} product keys, got {len(keys)}")
    seen: set[str] = set()
    for index, key in enumerate(keys):
        if key.path in seen:
            raise _fail(f"{name}[{index}]: duplicate product key {key.path!r}")
        seen.add(key.path)
    return keys


def _parse_product_keys(name: str, value: object) -> tuple[ProductKey, ...]:
    """Parse a CBOR array of canonical product key texts (counts are checked later)."""
    if not isinstance(value, list | tuple):
        raise _fail(f"{name} must be an array of product keys, got {kind_name(value)}")
    if len(value) > MAX_PRODUCTS:  # cheap bound before parsing each key
        raise _fail(f"{name} must hold at most {MAX_PRODUCTS} product keys, got {len(value)}")
    keys = []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise _fail(f"{name}[{index}] must be text, got {kind_name(item)} {_show(item)}")
        try:
            keys.append(ProductKey.parse_canonical(item))
        except IdentifierError as exc:
            raise _fail(f"{name}[{index}]: {exc}") from exc
    return tuple(keys)


def _plain_scalar(value: object) -> TypeGuard[int | float | str | bool | None]:
    """Whether :func:`_freeze_data` would return ``value`` itself (checked without its path).

    Exact types only (what the CBOR decoder makes); anything else takes :func:`_freeze_data`.
    """
    kind = type(value)
    if kind is int:
        return _INT64_MIN <= value <= _INT64_MAX  # type: ignore[operator]
    if kind is float:
        return math.isfinite(value)  # type: ignore[arg-type]
    return kind is str or kind is bool or value is None


def _freeze_data(value: object, path: str, depth: int) -> DataValue:
    """Check one ``data`` value and return it in immutable form."""
    if value is None or isinstance(value, bool | str):
        return value
    if _is_int(value):
        return _check_int(path, value, _INT64_MIN, _INT64_MAX)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _fail(f"{path} must be a finite number, got {value!r}")
        return value
    if isinstance(value, list | tuple):
        if depth + 1 > MAX_DATA_DEPTH:
            raise _fail(f"{path}: data nests deeper than {MAX_DATA_DEPTH} levels")
        return tuple(
            v if _plain_scalar(v) else _freeze_data(v, f"{path}[{i}]", depth + 1)
            for i, v in enumerate(value)
        )
    if isinstance(value, Mapping):
        if depth + 1 > MAX_DATA_DEPTH:
            raise _fail(f"{path}: data nests deeper than {MAX_DATA_DEPTH} levels")
        return _freeze_map(value, path, depth + 1)
    raise _fail(
        f"{path} must be an integer, float, text, bool, null, array or map, got {kind_name(value)}"
    )


def _freeze_map(value: Mapping[Any, object], path: str, depth: int) -> Mapping[str, DataValue]:
    frozen: dict[str, DataValue] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise _fail(f"{path} keys must be text, got {kind_name(key)} {_show(key)}")
        frozen[key] = item if _plain_scalar(item) else _freeze_data(item, f"{path}.{key}", depth)
    return MappingProxyType(frozen)


def _thaw(value: object) -> object:
    """Return a ``data`` value as plain lists and dicts for encoding."""
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    return value


@dataclass(frozen=True, slots=True)
class Sensor:
    """One measurement of a reading: an EPCIS 2.0 ``sensorReport`` reduced to type/value/uom.

    ``type`` is an EPCIS 2.0 measurement type (:data:`SENSOR_TYPES`), ``value`` an integer in
    the signed 64-bit range or a finite float, ``uom`` a UN/CEFACT Recommendation 20 unit code
    of 2-3 characters ``[A-Z0-9]`` (``CEL`` °C, ``P1`` %, ``KGM`` kg, ``MTR`` m, ``LUX``, ``VLT``
    V, ``KPA`` kPa, ``C62`` one/count, …). Whether a unit suits a type is not checked here.
    """

    type: str
    value: int | float
    uom: str

    def __post_init__(self) -> None:
        """Check the field rules; raise :class:`MalformedMessage` on the first broken one."""
        if not isinstance(self.type, str) or self.type not in SENSOR_TYPES:
            raise _fail(
                f"sensor type must be an EPCIS 2.0 measurement type such as 'Temperature' or "
                f"'RelativeHumidity', got {_show(self.type)}"
            )
        if _is_int(self.value):
            _check_int("sensor value", self.value, _INT64_MIN, _INT64_MAX)
        elif isinstance(self.value, float):
            if not math.isfinite(self.value):
                raise _fail(f"sensor value must be a finite number, got {self.value!r}")
        else:
            raise _fail(
                f"sensor value must be an integer or a float, got {kind_name(self.value)} "
                f"{_show(self.value)}"
            )
        if (
            not isinstance(self.uom, str)
            or not 2 <= len(self.uom) <= 3
            or not set(self.uom) <= _UOM_CHARS
        ):
            raise _fail(
                "sensor uom must be a UN/CEFACT Rec 20 code of 2-3 characters A-Z/0-9 "
                f"(e.g. 'CEL'), got {_show(self.uom)}"
            )

    def to_cbor_map(self) -> dict[str, object]:
        """Return the sensor as the CBOR map ``{type, value, uom}``."""
        return {"type": self.type, "value": self.value, "uom": self.uom}

    @classmethod
    def from_cbor_map(cls, value: object, where: str = "sensor") -> Sensor:
        """Build a sensor from a decoded CBOR map; raise :class:`MalformedMessage` if invalid."""
        if not isinstance(value, dict):
            raise _fail(f"{where} must be a map {{type, value, uom}}, got {kind_name(value)}")
        _check_keys(where, value, _SENSOR_FIELDS, _SENSOR_FIELDS)
        try:
            return cls(type=value["type"], value=value["value"], uom=value["uom"])
        except MalformedMessage as exc:
            raise _fail(f"{where}: {exc.detail}") from exc


def _check_common(device: str, seq: int, time: int, products: tuple[ProductKey, ...]) -> None:
    _check_device(device)
    _check_int("seq", seq, 1, MAX_SEQ)
    _check_int("time", time, 0, MAX_TIME_MS, " (milliseconds since the Unix epoch)")
    _product_keys("products", products, 1, MAX_PRODUCTS)


def _common_map(
    kind: str, device: str, seq: int, time: int, products: tuple[ProductKey, ...]
) -> dict[str, object]:
    return {
        "v": FORMAT_VERSION,
        "device": device,
        "seq": seq,
        "time": time,
        "products": [key.path for key in products],
        "type": kind,
    }


@dataclass(frozen=True, slots=True)
class Reading:
    """Sensor measurements about 1-64 products, taken at ``time`` by ``device``."""

    device: str
    seq: int
    time: int
    products: tuple[ProductKey, ...]
    sensors: tuple[Sensor, ...]

    def __post_init__(self) -> None:
        """Check the field rules; raise :class:`MalformedMessage` on the first broken one."""
        _check_common(self.device, self.seq, self.time, self.products)
        if not isinstance(self.sensors, tuple) or not all(
            isinstance(s, Sensor) for s in self.sensors
        ):
            raise _fail(f"sensors must be a tuple of Sensor, got {_show(self.sensors)}")
        if not 1 <= len(self.sensors) <= MAX_SENSORS:
            raise _fail(f"sensors must hold 1 to {MAX_SENSORS} entries, got {len(self.sensors)}")

    def to_cbor_map(self) -> dict[str, object]:
        """Return the payload map (design.md, "Device protocol"), ready to encode."""
        result = _common_map("reading", self.device, self.seq, self.time, self.products)
        result["sensors"] = [sensor.to_cbor_map() for sensor in self.sensors]
        return result


@dataclass(frozen=True, slots=True)
class Event:
    """A business step (CBV 2.0) that happened to 1-64 products.

    ``parents`` are the products these came from (aggregation, e.g. cartons packed from an egg
    lot; transformation, e.g. cuts from a carcass); they must not repeat ``products``.
    ``location`` says where it happened: preferably a GLN-based identifier (the GS1 Digital Link
    path ``414/{gln13}`` of a physical location, optionally ``/254/{extension}``), otherwise a
    free identifier meaningful to the party (a barn, a site code), 1-200 characters without
    control characters. ``data`` is free structured detail: a map with text keys, nested at most
    4 levels, values int/float/text/bool/null/arrays/maps.
    """

    device: str
    seq: int
    time: int
    products: tuple[ProductKey, ...]
    step: str
    parents: tuple[ProductKey, ...] = ()
    location: str | None = None
    data: Mapping[str, object] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        """Check the field rules and freeze ``data``; raise :class:`MalformedMessage`."""
        _check_common(self.device, self.seq, self.time, self.products)
        if not isinstance(self.step, str) or self.step not in BUSINESS_STEPS:
            raise _fail(
                "step must be a CBV 2.0 business step such as 'commissioning', 'packing' or "
                f"'shipping', got {_show(self.step)}"
            )
        _product_keys("parents", self.parents, 0, MAX_PARENTS)
        own = {key.path for key in self.products}
        for index, parent in enumerate(self.parents):
            if parent.path in own:
                raise _fail(f"parents[{index}] {parent.path!r} is also one of the products")
        if self.location is not None:
            location = _check_text("location", self.location)
            if not 1 <= len(location) <= MAX_LOCATION_LENGTH:
                raise _fail(
                    f"location must be 1 to {MAX_LOCATION_LENGTH} characters, got {len(location)}"
                )
            if _CONTROL_CHARACTER.search(location) is not None:
                raise _fail("location must not contain control characters")
        if self.data is not None:
            if not isinstance(self.data, Mapping):
                raise _fail(f"data must be a map, got {kind_name(self.data)}")
            object.__setattr__(self, "data", _freeze_map(self.data, "data", 1))

    def to_cbor_map(self) -> dict[str, object]:
        """Return the payload map (design.md, "Device protocol"), ready to encode.

        Optional fields are omitted when empty/absent: no ``parents`` key for ``()``, no
        ``location`` or ``data`` key for ``None``.
        """
        result = _common_map("event", self.device, self.seq, self.time, self.products)
        result["step"] = self.step
        if self.parents:
            result["parents"] = [key.path for key in self.parents]
        if self.location is not None:
            result["location"] = self.location
        if self.data is not None:
            result["data"] = _thaw(self.data)
        return result


def rotation_pop_input(device: str, seq: int, time: int, old_kid: bytes, new_key: bytes) -> bytes:
    """Return the bytes the new key signs as its proof of possession in a key rotation.

    The deterministic CBOR array (RFC 8949 §4.2.1)
    ``["agritrace key rotation v1", device, seq, time, old_kid, new_key]``: the context text
    separates it from every other thing an agritrace key signs (a COSE Sig_structure starts with
    ``"Signature1"``, docs/protocol.md §3), and the other items bind the proof to this device,
    this message (seq and time), the key being replaced and the key being introduced, so a proof
    cannot be replayed onto another rotation (docs/protocol.md §5, "Key rotations").
    """
    return encode_deterministic([ROTATION_POP_CONTEXT, device, seq, time, old_kid, new_key])


def sign_rotation_pop(
    signing_key: nacl.signing.SigningKey, device: str, seq: int, time: int, old_kid: bytes
) -> bytes:
    """Return the 64-byte proof of possession of ``signing_key`` (the NEW key) for a rotation.

    Ed25519 (RFC 8032 §5.1.6) over :func:`rotation_pop_input`; deterministic.
    """
    new_key = bytes(signing_key.verify_key)
    return signing_key.sign(rotation_pop_input(device, seq, time, old_kid, new_key)).signature


def verify_rotation_pop(rotation: KeyRotation, old_kid: bytes) -> None:
    """Check the proof of possession of a parsed rotation whose envelope carries ``old_kid``.

    The proof must be the new key's Ed25519 signature (RFC 8032 §5.1.7) over
    :func:`rotation_pop_input` of the rotation's own fields and ``old_kid`` (the kid of the
    COSE envelope, i.e. of the key that signs the rotation). Raises
    :class:`~tracecore.errors.BadRotation` if it does not verify, or if ``new_key`` is not a
    usable Ed25519 public key (not a point of the prime-order subgroup: such a "key" could be
    made to accept forged signatures).
    """
    new_key = rotation.new_key
    try:
        crypto_sign_ed25519_pk_to_curve25519(new_key)  # libsodium's point and subgroup check
    except CryptoError as exc:
        raise BadRotation(
            f"new_key {new_key.hex()} is not a valid Ed25519 public key (not a curve point of "
            "the prime-order subgroup)"
        ) from exc
    signed = rotation_pop_input(rotation.device, rotation.seq, rotation.time, old_kid, new_key)
    try:
        nacl.signing.VerifyKey(new_key).verify(signed, rotation.pop)
    except (nacl.exceptions.BadSignatureError, CryptoError, ValueError) as exc:
        raise BadRotation(
            f"pop does not verify: it is not the signature of new_key {device_kid(new_key).hex()} "
            f"over this rotation (device {rotation.device!r}, seq {rotation.seq}, time "
            f"{rotation.time}, old kid {old_kid.hex()})"
        ) from exc


@dataclass(frozen=True, slots=True)
class KeyRotation:
    """A device replaces its key: signed by the OLD key, it names the NEW one (``new_key``).

    ``pop`` is the new key's proof of possession (:func:`sign_rotation_pop`); parsing checks its
    size only, :func:`verify_rotation_pop` checks it. A rotation names no product: ``products``
    is always empty (docs/protocol.md §5, "Key rotations").
    """

    device: str
    seq: int
    time: int
    new_key: bytes
    pop: bytes

    def __post_init__(self) -> None:
        """Check the field rules; raise :class:`MalformedMessage` on the first broken one."""
        _check_device(self.device)
        _check_int("seq", self.seq, 1, MAX_SEQ)
        _check_int("time", self.time, 0, MAX_TIME_MS, " (milliseconds since the Unix epoch)")
        _check_bstr("new_key", self.new_key, _PUBLIC_KEY_LENGTH, " (an Ed25519 public key)")
        _check_bstr("pop", self.pop, _POP_LENGTH, " (an Ed25519 signature)")

    @property
    def products(self) -> tuple[ProductKey, ...]:
        """A rotation names no product (so it joins no product chain)."""
        return ()

    def to_cbor_map(self) -> dict[str, object]:
        """Return the payload map (docs/protocol.md §5), ready to encode."""
        return {
            "v": FORMAT_VERSION,
            "device": self.device,
            "seq": self.seq,
            "time": self.time,
            "type": "key_rotation",
            "new_key": self.new_key,
            "pop": self.pop,
        }


def _check_bstr(name: str, value: object, size: int, note: str) -> bytes:
    if not isinstance(value, bytes):
        raise _fail(f"{name} must be a byte string{note}, got {kind_name(value)} {_show(value)}")
    if len(value) != size:
        raise _fail(f"{name} must be {size} bytes{note}, got {len(value)}")
    return value


def _rotation_from_map(value: dict[Any, Any]) -> KeyRotation:
    """Build a rotation from a payload map whose ``type`` is ``"key_rotation"``."""
    _check_keys("key_rotation payload", value, _ROTATION_FIELDS, _ROTATION_FIELDS)
    version = value["v"]
    if not _is_int(version) or version != FORMAT_VERSION:
        raise _fail(f"v must be {FORMAT_VERSION}, got {_show(version)}")
    return KeyRotation(
        device=value["device"],
        seq=value["seq"],
        time=value["time"],
        new_key=value["new_key"],
        pop=value["pop"],
    )


DeviceMessage: TypeAlias = Reading | Event
"""A typed device message payload about products: a reading or an event."""

AnyMessage: TypeAlias = Reading | Event | KeyRotation
"""Any typed device message payload: about products, or a key rotation."""


def _check_keys(
    where: str,
    value: dict[Any, Any],
    allowed: frozenset[str],
    required: frozenset[str],
) -> None:
    keys = value.keys()
    if keys <= allowed and required <= keys:
        return  # the common case: every key is one of the allowed texts, none is missing
    for key in value:
        if not isinstance(key, str):
            raise _fail(f"{where} keys must be text, got {kind_name(key)} key {_show(key)}")
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        raise _fail(
            f"{where} has unknown field {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})"
        )
    missing = [name for name in sorted(required) if name not in value]
    if missing:
        raise _fail(f"{where} lacks required field {missing[0]!r}")


def from_cbor_map(value: object) -> AnyMessage:
    """Build a typed message from a decoded payload map, checking every field rule.

    design.md, "Device protocol"; docs/protocol.md lists the rules. Raises
    :class:`~tracecore.errors.MalformedMessage` naming the first broken rule, e.g.
    ``seq must be an integer >= 1, got 0``.
    """
    if not isinstance(value, dict):
        raise _fail(f"payload must be a map, got {kind_name(value)}")
    if value.get("type") == "key_rotation":  # its own field set: no products (§5)
        return _rotation_from_map(value)
    _check_keys("payload", value, _ALL_FIELDS, _COMMON_FIELDS)
    version = value["v"]
    if not _is_int(version) or version != FORMAT_VERSION:
        raise _fail(f"v must be {FORMAT_VERSION}, got {_show(version)}")
    kind = value["type"]
    if kind not in _MESSAGE_TYPES:
        raise _fail(f"type must be 'reading' or 'event', got {_show(kind)}")
    device = _check_device(value["device"])
    seq = _check_int("seq", value["seq"], 1, MAX_SEQ)
    time = _check_int("time", value["time"], 0, MAX_TIME_MS, " (milliseconds since the Unix epoch)")
    products = _parse_product_keys("products", value["products"])
    if kind == "reading":
        return _reading_from_map(value, device, seq, time, products)
    return _event_from_map(value, device, seq, time, products)


def _reading_from_map(
    value: dict[str, Any], device: str, seq: int, time: int, products: tuple[ProductKey, ...]
) -> Reading:
    for name in sorted(_EVENT_FIELDS - _READING_FIELDS):
        if name in value:
            raise _fail(f"a reading must not have {name!r}")
    if "sensors" not in value:
        raise _fail("a reading must have 'sensors'")
    sensors = value["sensors"]
    if not isinstance(sensors, list | tuple):
        raise _fail(f"sensors must be an array, got {kind_name(sensors)}")
    if not 1 <= len(sensors) <= MAX_SENSORS:
        raise _fail(f"sensors must hold 1 to {MAX_SENSORS} entries, got {len(sensors)}")
    return Reading(
        device=device,
        seq=seq,
        time=time,
        products=products,
        sensors=tuple(
            Sensor.from_cbor_map(item, f"sensors[{i}]") for i, item in enumerate(sensors)
        ),
    )


def _event_from_map(
    value: dict[str, Any], device: str, seq: int, time: int, products: tuple[ProductKey, ...]
) -> Event:
    if "sensors" in value:
        raise _fail("an event must not have 'sensors'")
    if "step" not in value:
        raise _fail("an event must have 'step'")
    parents: tuple[ProductKey, ...] = ()
    if "parents" in value:
        parents = _parse_product_keys("parents", value["parents"])
    location = value.get("location")
    if "location" in value:
        location = _check_text("location", location)
    data = value.get("data")
    if "data" in value and not isinstance(data, dict):
        raise _fail(f"data must be a map, got {kind_name(data)}")
    # step, location and data are checked in Event.__post_init__.
    return Event(
        device=device,
        seq=seq,
        time=time,
        products=products,
        step=value["step"],
        parents=parents,
        location=location,
        data=data,
    )


# --- the fast path: the same rules, checked once, for the common well-formed shapes ----------
#
# from_cbor_map checks a field, then the dataclass constructor checks it again, and every check
# builds its error context (paths, field names) before it knows whether it fails. The functions
# below check the very same rules once, on the exact types the CBOR decoder makes, and build the
# objects without the constructors' second pass. They only ever accept: whatever they are not
# sure of returns None, and the caller asks from_cbor_map, which gives the verdict and the
# detail. tests/tracecore/test_parse_fast_path.py checks that whenever they return a message,
# from_cbor_map returns an equal one with the same types, on mutated payloads.

_EVENT_REQUIRED: Final = _COMMON_FIELDS | {"step"}
_UOM_PATTERN: Final = re.compile("[A-Z0-9]{2,3}")  # _UOM_CHARS, 2-3 of them
_NOT_SURE: Final = None


def _built(cls: type[Any], **values: object) -> Any:
    """An instance of the frozen dataclass ``cls`` with ``values``, its checks already done."""
    instance = object.__new__(cls)
    for name, value in values.items():
        object.__setattr__(instance, name, value)
    return instance


def _fast_keys(value: object, low: int, high: int) -> tuple[ProductKey, ...] | None:
    """A list of ``low``-``high`` distinct canonical product keys, or None."""
    if type(value) is not list or not low <= len(value) <= high:
        return _NOT_SURE
    keys = []
    for item in value:
        if type(item) is not str:
            return _NOT_SURE
        try:
            keys.append(ProductKey.parse_canonical(item))
        except IdentifierError:
            return _NOT_SURE
    if len({key.path for key in keys}) != len(keys):
        return _NOT_SURE
    return tuple(keys)


def _fast_common(value: dict[str, Any]) -> tuple[str, int, int, tuple[ProductKey, ...]] | None:
    """v, device, seq, time and products of a reading or event payload, or None."""
    version, device, seq, time = value["v"], value["device"], value["seq"], value["time"]
    if (
        type(version) is not int
        or version != FORMAT_VERSION
        or type(device) is not str
        or type(seq) is not int
        or not 1 <= seq <= MAX_SEQ
        or type(time) is not int
        or not 0 <= time <= MAX_TIME_MS
    ):
        return _NOT_SURE
    try:
        parse_device_id(device)
    except IdentifierError:
        return _NOT_SURE
    products = _fast_keys(value["products"], 1, MAX_PRODUCTS)
    return _NOT_SURE if products is None else (device, seq, time, products)


def _fast_sensor(value: object) -> Sensor | None:
    """A sensor map ``{type, value, uom}`` that keeps every rule of :class:`Sensor`, or None."""
    if type(value) is not dict or value.keys() != _SENSOR_FIELDS:
        return _NOT_SURE
    kind, number, uom = value["type"], value["value"], value["uom"]
    if type(kind) is not str or kind not in SENSOR_TYPES:
        return _NOT_SURE
    if type(number) is int:
        if not _INT64_MIN <= number <= _INT64_MAX:
            return _NOT_SURE
    elif type(number) is not float or not math.isfinite(number):
        return _NOT_SURE
    if type(uom) is not str or _UOM_PATTERN.fullmatch(uom) is None:
        return _NOT_SURE
    built: Sensor = _built(Sensor, type=kind, value=number, uom=uom)
    return built


def _fast_reading(value: dict[str, Any]) -> Reading | None:
    common = _fast_common(value)
    sensors = value["sensors"]
    if common is None or type(sensors) is not list or not 1 <= len(sensors) <= MAX_SENSORS:
        return _NOT_SURE
    built = []
    for item in sensors:
        sensor = _fast_sensor(item)
        if sensor is None:
            return _NOT_SURE
        built.append(sensor)
    device, seq, time, products = common
    reading: Reading = _built(
        Reading, device=device, seq=seq, time=time, products=products, sensors=tuple(built)
    )
    return reading


def _fast_event(value: dict[str, Any]) -> Event | None:
    common = _fast_common(value)
    step = value["step"]
    if common is None or type(step) is not str or step not in BUSINESS_STEPS:
        return _NOT_SURE
    device, seq, time, products = common
    parents: tuple[ProductKey, ...] | None = ()
    if "parents" in value:
        parents = _fast_keys(value["parents"], 0, MAX_PARENTS)
        if parents is None or {key.path for key in products} & {key.path for key in parents}:
            return _NOT_SURE
    location = value.get("location")
    if "location" in value and (
        type(location) is not str
        or not 1 <= len(location) <= MAX_LOCATION_LENGTH
        or _CONTROL_CHARACTER.search(location) is not None
    ):
        return _NOT_SURE
    data = value.get("data")
    if "data" in value:
        if type(data) is not dict:
            return _NOT_SURE
        try:
            data = _freeze_map(data, "data", 1)
        except MalformedMessage:
            return _NOT_SURE
    event: Event = _built(
        Event,
        device=device,
        seq=seq,
        time=time,
        products=products,
        step=step,
        parents=parents,
        location=location,
        data=data,
    )
    return event


def try_from_cbor_map(value: object) -> AnyMessage | None:
    """:func:`from_cbor_map`'s message for a well-formed payload map, or None if not sure.

    Checks the same field rules, once, for the shapes well-formed devices send (exact decoded
    types). Never raises and never refuses: None means "ask :func:`from_cbor_map`", which gives
    the verdict and the error detail.
    """
    if type(value) is not dict:
        return _NOT_SURE
    keys = value.keys()
    kind = value.get("type")
    message: AnyMessage | None = _NOT_SURE
    if kind == "reading" and keys == _READING_FIELDS:
        message = _fast_reading(value)
    elif kind == "event" and keys <= _EVENT_FIELDS and keys >= _EVENT_REQUIRED:
        message = _fast_event(value)
    elif kind == "key_rotation":  # cheap enough already: one pass of the constructor
        try:
            message = from_cbor_map(value)
        except MalformedMessage:
            message = _NOT_SURE
    return message


def encode_payload(message: AnyMessage) -> bytes:
    """Return the deterministic CBOR payload bytes of ``message`` (RFC 8949 §4.2.1)."""
    return encode_deterministic(message.to_cbor_map())


def decode_payload(payload: bytes) -> AnyMessage:
    """Decode payload bytes strictly (deterministic CBOR, no tags) and check every field rule.

    Raises :class:`~tracecore.errors.MalformedMessage`.
    """
    return from_cbor_map(decode_strict(payload, what="payload"))
