"""QR codes: SVG and PNG that a real decoder (zbarimg) reads back as the Digital Link URI."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from trace_kit import CARTON, LOT, World, make_world

from tracecore.identifiers import ProductKey

PUBLIC = "https://trace.gansu.example"


@pytest.fixture
def world(engine: Engine, app_client: Any) -> Iterator[World]:
    """The egg world of trace_kit with a public URL for the codes."""
    with make_world(engine, app_client, public_url=PUBLIC + "/") as built:
        yield built


def _decode(zbarimg: str, image: Path) -> list[str]:
    out = subprocess.run(  # noqa: S603 (a fixed program on a file this test wrote)
        [zbarimg, "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", str(image)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.splitlines()


@pytest.mark.parametrize("key", [LOT, CARTON, ProductKey.parse("01/06901234567892/10/A%2FB-1")])
@pytest.mark.parametrize(("scale", "border"), [(4, 4), (2, 2), (10, 4)])
def test_png_decodes_to_the_digital_link_uri(
    world: World, tmp_path: Path, zbarimg: str, *, key: ProductKey, scale: int, border: int
) -> None:
    """Each PNG decodes (zbar) to {PUBLIC_URL}/{key}, whatever the scale and border."""
    reply = world.client.get(f"/qr/{key.path}.png?scale={scale}&border={border}")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "image/png"
    assert reply.content.startswith(b"\x89PNG")
    image = tmp_path / "code.png"
    image.write_bytes(reply.content)
    assert _decode(zbarimg, image) == [f"{PUBLIC}/{key.path}"]


def test_svg_is_an_svg_of_the_same_uri(world: World) -> None:
    """The SVG names the URI it encodes and grows with the scale."""
    small = world.client.get(f"/qr/{CARTON.path}.svg?scale=2")
    large = world.client.get(f"/qr/{CARTON.path}.svg?scale=6")
    assert small.status_code == large.status_code == 200
    assert small.headers["content-type"] == "image/svg+xml"
    assert f"{PUBLIC}/{CARTON.path}" in small.text
    width = int(small.text.split('width="')[1].split('"')[0])
    assert int(large.text.split('width="')[1].split('"')[0]) == 3 * width


def test_bad_parameters_and_keys_are_refused(world: World) -> None:
    """Out-of-range scale, or a malformed key, are 422 with a reason."""
    assert world.client.get(f"/qr/{CARTON.path}.png?scale=0").status_code == 422
    assert world.client.get(f"/qr/{CARTON.path}.png?border=99").status_code == 422
    reply = world.client.get("/qr/01/12345/10/X.png")
    assert reply.status_code == 422
    assert "GTIN" in reply.json()["detail"]


def test_label_sheet_for_a_lot_lists_its_serials(world: World) -> None:
    """A lot's label sheet has one code per registered serial, or the serials asked for."""
    sheet = world.client.get(f"/qr/{LOT.path}/labels")
    assert sheet.status_code == 200
    assert sheet.text.count("<svg") == 1
    assert CARTON.path in sheet.text
    chosen = world.client.get(f"/qr/{LOT.path}/labels?serials=C0001,C0002,C0003")
    assert chosen.text.count("<svg") == 3
    assert f"{LOT.path}/21/C0003" in chosen.text
    assert world.client.get(f"/qr/{CARTON.path}/labels?serials=X").status_code == 400
