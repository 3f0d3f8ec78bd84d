"""The field vocabulary of the public pages: every data key, step and sensor in zh and en.

Devices put free-form ``data`` maps into their signed events (docs/protocol.md, "Conventional
data contents"). A page shows them as labelled rows in the reader's language, never in a
programming language's syntax: :func:`data_rows` turns a map into :class:`Row` objects, using
:data:`FIELDS` for the keys it knows (label, unit, how to format the value) and a readable
fallback for the keys it does not (``kg_per_head`` reads "kg per head"). Nested maps become
indented rows, lists are joined with the language's separator, booleans read yes/no.

Bilingual text that devices send ("京红1号 Jinghong 1") is shown in the page's language only
(:func:`pick`). Product keys and party ids in values become links.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from traceapi.i18n import Lang
from tracecore.errors import IdentifierError
from tracecore.identifiers import ProductKey

__all__ = [
    "FIELDS",
    "SENSORS",
    "UNITS",
    "Field",
    "Row",
    "data_rows",
    "event_name",
    "format_number",
    "mentioned_parties",
    "pick",
    "product_label",
    "sensor_name",
    "term",
    "unit_name",
]


@dataclass(frozen=True, slots=True)
class Row:
    """One labelled value of a data map; ``depth`` > 0 for rows of a nested map.

    ``href`` is set when the value names a product (a link to its page) or a party (its stall
    page).
    """

    label: str
    value: str
    depth: int = 0
    href: str | None = None


@dataclass(frozen=True, slots=True)
class Field:
    """How a data key reads: its labels, the unit of its numbers and the kind of its value.

    ``kind`` is ``text`` (bilingual text is picked), ``number``, ``term`` (a code word looked up
    in :data:`TERMS`), ``party`` (a party id), ``product`` (a product key) or ``date``.
    """

    zh: str
    en: str
    unit: tuple[str, str] | None = None
    kind: str = "text"


# Keys of the simulator's scenarios and of docs/protocol.md.
FIELDS: Final[Mapping[str, Field]] = {
    "species": Field("物种", "Species", kind="term"),
    "breed": Field("品种", "Breed"),
    "hens": Field("存栏", "Hens", ("只", "hens"), "number"),
    "count": Field("数量", "Count", ("个", ""), "number"),
    "house": Field("鸡舍", "Hen house", ("号", ""), "number"),
    "flock": Field("鸡群", "Flock", kind="product"),
    "laid": Field("产蛋日期", "Laid", kind="date"),
    "grade": Field("等级", "Grade"),
    "eggs_per_case": Field("每箱", "Per case", ("枚", "eggs"), "number"),
    "standard": Field("执行标准", "Standard"),
    "destination": Field("发往", "Sent to", kind="party"),
    "treatment": Field("兽药治疗", "Veterinary treatment"),
    "drug": Field("药品", "Drug", kind="term"),
    "dose": Field("剂量", "Dose", ("mg/kg", "mg/kg"), "number"),
    "withdrawal_days": Field("休药期", "Withdrawal period", ("天", "days"), "number"),
    "feed": Field("饲喂", "Feeding"),
    "ration": Field("饲料", "Ration"),
    "kg_per_head": Field("每头日喂量", "Per head", ("kg", "kg"), "number"),
    "additive": Field("添加剂", "Additive", kind="term"),
    "hot_carcass_kg": Field("热胴体重", "Hot carcass weight", ("kg", "kg"), "number"),
    "cut": Field("部位", "Cut"),
    "net_kg": Field("净重", "Net weight", ("kg", "kg"), "number"),
    "specimen": Field("样品", "Specimen", kind="term"),
    "purpose": Field("用途", "Purpose", kind="term"),
    "test": Field("检测", "Laboratory test"),
    "disease": Field("检测项目", "Disease", kind="term"),
    "result": Field("结果", "Result", kind="term"),
    "lab": Field("检测机构", "Laboratory", kind="party"),
    "method": Field("方法", "Method"),
    "report": Field("报告编号", "Report no."),
    "sample": Field("样品编号", "Sample", kind="product"),
    "weight_kg": Field("重量", "Weight", ("kg", "kg"), "number"),
    "temperature": Field("温度", "Temperature", ("°C", "°C"), "number"),
    "reason": Field("原因", "Reason"),
}

# Code words devices send as values, in the reader's language.
TERMS: Final[Mapping[str, tuple[str, str]]] = {
    "Gallus gallus domesticus": ("家鸡（蛋鸡）", "Chicken (laying hen)"),
    "cattle": ("牛", "Cattle"),
    "sheep": ("羊", "Sheep"),
    "oxytetracycline": ("土霉素", "Oxytetracycline"),
    "monensin": ("莫能菌素", "Monensin"),
    "serum": ("血清", "Serum"),
    "brucellosis": ("布鲁氏菌病", "Brucellosis"),
    "avian influenza": ("禽流感", "Avian influenza"),
    "negative": ("阴性（未检出）", "Negative (not detected)"),
    "positive": ("阳性（检出）", "Positive (detected)"),
}

SENSORS: Final[Mapping[str, tuple[str, str]]] = {
    "Temperature": ("温度", "Temperature"),
    "RelativeHumidity": ("相对湿度", "Relative humidity"),
    "AbsoluteHumidity": ("绝对湿度", "Absolute humidity"),
    "Mass": ("重量", "Weight"),
    "Count": ("计数", "Count"),
}

# UN/CEFACT Rec. 20 unit codes (the uom of a sensor report, GS1 CBV 2.0 §8.4).
UNITS: Final[Mapping[str, str]] = {"CEL": "°C", "P1": "%", "KGM": "kg", "GRM": "g", "H87": ""}

# CBV 2.0 business steps (GS1 CBV 2.0 §7.1) as a buyer reads them.
STEPS: Final[Mapping[str, tuple[str, str]]] = {
    "accepting": ("验收", "Accepted"),
    "arriving": ("到达", "Arrived"),
    "assembling": ("组装", "Assembled"),
    "collecting": ("集蛋", "Collected"),
    "commissioning": ("建档赋码", "Registered"),
    "consigning": ("托运", "Consigned"),
    "decommissioning": ("注销", "Decommissioned"),
    "departing": ("出发", "Departed"),
    "destroying": ("销毁", "Destroyed"),
    "disassembling": ("分割", "Cut"),
    "dispensing": ("分装", "Dispensed"),
    "encoding": ("赋码", "Encoded"),
    "entering_exiting": ("出入", "Entered or left"),
    "holding": ("暂扣", "Held"),
    "inspecting": ("检验", "Inspected"),
    "installing": ("安装", "Installed"),
    "killing": ("屠宰", "Slaughtered"),
    "loading": ("装车", "Loaded"),
    "packing": ("包装", "Packed"),
    "picking": ("拣货", "Picked"),
    "receiving": ("收货", "Received"),
    "removing": ("取出", "Removed"),
    "repackaging": ("重新包装", "Repacked"),
    "repairing": ("维修", "Repaired"),
    "replacing": ("替换", "Replaced"),
    "reserving": ("预留", "Reserved"),
    "retail_selling": ("零售", "Sold"),
    "sampling": ("采样", "Sampled"),
    "sensor_reporting": ("传感器记录", "Sensor report"),
    "shipping": ("发运", "Shipped"),
    "staging_outbound": ("待发", "Staged for dispatch"),
    "stock_taking": ("盘点", "Stock taken"),
    "stocking": ("上架", "Stocked"),
    "storing": ("入库储存", "Stored"),
    "transforming": ("加工", "Processed"),
    "transporting": ("运输", "In transit"),
    "unloading": ("卸车", "Unloaded"),
    "unpacking": ("拆包", "Unpacked"),
    "void_shipping": ("撤销发运", "Shipment voided"),
    "creating_class_instance": ("建档", "Created"),
    "cycle_counting": ("循环盘点", "Cycle count"),
}

# What an event is when its data says more than its step (``other`` or ``inspecting``).
_BY_DATA: Final = (
    ("treatment", ("兽药治疗记录", "Veterinary treatment")),
    ("feed", ("饲喂记录", "Feeding record")),
    ("test", ("检测结果", "Test result")),
    ("specimen", ("采样", "Sample taken")),
    ("hens", ("鸡群建档", "Flock registered")),
    ("eggs_per_case", ("分级包装", "Graded and packed")),
    ("cut", ("分割包装", "Cut and packed")),
)

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_PRODUCT_KEY = re.compile(r"^01/\d{14}(/(10|21)/[^/\s]+){1,2}$")


def pick(lang: Lang, value: str) -> str:
    """The part of a bilingual text in ``lang``: ``"京红1号 Jinghong 1"`` -> ``"京红1号"`` (zh).

    A text is bilingual when a Chinese part is followed, after a space, by a part without
    Chinese characters; any other text is returned as it is.
    """
    for match in re.finditer(r"\s+", value):
        head, tail = value[: match.start()], value[match.end() :]
        if _CJK.search(head) and tail and not _CJK.search(tail) and re.search("[A-Za-z]", tail):
            return head if lang == "zh" else tail
    return value


def term(lang: Lang, value: str) -> str:
    """A code word (``oxytetracycline``, ``negative``) in ``lang``; other text via :func:`pick`."""
    known = TERMS.get(value) or TERMS.get(value.lower())
    if known is not None:
        return known[0] if lang == "zh" else known[1]
    return pick(lang, value)


def format_number(value: float, lang: Lang) -> str:  # noqa: ARG001 (same digits in zh and en)
    """A number as people write it: no trailing ``.0``, thousands grouped."""
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def unit_name(uom: str) -> str:
    """The symbol of a UN/CEFACT unit code (the code itself when unknown)."""
    return UNITS.get(uom, uom)


def sensor_name(lang: Lang, kind: str) -> str:
    """A sensor type (``Temperature``) in ``lang``."""
    known = SENSORS.get(kind)
    if known is None:
        return _readable(kind)
    return known[0] if lang == "zh" else known[1]


def event_name(lang: Lang, step: str, data: Mapping[str, object] | None) -> str:
    """What a signed event was, in ``lang``: by its data where that says more than its step."""
    for key, names in _BY_DATA:
        if data and key in data and step in ("other", "inspecting", "commissioning", "sampling"):
            return names[0] if lang == "zh" else names[1]
    known = STEPS.get(step)
    if known is not None:
        return known[0] if lang == "zh" else known[1]
    if step == "other" or not step:
        return "记录" if lang == "zh" else "Record"
    return _readable(step)


def _readable(key: str) -> str:
    """A key nobody labelled, as words: ``kg_per_head`` -> ``kg per head``."""
    words = re.sub(r"([a-z])([A-Z])", r"\1 \2", key).replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:] if words else key


def _label(lang: Lang, key: str) -> tuple[str, Field | None]:
    field = FIELDS.get(key)
    if field is None:
        return _readable(key), None
    return (field.zh if lang == "zh" else field.en), field


Linker = Callable[[str, str], tuple[str, str | None]]


def _number_text(lang: Lang, value: float, field: Field | None) -> str:
    text = format_number(value, lang)
    if field is not None and field.unit is not None:
        unit = field.unit[0] if lang == "zh" else field.unit[1]
        return f"{text} {unit}" if unit else text
    return text


def _list_text(
    lang: Lang, values: list[object] | tuple[object, ...], field: Field | None, link: Linker
) -> str:
    parts = [
        "; ".join(f"{r.label}: {r.value}" for r in data_rows(lang, v, link))
        if isinstance(v, Mapping)
        else _scalar(lang, v, field, link)[0]
        for v in values
    ]
    return ("、" if lang == "zh" else ", ").join(parts) if parts else "—"


def _text(lang: Lang, value: str, field: Field | None, link: Linker) -> tuple[str, str | None]:
    kind = field.kind if field is not None else "text"
    if kind == "party":
        return link("party", value)
    if kind == "product" or _PRODUCT_KEY.match(value):
        return link("product", value)
    return (term(lang, value) if kind == "term" else pick(lang, value)), None


def _scalar(lang: Lang, value: object, field: Field | None, link: Linker) -> tuple[str, str | None]:
    """A value that is not a map, as text, with a link where it names a product or party."""
    if value is None:
        return "—", None
    if isinstance(value, bool):
        yes, no = ("是", "否") if lang == "zh" else ("yes", "no")
        return (yes if value else no), None
    if isinstance(value, int | float):
        return _number_text(lang, value, field), None
    if isinstance(value, bytes):
        return value.hex(), None
    if isinstance(value, list | tuple):
        return _list_text(lang, value, field, link), None
    return _text(lang, str(value), field, link)


def _no_link(_kind: str, value: str) -> tuple[str, str | None]:
    return value, None


def data_rows(
    lang: Lang, data: Mapping[str, object], link: Linker = _no_link, depth: int = 0
) -> list[Row]:
    """The rows of a signed ``data`` map in ``lang``, nested maps as indented rows.

    ``link(kind, value)`` turns a party id (kind ``party``) or a product key (``product``) into
    ``(text, href)``: a name and the page to link to.
    """
    rows: list[Row] = []
    for key, value in data.items():
        label, field = _label(lang, str(key))
        if isinstance(value, Mapping):
            rows.append(Row(label, "", depth))
            rows.extend(data_rows(lang, value, link, depth + 1))
            continue
        text, href = _scalar(lang, value, field, link)
        rows.append(Row(label, text, depth, href))
    return rows


def mentioned_parties(data: Mapping[str, object]) -> set[str]:
    """The party ids a data map names in fields of kind ``party`` (destination, lab), nested."""
    found: set[str] = set()
    for key, value in data.items():
        field = FIELDS.get(str(key))
        if isinstance(value, Mapping):
            found |= mentioned_parties(value)
        elif isinstance(value, str) and field is not None and field.kind == "party":
            found.add(value)
    return found


def product_label(lang: Lang, key: str) -> str:
    """A product key as a buyer reads it: ``批号 L261127 · 序列号 C0001`` (the key if not one)."""
    try:
        parsed = ProductKey.parse(key)
    except IdentifierError:
        return key
    parts = []
    if parsed.lot:
        parts.append(("批号 " if lang == "zh" else "lot ") + parsed.lot)
    if parsed.serial:
        parts.append(("序列号 " if lang == "zh" else "serial ") + parsed.serial)
    return " · ".join(parts) or key
