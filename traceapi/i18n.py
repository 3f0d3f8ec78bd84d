"""The words of the public pages in Simplified Chinese and English.

The language is chosen per request: an explicit ``?lang=zh|en`` (the switch on every page)
wins, then the best ``Accept-Language`` match, then Simplified Chinese (the first users are in
Gansu). Every key exists in both catalogs; a test checks that.
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = ["LANGUAGES", "Lang", "choose_language", "step_label", "text"]

Lang = Literal["zh", "en"]
LANGUAGES: Final[tuple[Lang, ...]] = ("zh", "en")

_ZH: Final[dict[str, str]] = {
    "html_lang": "zh-CN",
    "title": "产品溯源",
    "switch": "English",
    "verdict.verified": "已验证",
    "verdict.verified.explain": "这件产品的全部记录都有设备签名，并且已写入公开的、经见证的日志。记录没有被改动过。",
    "verdict.integrity_failure": "完整性校验失败",
    "verdict.integrity_failure.explain": "服务器上的记录与已签名的日志不一致，下面的内容不可信。请不要食用，并向市场监管部门报告。",
    "verdict.recalled": "已召回",
    "verdict.recalled.explain": "这件产品或其原料已被召回。请不要食用，按召回说明退回或处理。",
    "verdict.suspect_copy": "疑似仿冒码",
    "verdict.suspect_copy.explain": "这个序列号被太多不同的手机扫过，标签可能被复制。请核对包装并向商家或监管部门求证。",
    "verdict.unknown": "未登记",
    "verdict.unknown.explain": "这个码没有在溯源系统中登记，产品可能是假冒的。请向商家或市场监管部门求证。",
    "verdict.pending": "记录中",
    "verdict.pending.explain": "这件产品刚刚登记，正在等待写入下一个签名检查点，请几秒钟后再扫。",
    "product": "产品",
    "gtin": "商品条码 (GTIN)",
    "lot": "批号",
    "serial": "序列号",
    "origin": "产地/生产者",
    "created": "建档时间",
    "recall": "召回通知",
    "recall.by": "发布者",
    "story": "产品经历",
    "lineage": "来源与去向",
    "lineage.from": "来源于",
    "lineage.to": "制成了",
    "lineage.none": "没有上游产品",
    "temperature": "温度记录",
    "chart.limit": "上限",
    "chart.excursion": "超限",
    "chart.points": "显示 {shown} 个点，共 {total} 个读数",
    "scans": "扫码记录",
    "scans.first": "首次扫码：{when}{place}",
    "scans.count": "近期被 {clients} 个不同客户端扫过 {scans} 次",
    "scans.never": "这是第一次扫码。",
    "checks": "校验明细",
    "verify": "自己验证",
    "verify.explain": "下载证据包，用 agritrace 校验器离线验证，不必信任本网站：",
    "verify.bundle": "下载证据包 (JSON)",
    "verify.checkpoint": "已验证的检查点：日志大小 {size}",
    "feedback": "评价与投诉",
    "feedback.rating": "评分 (1–5)",
    "feedback.complaint": "投诉内容（可选）",
    "feedback.send": "提交",
    "feedback.thanks": "谢谢，您的反馈已收到。",
    "feedback.limited": "提交次数过多，请稍后再试。",
    "none": "无",
    "device": "设备",
    "party": "单位",
    "place": "地点",
    "unknown.title": "未找到这个码",
    "unknown.hint": "请检查是否完整扫描了包装上的二维码。",
    "labels.title": "标签",
    "contracts": "合规检查",
    "credit": "生产者信用分 (90 天)",
    "contract.pass": "合格",
    "contract.fail": "不合格",
    "contract.not_applicable": "不适用",
    "contract.egg-cold-chain": "鸡蛋冷链 (≤7.2 °C)",
    "contract.chilled-meat": "冷鲜肉温度",
    "contract.drug-withdrawal": "兽药休药期",
    "contract.brucellosis": "布鲁氏菌病检测",
    "contract.egg-freshness": "鸡蛋新鲜度 (28 天)",
    "contract.cold-chain-continuity": "冷链连续性",
    "contract.custody": "交接记录",
}

_EN: Final[dict[str, str]] = {
    "html_lang": "en",
    "title": "Product trace",
    "switch": "中文",
    "verdict.verified": "Verified",
    "verdict.verified.explain": "Every record of this product is signed by the device that made it and is in the public, witnessed log. Nothing has been changed.",
    "verdict.integrity_failure": "Integrity check failed",
    "verdict.integrity_failure.explain": "The records on this server do not match the signed log: do not trust what follows. Do not eat this product; report it to market supervision.",
    "verdict.recalled": "Recalled",
    "verdict.recalled.explain": "This product or something it was made from has been recalled. Do not eat it; return or dispose of it as the recall says.",
    "verdict.suspect_copy": "Possible copied code",
    "verdict.suspect_copy.explain": "This serial number was scanned by more different phones than a genuine label would be: the label may be copied. Check the package and ask the seller or the authorities.",
    "verdict.unknown": "Not registered",
    "verdict.unknown.explain": "This code is not registered in the traceability system: the product may be counterfeit. Ask the seller or market supervision.",
    "verdict.pending": "Being recorded",
    "verdict.pending.explain": "This product was registered moments ago and waits for the next signed checkpoint. Scan again in a few seconds.",
    "product": "Product",
    "gtin": "GTIN",
    "lot": "Lot",
    "serial": "Serial",
    "origin": "Origin",
    "created": "Registered",
    "recall": "Recall notice",
    "recall.by": "Issued by",
    "story": "The product's story",
    "lineage": "Where it came from and went",
    "lineage.from": "Made from",
    "lineage.to": "Made into",
    "lineage.none": "No upstream products",
    "temperature": "Temperature",
    "chart.limit": "limit",
    "chart.excursion": "excursion",
    "chart.points": "{shown} points shown of {total} readings",
    "scans": "Scans",
    "scans.first": "First scanned {when}{place}",
    "scans.count": "Scanned {scans} times by {clients} different clients recently",
    "scans.never": "This is the first scan.",
    "checks": "What was checked",
    "verify": "Check it yourself",
    "verify.explain": "Download the evidence and verify it offline with the agritrace verifier, without trusting this site:",
    "verify.bundle": "Download the evidence bundle (JSON)",
    "verify.checkpoint": "Checked against the checkpoint at log size {size}",
    "feedback": "Rate or complain",
    "feedback.rating": "Rating (1–5)",
    "feedback.complaint": "Complaint (optional)",
    "feedback.send": "Send",
    "feedback.thanks": "Thank you, your feedback was received.",
    "feedback.limited": "Too many submissions; please try again later.",
    "none": "none",
    "device": "device",
    "party": "party",
    "place": "place",
    "unknown.title": "Code not found",
    "unknown.hint": "Check that the whole QR code on the package was scanned.",
    "labels.title": "Labels",
    "contracts": "Compliance checks",
    "credit": "Producer credit (90 days)",
    "contract.pass": "passed",
    "contract.fail": "FAILED",
    "contract.not_applicable": "not applicable",
    "contract.egg-cold-chain": "Egg cold chain (≤ 7.2 °C)",
    "contract.chilled-meat": "Chilled meat temperatures",
    "contract.drug-withdrawal": "Drug withdrawal periods",
    "contract.brucellosis": "Brucellosis testing",
    "contract.egg-freshness": "Egg freshness (28 days)",
    "contract.cold-chain-continuity": "Cold-chain continuity",
    "contract.custody": "Custody hand-overs",
}

_CATALOGS: Final[dict[Lang, dict[str, str]]] = {"zh": _ZH, "en": _EN}

# CBV 2.0 business steps (GS1 CBV 2.0 §7.1) as a buyer reads them.
_STEPS: Final[dict[str, tuple[str, str]]] = {
    "commissioning": ("建档赋码", "Registered"),
    "collecting": ("收集（集蛋）", "Collected"),
    "packing": ("包装", "Packed"),
    "storing": ("储存", "Stored"),
    "shipping": ("发运", "Shipped"),
    "receiving": ("收货", "Received"),
    "retail_selling": ("零售", "Sold"),
    "inspecting": ("检验", "Inspected"),
    "sampling": ("采样", "Sampled"),
    "killing": ("屠宰", "Slaughtered"),
    "disassembling": ("分割", "Cut"),
    "transforming": ("加工", "Processed"),
    "loading": ("装车", "Loaded"),
    "unloading": ("卸车", "Unloaded"),
    "transporting": ("运输", "In transit"),
    "holding": ("暂扣", "Held"),
    "destroying": ("销毁", "Destroyed"),
    "accepting": ("验收", "Accepted"),
    "departing": ("出发", "Departed"),
    "arriving": ("到达", "Arrived"),
    "other": ("其他记录", "Other record"),
}


def text(lang: Lang, key: str, **values: object) -> str:
    """The text ``key`` in ``lang``, with ``{name}`` placeholders filled from ``values``."""
    template = _CATALOGS[lang][key]
    return template.format(**values) if values else template


def step_label(lang: Lang, step: str) -> str:
    """A business step as a buyer reads it (the CBV name itself when there is no label)."""
    labels = _STEPS.get(step)
    if labels is None:
        return step.replace("_", " ")
    return labels[0] if lang == "zh" else labels[1]


def choose_language(explicit: str | None, accept_language: str | None) -> Lang:
    """Pick the page language: ``?lang=``, then ``Accept-Language`` (RFC 9110 §12.5.4), then zh."""
    if explicit in LANGUAGES:
        return "zh" if explicit == "zh" else "en"
    best: tuple[float, int, str] | None = None
    for position, item in enumerate((accept_language or "").split(",")):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and quality > 0:
            candidate = (quality, -position, primary)
            if best is None or candidate > best:
                best = candidate
    if best is None:
        return "zh"
    return "zh" if best[2] == "zh" else "en"
