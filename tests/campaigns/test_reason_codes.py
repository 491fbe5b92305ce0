"""Every reason code the pipeline writes on a message (or in its history) can be put into words in English
and in Chinese (campaigns/reasons.py): found by reading the code that writes them, so a new code without
words fails here rather than showing up as `claim_lapsed` in the customer's Messages panel."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.utils import translation
from django.utils.translation import gettext

from campaigns.reasons import REASONS, reason_text
from journeys.reasons import REASONS as ENROLLMENT_REASONS

ROOT = Path(__file__).resolve().parents[2]
WRITERS = ("campaigns", "journeys")  # the apps that write messages' reasons


class _Finder(ast.NodeVisitor):
    """Collects the reason codes written in one module: `reason=...` keywords, `"reason": ...` in dict
    literals (history entries), the rules' `suppress(m, code)` / `defer(m, until, code)`, the first item
    of the (code, params) tuples of a function or table named for reasons, and f-strings anywhere there
    (which cannot be checked, so they are reported)."""

    def __init__(self, path: Path):
        self.path = path
        self.codes: dict[str, str] = {}
        self.unresolvable: list[str] = []
        self._function = ""

    def _where(self, node) -> str:
        return f"{self.path.relative_to(ROOT)}:{node.lineno}"

    def _take(self, node) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value:
                self.codes.setdefault(node.value, self._where(node))
        elif isinstance(node, ast.IfExp):
            self._take(node.body)
            self._take(node.orelse)
        elif isinstance(node, ast.JoinedStr):
            self.unresolvable.append(self._where(node))

    def _take_tuples(self, node) -> None:
        for child in ast.walk(node):
            if isinstance(child, ast.Tuple) and child.elts:
                self._take(child.elts[0])
                if len(child.elts) == 2 and isinstance(child.elts[1], ast.Constant):
                    self._take(child.elts[1])

    def visit_FunctionDef(self, node):
        outer, self._function = self._function, node.name
        self.generic_visit(node)
        self._function = outer

    def visit_Return(self, node):
        if "reason" in self._function and isinstance(node.value, ast.Tuple):
            self._take(node.value.elts[0])
        self.generic_visit(node)

    def visit_Assign(self, node):
        names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        if "reason" in names:
            self._take(node.value)
        if any("REASON" in name for name in names):
            self._take_tuples(node.value)
        unpacked = [t for t in node.targets if isinstance(t, ast.Tuple)]
        if any(isinstance(e, ast.Name) and e.id == "reason" for t in unpacked for e in t.elts):
            self._take_tuples(node.value)
        self.generic_visit(node)

    def visit_Call(self, node):
        for keyword in node.keywords:
            if keyword.arg == "reason":
                self._take(keyword.value)
        name = node.func.id if isinstance(node.func, ast.Name) else ""
        if name == "suppress" and len(node.args) >= 2:
            self._take(node.args[1])
        if name == "defer" and len(node.args) >= 3:
            self._take(node.args[2])
        self.generic_visit(node)

    def visit_Dict(self, node):
        for key, value in zip(node.keys, node.values, strict=True):
            if isinstance(key, ast.Constant) and key.value == "reason":
                self._take(value)
        self.generic_visit(node)


def _written_codes() -> tuple[dict[str, str], list[str]]:
    codes: dict[str, str] = {}
    unresolvable: list[str] = []
    for app in WRITERS:
        for path in sorted((ROOT / app).rglob("*.py")):
            # library.py's "reason" keys are award_points nodes' words for the member's points history,
            # shown as typed (loyalty/ledger_reasons.py), not codes.
            if "migrations" in path.parts or path.name in ("reasons.py", "library.py"):
                continue
            finder = _Finder(path)
            finder.visit(ast.parse(path.read_text(), str(path)))
            for code, where in finder.codes.items():
                codes.setdefault(code, where)
            unresolvable += finder.unresolvable
    return codes, unresolvable


# Codes the finder sees that are not messages' reasons: the suppression list's own reason (a
# SuppressionReason value, shown through its label) and the crm event's property names.
NOT_MESSAGE_REASONS = {"invalid", "manual"}


def test_the_finder_sees_the_codes_of_every_writer():
    codes, _ = _written_codes()
    # One from each kind of place: the reaper, the rules, a stage failure, unsubscribe, a dead letter.
    assert {
        "claim_lapsed",
        "claim_lapsed_handed",
        "claim_lapsed_maybe_sent",
        "capped_all_deferred",
        "lower_priority",
        "screen_failed",
        "render_error",
        "unsubscribed",
        "complained",
        "retried",
        "no_answer",
    } <= set(codes)


def test_every_reason_code_written_has_words_in_english_and_chinese():
    codes, unresolvable = _written_codes()
    assert not unresolvable, f"reason codes built at run time cannot be checked: {unresolvable}"
    missing = {code: where for code, where in codes.items() if code not in REASONS}
    missing = {code: where for code, where in missing.items() if code not in NOT_MESSAGE_REASONS}
    # journeys write messages' reasons and, on enrollments, their own (journeys/reasons.py).
    missing = {
        code: where
        for code, where in missing.items()
        if not (where.startswith("journeys/") and code in ENROLLMENT_REASONS)
    }
    assert not missing, (
        f"reason codes without words in campaigns/reasons.py or journeys/reasons.py: {missing}"
    )
    with translation.override("zh-hans"):
        untranslated = [code for code in codes if code in REASONS and gettext(REASONS[code]) == REASONS[code]]
    with translation.override("en"):
        english = {code: str(text) for code, text in ENROLLMENT_REASONS.items()}
    with translation.override("zh-hans"):
        untranslated += [code for code, text in ENROLLMENT_REASONS.items() if str(text) == english[code]]
    assert not untranslated, f"reason codes without Chinese words: {untranslated}"


@pytest.mark.parametrize(
    ("code", "params", "english", "chinese"),
    [
        ("claim_lapsed", {}, "its worker stopped before sending it", "发送前其工作进程已停止"),
        ("claim_lapsed_handed", {}, "ignores repeats", "重新排队"),
        ("claim_lapsed_maybe_sent", {}, "perhaps after sending it", "可能已交给服务商"),
        ("screen_failed", {"attempts": 8, "error": "boom"}, "gave up after 8 attempts", "8 次"),
        ("render_error", {"error": "boom", "until": "x"}, "rendering failed (boom)", "渲染失败"),
        ("suppressed_address", {"why": "bounced"}, "(Bounced)", "退信"),
    ],
)
def test_reasons_read_in_the_readers_language(code, params, english, chinese):
    with translation.override("en"):
        assert english in reason_text(code, params)
    with translation.override("zh-hans"):
        assert chinese in reason_text(code, params)
