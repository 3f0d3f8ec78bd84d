"""``agritrace gateway-key`` and ``agritrace device add``: a farm onboards its own gateways.

* ``gateway-key`` runs ON THE GATEWAY: it makes the device's Ed25519 key there (mode 0600, in a
  0700 directory; an existing key is shown again, never replaced) and prints the public key, as
  ``POST /v1/devices`` takes it, and its fingerprint for people to compare.
* ``device add`` runs anywhere with the farm's token: it registers the device over HTTP
  (``POST /v1/devices``) and writes the provisioning file the gateway starts from
  (:class:`tracecore.provisioning.Provisioning`), with the log's vkey fetched from
  ``/v1/log/vkey``. The console's ``/console/devices/new`` does the same in a browser.

docs/gateway.md walks a farm through both.
"""

from __future__ import annotations

import argparse
import base64
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tracecore.errors import ConfigError
from tracecore.settings import Settings

if TYPE_CHECKING:
    import httpx

__all__ = [
    "add_device_parsers",
    "add_sim_send_parser",
    "fetch_provisioning",
    "register_over_http",
]

_HTTP_TIMEOUT_S = 30.0


def add_device_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``agritrace gateway-key`` and ``agritrace device add`` to the command line."""
    key = commands.add_parser(
        "gateway-key",
        help="on the gateway: make the device's key, print its public key and fingerprint",
    )
    key.add_argument("--device-id", required=True, help="the device id, e.g. henhouse-1")
    key.add_argument(
        "--out", type=Path, required=True, help="the gateway's key directory (created 0700)"
    )
    key.set_defaults(command=_gateway_key)

    device = commands.add_parser("device", help="register a farm's device with its token")
    actions = device.add_subparsers(metavar="ACTION", required=True)
    add = actions.add_parser(
        "add", help="register a device (POST /v1/devices) and write its provisioning file"
    )
    add.add_argument("--api", required=True, help="the API base URL, e.g. https://trace.example")
    add.add_argument("--token", required=True, help="the farm's token (at_...)")
    add.add_argument("--id", required=True, help="the device id")
    add.add_argument("--party", default=None, help="the party (default: the token's own)")
    add.add_argument("--place", default=None, help="where it stands, in Chinese")
    add.add_argument("--place-en", default=None, help="where it stands, in English")
    add.add_argument(
        "--public-key", required=True, help="the base64 key `agritrace gateway-key` printed"
    )
    add.add_argument(
        "--broker",
        default=None,
        help="the broker URL the gateway reaches (default: $AGRITRACE_PUBLIC_MQTT_URL, ...)",
    )
    add.add_argument(
        "--out", type=Path, default=Path("provisioning.json"), help="the provisioning file"
    )
    add.add_argument(
        "--existing",
        action="store_true",
        help="the device is registered already (a lost file): check its key, write the file",
    )
    add.set_defaults(command=_device_add)


def add_sim_send_parser(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``agritrace sim send``: a gateway started from its provisioning file sends once."""
    send = actions.add_parser(
        "send",
        help="as a provisioned gateway: send one reading or event, wait for its verified receipt",
    )
    send.add_argument("--provisioning", type=Path, required=True, help="the provisioning file")
    send.add_argument("--keys", type=Path, required=True, help="the gateway's key directory")
    send.add_argument("--product", required=True, help="product key, e.g. 01/0690.../10/L1")
    what = send.add_mutually_exclusive_group(required=True)
    what.add_argument("--celsius", type=float, help="send a temperature reading")
    what.add_argument("--step", help="send a business event (commissioning, shipping, ...)")
    send.add_argument("--broker", default=None, help="override the file's broker URL")
    send.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a receipt")
    send.set_defaults(command=_sim_send)


def _sim_send(args: argparse.Namespace, settings: Settings) -> int:
    del settings  # a gateway has its file and its key, nothing of a server
    import asyncio

    from gateway.provisioned import send_from_provisioning
    from tracecore.identifiers import ProductKey
    from tracecore.mqtt import BrokerAddress
    from tracecore.provisioning import Provisioning

    try:
        text = args.provisioning.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {args.provisioning}: {exc.strerror}") from exc
    provisioning = Provisioning.parse(text)
    broker = BrokerAddress.parse(args.broker) if args.broker else None
    try:
        sent = asyncio.run(
            send_from_provisioning(
                provisioning,
                args.keys,
                [ProductKey.parse(args.product)],
                celsius=args.celsius,
                step=args.step,
                timeout_s=args.timeout,
                broker=broker,
            )
        )
    except TimeoutError:
        sys.stderr.write(
            f"agritrace: no verified receipt within {args.timeout:g} s; the message stays in "
            "the outbox and goes out again with the next run\n"
        )
        return 1
    print(f"receipt: {sent.device} seq {sent.seq} is log entry {sent.log_index} (verified)")
    return 0


def _gateway_key(args: argparse.Namespace, settings: Settings) -> int:
    del settings  # the key lives where the gateway says (--out), not in a server's data dir
    from gateway.runtime import load_or_create_device_key
    from tracecore.keys import device_fingerprint

    existed = (args.out / f"{args.device_id}.key").exists()
    key = load_or_create_device_key(args.out, args.device_id)
    verb = "kept the existing" if existed else "wrote"
    sys.stderr.write(f"{verb} key file {args.out / (args.device_id + '.key')} (mode 0600)\n")
    print(f"device:      {args.device_id}")
    print(f"public key:  {base64.b64encode(key.public_key).decode()}")
    print(f"fingerprint: {device_fingerprint(key.public_key)}")
    return 0


def register_over_http(
    api: str,
    token: str,
    body: dict[str, str],
) -> dict[str, object]:
    """POST ``body`` to ``{api}/v1/devices`` with the farm's token; return the 201 answer.

    Raises :class:`ConfigError` with the server's detail on any other answer.
    """
    import httpx

    try:
        reply = httpx.post(
            api.rstrip("/") + "/v1/devices",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=_HTTP_TIMEOUT_S,
        )
    except httpx.HTTPError as exc:
        raise ConfigError(f"cannot reach {api}: {exc}") from exc
    if reply.status_code != 201:
        raise ConfigError(
            f"the registry refused the device ({reply.status_code}): {_detail(reply)}"
        )
    answer: dict[str, object] = reply.json()
    return answer


def fetch_provisioning(api: str, device: str, public_key: bytes, broker: str) -> str:
    """The provisioning file's text for ``device``, with the log vkey the API at ``api`` serves."""
    import httpx

    from tracecore.keys import device_fingerprint
    from tracecore.provisioning import Provisioning

    try:
        reply = httpx.get(api.rstrip("/") + "/v1/log/vkey", timeout=_HTTP_TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise ConfigError(f"cannot reach {api}: {exc}") from exc
    if reply.status_code != 200:
        raise ConfigError(f"{api} serves no log key ({reply.status_code}): {_detail(reply)}")
    made = Provisioning.make(
        device, broker, reply.text.strip(), api, device_fingerprint(public_key)
    )
    return made.to_json()


def _detail(reply: httpx.Response) -> str:
    try:
        detail = reply.json().get("detail")
    except ValueError:
        detail = None
    return str(detail) if detail else reply.text[:200]


def _token_party(api: str, token: str) -> str:
    """The party a party token belongs to (``GET /v1/tokens`` lists its own party's)."""
    import httpx

    try:
        reply = httpx.get(
            api.rstrip("/") + "/v1/tokens",
            headers={"Authorization": f"Bearer {token}"},
            timeout=_HTTP_TIMEOUT_S,
        )
    except httpx.HTTPError as exc:
        raise ConfigError(f"cannot reach {api}: {exc}") from exc
    if reply.status_code != 200:
        raise ConfigError(f"the token was refused ({reply.status_code}): {_detail(reply)}")
    parties = {row.get("party") for row in reply.json() if isinstance(row, dict)}
    parties.discard(None)
    if len(parties) != 1:
        raise ConfigError("cannot tell the token's party: pass --party")
    return str(parties.pop())


def _check_registered(api: str, token: str, device: str, public_key: str) -> str:
    """Check that ``device`` is registered with ``public_key`` as its current, unrevoked key
    (``GET /v1/devices/{id}``, owner or admin only); return its id."""
    import httpx

    try:
        reply = httpx.get(
            f"{api.rstrip('/')}/v1/devices/{device}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=_HTTP_TIMEOUT_S,
        )
    except httpx.HTTPError as exc:
        raise ConfigError(f"cannot reach {api}: {exc}") from exc
    if reply.status_code != 200:
        raise ConfigError(f"cannot read device {device} ({reply.status_code}): {_detail(reply)}")
    keys = reply.json().get("keys", [])
    current = [k for k in keys if k.get("valid_until_ms") is None]
    if not current or current[-1].get("public_key") != public_key:
        raise ConfigError(f"{device}'s current key is not this public key: no file for it")
    if current[-1].get("revoked_ms") is not None:
        raise ConfigError(f"{device}'s key is revoked: make a new key and a new device")
    return device


def _device_add(args: argparse.Namespace, settings: Settings) -> int:
    from tracecore.storage.registry import validate_public_key

    try:
        public_key = base64.b64decode(args.public_key, validate=True)
    except ValueError as exc:
        raise ConfigError(
            "--public-key is not base64 (copy it from agritrace gateway-key)"
        ) from exc
    validate_public_key(public_key)  # a clear error here rather than the server's 422
    if args.out.exists():
        raise ConfigError(f"{args.out} exists already; refusing to overwrite it")
    broker = args.broker or settings.gateway_broker
    if args.existing:
        device = _check_registered(args.api, args.token, args.id, args.public_key)
        sys.stderr.write(f"{device} is registered with this key; ")
    else:
        party = args.party or _token_party(args.api, args.token)
        body = {"id": args.id, "party": party, "public_key": args.public_key}
        if args.place:
            body["place"] = args.place
        if args.place_en:
            body["place_en"] = args.place_en
        device = str(register_over_http(args.api, args.token, body)["id"])
        sys.stderr.write(f"registered {device} for {party}; ")
    text = fetch_provisioning(args.api, device, public_key, broker)
    args.out.write_text(text, encoding="utf-8")
    from tracecore.keys import device_fingerprint

    sys.stderr.write(f"wrote {args.out}\n")
    print(f"fingerprint: {device_fingerprint(public_key)}")
    return 0
