"""The sandbox that renders staff-written message templates (untrusted code, DESIGN.md §5).

Jinja2's `ImmutableSandboxedEnvironment` already refuses attribute walks to `__class__`, `__globals__`,
`mro`, `str.format` escapes and calls to mutating methods. It does not stop a template from spending the
worker's memory or time, so this module adds, per render:

- sizes: the template source, every value a template builds (a string, a list, an integer's digits)
  and the output are capped; `'a' * 10**7`, `10**10000`, `"%99999999s" | format(1)` and their kin are
  refused *before* Python allocates anything (the operators are intercepted, so Jinja's optimizer does
  not fold them at compile time either);
- work: every loop iteration and every call ticks a step budget, and every 256 ticks and every output
  chunk compare the clock with the render's deadline: a counter, no signal, no thread per message;
- data: only plain values (dict, list, str, numbers, booleans, None) may be looked into; anything else
  in a context is opaque, and numbers expose no attributes at all (`(1).to_bytes(10**9)` is a MemoryError).

Templates are compiled once per template version and kept per process, keyed by the version id (versions
are immutable: a new save is a new id). `render_batch` renders a batch of outbox messages with contexts
built set-based by campaigns.services.personalisation; see bench/render_bench.py for its figure.
"""

from __future__ import annotations

import contextvars
import functools
import re
import string
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date, datetime

from django.conf import settings
from django.utils.translation import gettext_lazy as _
from jinja2 import ChainableUndefined, nodes
from jinja2 import TemplateSyntaxError as JinjaSyntaxError
from jinja2.exceptions import SecurityError, TemplateError, UndefinedError
from jinja2.filters import do_batch, do_center, do_format, do_indent, do_replace, do_slice
from jinja2.meta import find_undeclared_variables
from jinja2.runtime import Context, LoopContext, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Cycler, Joiner, Namespace, pass_eval_context
from jinja2.visitor import NodeTransformer
from markupsafe import Markup, escape

# --- Limits ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    source_chars: int = 64_000  # one field's Jinja2 source
    output_chars: int = 256_000  # one field's rendered text, and any value built on the way
    steps: int = 200_000  # loop iterations + calls in one render
    seconds: float = 0.5  # CPU time of one field's render (the thread's, not the wall clock)
    range_max: int = 10_000  # the most items `range()` may give
    int_bits: int = 4_096  # about 1,233 decimal digits
    width_max: int = 1_000  # a padding width or precision in a format, an indent, a batch size


@functools.cache
def default_limits() -> Limits:
    """Limits(), with settings.MESSAGING_RENDER_LIMITS (a dict of its fields) over it; read once."""
    return Limits(**(getattr(settings, "MESSAGING_RENDER_LIMITS", None) or {}))


# --- Errors ---------------------------------------------------------------------------------------

# What went wrong, as a code (stored with messages, translated when shown) and its words.
PROBLEMS = {
    "syntax": _("syntax error: %(detail)s"),
    "unknown_variable": _("unknown variable %(name)s"),
    "source_too_long": _("the template is longer than %(limit)s characters"),
    "output_too_long": _("the output is longer than %(limit)s characters"),
    "value_too_big": _("a value would be larger than %(limit)s"),
    "number_too_big": _("a number would have more than %(limit)s bits"),
    "range_too_big": _("range() may give at most %(limit)s items"),
    "width_too_big": _("a width or count of %(value)s is more than %(limit)s"),
    "too_many_steps": _("more than %(limit)s loop iterations or calls"),
    "too_slow": _("rendering took longer than %(limit)s s"),
    "unsafe": _("not allowed in templates: %(detail)s"),
    "render_error": _("%(detail)s"),
    "required": _("this field is required"),
    "wechat_key": _("%(key)s is not a WeChat data key (letters and _ then digits, e.g. thing1)"),
    "wechat_length": _("%(key)s renders %(length)s characters; WeChat allows %(limit)s for %(kind)s"),
    "wechat_kind": _("the kind must be template or subscribe"),
    "coupon_programme": _("the template uses coupon but names no coupon programme"),
}


class TemplateProblem(Exception):
    """A template that cannot be compiled or rendered: a code (PROBLEMS), its parameters and, where it
    is known, the line of the field's source it comes from."""

    def __init__(self, code: str, *, line: int | None = None, field=None, **params):
        self.code = code
        self.line = line
        self.field = field  # which field of the content: "subject", "html", ("data", "thing1")
        self.params = params
        super().__init__(code)

    def __str__(self) -> str:
        return self.text()

    def text(self) -> str:
        words = str(PROBLEMS.get(self.code, self.code))
        try:
            words = words % self.params
        except (KeyError, TypeError, ValueError):
            pass
        if self.line:
            return str(_("line %(line)s: %(problem)s")) % {"line": self.line, "problem": words}
        return words


class _Stop(TemplateError):
    """Raised inside a render to stop it at once; carries the TemplateProblem. A Jinja TemplateError, so
    Jinja rewrites the traceback and the template line is known."""

    def __init__(self, problem: TemplateProblem):
        self.problem = problem
        super().__init__(str(problem))


# --- The per-render budget ----------------------------------------------------------------------


class _Budget:
    __slots__ = ("steps", "max_steps", "deadline", "limits")

    def __init__(self, limits: Limits):
        self.limits = limits
        self.steps = 0
        self.max_steps = limits.steps
        # CPU time of this thread, not the wall clock: the limit is there to stop a template that computes
        # too much, and on a busy machine a render the scheduler set aside for half a second was failed
        # for good (render_failed is final; 4 of 200,000 in bench_dispatch at load 12).
        self.deadline = time.thread_time() + limits.seconds

    def tick(self) -> None:
        self.steps += 1
        if self.steps > self.max_steps:
            raise _Stop(TemplateProblem("too_many_steps", limit=self.max_steps))
        if not self.steps & 255:
            self.check_clock()

    def check_clock(self) -> None:
        if time.thread_time() > self.deadline:
            raise _Stop(TemplateProblem("too_slow", limit=self.limits.seconds))


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("render_budget", default=None)


def _current_limits() -> Limits:
    budget = _budget.get()
    return budget.limits if budget is not None else default_limits()


def _tick() -> None:
    budget = _budget.get()
    if budget is not None:
        budget.tick()


def _check_size(value):
    """Refuse a value the template built that is over the size cap (after one step of growth, which
    is bounded by the template's own size: the unbounded growths are refused before they happen)."""
    if isinstance(value, str | list | tuple | dict):
        limit = _current_limits().output_chars
        if len(value) > limit:
            raise _Stop(TemplateProblem("value_too_big", limit=limit))
    elif isinstance(value, int) and not isinstance(value, bool):
        limit = _current_limits().int_bits
        if value.bit_length() > limit:
            raise _Stop(TemplateProblem("number_too_big", limit=limit))
    return value


def _check_width(value) -> None:
    limit = _current_limits().width_max
    try:
        width = abs(int(value)) if not isinstance(value, str) else len(value)
    except (TypeError, ValueError):
        return
    if width > limit:
        raise _Stop(TemplateProblem("width_too_big", value=width, limit=limit))


# Widths and precisions in a %-format ("%-99999s", "%.5000f").
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")


def _check_percent_format(fmt: str) -> None:
    for width, precision in _PERCENT_SPEC.findall(fmt):
        for number in (width, precision):
            if number == "*":
                raise _Stop(TemplateProblem("unsafe", detail="* in a format"))
            if number:
                _check_width(int(number))


def _check_brace_format(fmt: str) -> None:
    try:
        parsed = list(string.Formatter().parse(fmt))
    except ValueError as exc:
        raise _Stop(TemplateProblem("render_error", detail=str(exc))) from None
    for _literal, _name, spec, _conversion in parsed:
        if not spec:
            continue
        if "{" in spec:
            raise _Stop(TemplateProblem("unsafe", detail="nested {} in a format"))
        for number in _DIGITS.findall(spec):
            _check_width(int(number))


# --- The environment ----------------------------------------------------------------------------

# The only objects a template may look into; everything else in a context is opaque.
_PLAIN_TYPES = frozenset(
    {dict, list, tuple, str, Markup, LoopContext, Namespace, Cycler, Joiner, Macro, ChainableUndefined}
)
# String methods that pad or re-encode: refused outright (filters do the useful ones, within limits).
_STR_REFUSED = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs", "encode", "translate"})


def _safe_range(*args):
    limit = _current_limits().range_max
    rng = range(*args)
    if len(rng) > limit:
        raise _Stop(TemplateProblem("range_too_big", limit=limit))
    return rng


def _loop_guard(iterable):
    """Wraps every `{% for %}` (inserted by the parser hook below): each iteration is a step."""
    budget = _budget.get()
    if budget is None:
        yield from iterable
        return
    for item in iterable:
        budget.tick()
        yield item


@pass_eval_context
def _concat_guard(eval_ctx, parts):
    """`a ~ b`: joined as Jinja does (escaping when autoescaping), then size-checked."""
    if eval_ctx.autoescape:
        joined = Markup("").join(escape(p) if not isinstance(p, Markup) else p for p in parts)
    else:
        joined = "".join(str(p) for p in parts)
    return _check_size(joined)


def _filter_center(value, width=80):
    _check_width(width)
    return do_center(value, width)


def _filter_indent(value, width=4, first=False, blank=False):
    _check_width(width)
    return _check_size(do_indent(value, width, first, blank))


def _filter_format(value, *args, **kwargs):
    _check_percent_format(str(value))
    return _check_size(do_format(value, *args, **kwargs))


def _check_replace(s, old, new, count=None) -> None:
    text, old_s, new_s = str(s), str(old), str(new)
    growth = len(new_s) - len(old_s)
    if growth > 0:
        hits = text.count(old_s) if old_s else len(text) + 1
        if count is not None and int(count) >= 0:
            hits = min(hits, int(count))
        limit = _current_limits().output_chars
        if len(text) + hits * growth > limit:
            raise _Stop(TemplateProblem("value_too_big", limit=limit))


@pass_eval_context
def _filter_replace(eval_ctx, s, old, new, count=None):
    _check_replace(s, old, new, count)
    return do_replace(eval_ctx, s, old, new, count)


def _filter_batch(value, linecount, fill_with=None):
    _check_width(linecount)
    return do_batch(value, linecount, fill_with)


def _filter_slice(value, slices, fill_with=None):
    _check_width(slices)
    return do_slice(value, slices, fill_with)


def _filter_date(value, fmt="%Y-%m-%d"):
    """`{{ customer.birthday | date("%m月%d日") }}`: dates in contexts are ISO strings (plain data)."""
    if not value:
        return ""
    if len(str(fmt)) > 100:
        raise _Stop(TemplateProblem("width_too_big", value=len(str(fmt)), limit=100))
    try:
        moment = datetime.fromisoformat(str(value)) if "T" in str(value) else date.fromisoformat(str(value))
    except ValueError:
        return str(value)
    # strftime's own %-codes cannot pad (no widths in Python's), so the output is bounded by fmt.
    return moment.strftime(str(fmt))


# Filters whose result is never larger than their input: no size check needed (and `default`, in every
# other template, costs nothing extra).
_NON_GROWING_FILTERS = frozenset(
    {
        "default", "d", "length", "count", "first", "last", "int", "float", "abs", "round", "truncate",
        "wordcount", "upper", "lower", "title", "capitalize", "trim", "striptags", "safe", "sort", "unique",
        "reverse", "min", "max", "sum", "attr", "dictsort", "items", "select", "reject", "selectattr",
        "rejectattr", "map", "list", "random", "groupby",
    }
)  # fmt: skip


def _size_checked(func):
    def checked(*args, **kwargs):
        return _check_size(func(*args, **kwargs))

    for attr in ("jinja_pass_arg",):
        if hasattr(func, attr):
            setattr(checked, attr, getattr(func, attr))
    return checked


class Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    intercepted_unops = frozenset({"+", "-"})

    def __init__(self, *, html: bool):
        super().__init__(autoescape=html, undefined=ChainableUndefined, keep_trailing_newline=True)
        del self.globals["lipsum"]  # lipsum(10**7)
        self.globals["range"] = _safe_range
        # Every built-in filter's result is size-checked; the ones whose growth in one step is not
        # bounded by the template's size are checked before they run.
        for name, func in list(self.filters.items()):
            if name not in _NON_GROWING_FILTERS:
                self.filters[name] = _size_checked(func)
        self.filters.update(
            {
                "center": _filter_center,
                "indent": _filter_indent,
                "format": _filter_format,
                "replace": _filter_replace,
                "batch": _filter_batch,
                "slice": _filter_slice,
                "date": _filter_date,
                "_loop_guard": _loop_guard,
                "_concat_guard": _concat_guard,
            }
        )

    # The parser hook: wrap every for-loop's iterable and every `~` so that they count and are capped.
    def _parse(self, source, name, filename):
        return _Guard().visit(super()._parse(source, name, filename))

    def is_safe_attribute(self, obj, attr, value) -> bool:
        if type(obj) not in _PLAIN_TYPES:
            return False
        if isinstance(obj, str) and attr in _STR_REFUSED:
            return False
        return super().is_safe_attribute(obj, attr, value)

    def getattr(self, obj, attribute):
        # Contexts are dicts: `customer.name` is a key far more often than a method, so look it up first
        # (the sandbox's own order tries getattr, raises AttributeError, then the key: 3x slower).
        if type(obj) is dict:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)

    def unsafe_undefined(self, obj, attribute):
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe.")

    def wrap_str_format(self, value):
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = value.__self__

        def checked(*args, **kwargs):
            _check_brace_format(fmt)
            return _check_size(wrapped(*args, **kwargs))

        return checked

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - Jinja's own signature
        _tick()
        if getattr(__obj, "__name__", None) == "replace" and isinstance(
            getattr(__obj, "__self__", None), str
        ):
            _check_replace(__obj.__self__, *args, **kwargs)
        return _check_size(super().call(__context, __obj, *args, **kwargs))

    def call_binop(self, context, operator, left, right):
        _tick()
        limits = _current_limits()
        if operator == "*":
            if isinstance(left, int) and isinstance(right, str | list | tuple):
                left, right = right, left
            if isinstance(left, str | list | tuple) and isinstance(right, int):
                if len(left) * max(right, 0) > limits.output_chars:
                    raise _Stop(TemplateProblem("value_too_big", limit=limits.output_chars))
            elif isinstance(left, int) and isinstance(right, int):
                if left.bit_length() + right.bit_length() > limits.int_bits:
                    raise _Stop(TemplateProblem("number_too_big", limit=limits.int_bits))
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
                if right * left.bit_length() > limits.int_bits:
                    raise _Stop(TemplateProblem("number_too_big", limit=limits.int_bits))
            elif isinstance(right, int | float) and abs(right) > limits.int_bits:
                raise _Stop(TemplateProblem("number_too_big", limit=limits.int_bits))
        elif operator == "%" and isinstance(left, str):
            _check_percent_format(left)
        elif (
            operator == "+" and isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple)
        ):
            if len(left) + len(right) > limits.output_chars:
                raise _Stop(TemplateProblem("value_too_big", limit=limits.output_chars))
        return _check_size(self.binop_table[operator](left, right))


class _Guard(NodeTransformer):
    def visit_For(self, node):
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, "_loop_guard", [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node):
        self.generic_visit(node)
        parts = nodes.List(node.nodes, lineno=node.lineno)
        return nodes.Filter(parts, "_concat_guard", [], [], None, None, lineno=node.lineno)


_text_env = Sandbox(html=False)
_html_env = Sandbox(html=True)


# --- Compiling ----------------------------------------------------------------------------------


def _line_of(exc: BaseException, template=None) -> int | None:
    """The template line an exception was raised at: Jinja's own for syntax errors, otherwise the
    deepest frame of the compiled template mapped back to its source line."""
    line = getattr(exc, "lineno", None)
    if line:
        return line
    if template is None:
        return None
    tb = exc.__traceback__
    found = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            found = tb.tb_lineno
        tb = tb.tb_next
    return template.get_corresponding_lineno(found) if found else None


def template_parse(source: str, *, html: bool = False, limits: Limits | None = None) -> nodes.Template:
    """The AST of one field's source, or a TemplateProblem (syntax, too long) with the line."""
    limits = limits or default_limits()
    if len(source) > limits.source_chars:
        raise TemplateProblem("source_too_long", limit=limits.source_chars)
    env = _html_env if html else _text_env
    try:
        return env.parse(source)
    except JinjaSyntaxError as exc:
        raise TemplateProblem("syntax", line=exc.lineno, detail=exc.message or str(exc)) from None


def template_compile(source: str, *, html: bool = False, limits: Limits | None = None):
    """One field's compiled template (a jinja2.Template), or a TemplateProblem with the line."""
    limits = limits or default_limits()
    if len(source) > limits.source_chars:
        raise TemplateProblem("source_too_long", limit=limits.source_chars)
    env = _html_env if html else _text_env
    try:
        return env.from_string(source)
    except JinjaSyntaxError as exc:
        raise TemplateProblem("syntax", line=exc.lineno, detail=exc.message or str(exc)) from None


def render_compiled(template, context: dict, *, limits: Limits | None = None) -> str:
    """Render one compiled field within the limits; a TemplateProblem (with the line) otherwise."""
    return render_fields([("", template)], context, limits=limits)[""]


def render_fields(items, context: dict, *, limits: Limits | None = None) -> dict:
    """Render several compiled fields of one message ([(key, template)]) with one budget: the step and
    time limits hold for the message as a whole. A TemplateProblem names the field (`field`) and line."""
    limits = limits or default_limits()
    budget = _Budget(limits)
    token = _budget.set(budget)
    # One dict for every field: the sandbox's globals under the message's context, handed to Jinja as
    # the context's parent as it is (shared), not copied again for each field.
    merged = {**_text_env.globals, **context}
    results: dict = {}
    key, template = None, None
    try:
        for key, template in items:
            out: list[str] = []
            size = 0
            for chunk in template.root_render_func(template.new_context(merged, shared=True)):
                size += len(chunk)
                if size > limits.output_chars:
                    raise TemplateProblem("output_too_long", limit=limits.output_chars)
                out.append(chunk)
            results[key] = "".join(out)
        budget.check_clock()
    except _Stop as stop:
        stop.problem.line = stop.problem.line or _line_of(stop, template)
        stop.problem.field = key
        raise stop.problem from None
    except TemplateProblem as problem:
        problem.field = key
        raise
    except SecurityError as exc:
        raise TemplateProblem("unsafe", line=_line_of(exc, template), field=key, detail=str(exc)) from None
    except RecursionError:
        raise TemplateProblem("too_many_steps", field=key, limit=limits.steps) from None
    except MemoryError:
        raise TemplateProblem("value_too_big", field=key, limit=limits.output_chars) from None
    except (UndefinedError, TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as exc:
        raise TemplateProblem(
            "render_error", line=_line_of(exc, template), field=key, detail=f"{type(exc).__name__}: {exc}"
        ) from None
    finally:
        _budget.reset(token)
    return results


def render_string(source: str, context: dict, *, html: bool = False, limits: Limits | None = None) -> str:
    """Compile and render one source (tests, previews of unsaved text)."""
    return render_compiled(template_compile(source, html=html, limits=limits), context, limits=limits)


# --- Channels' fields ---------------------------------------------------------------------------

# (field, is HTML, required) per channel; WeChat's `data` is a mapping of key -> source, rendered as text.
CHANNEL_FIELDS: dict[str, tuple[tuple[str, bool, bool], ...]] = {
    "email": (("subject", False, True), ("html", True, False), ("text", False, False)),
    "sms": (("text", False, True),),
    "push": (("title", False, False), ("body", False, True)),
    "wechat": (("page", False, False), ("url", False, False)),
}
# WeChat fields copied as they are (ids and switches, not text a customer reads).
WECHAT_LITERAL_FIELDS = ("template_id", "kind")

# Subscription-message value limits by key type (WeChat's documented maximum lengths); a value rendered
# longer is cut with an ellipsis so that WeChat does not refuse the whole message (47003).
WECHAT_SUBSCRIBE_LIMITS = {
    "thing": 20,
    "character_string": 32,
    "number": 32,
    "letter": 32,
    "symbol": 5,
    "amount": 32,
    "phone_number": 17,
    "car_number": 8,
    "name": 10,
    "phrase": 5,
    "time": 32,
    "date": 32,
}
WECHAT_TEMPLATE_VALUE_MAX = 200
WECHAT_KEY = re.compile(r"^([a-z]+(?:_[a-z]+)*)(\d*)$")


def wechat_value_limit(kind: str, key: str) -> int:
    match = WECHAT_KEY.match(key)
    if kind == "subscribe" and match:
        return WECHAT_SUBSCRIBE_LIMITS.get(match.group(1), WECHAT_TEMPLATE_VALUE_MAX)
    return WECHAT_TEMPLATE_VALUE_MAX


def _cut(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: max(limit - 1, 0)] + "…"


@dataclass
class CompiledLanguage:
    fields: dict[str, object] = field(default_factory=dict)  # field -> compiled template
    literals: dict[str, str] = field(default_factory=dict)
    data: dict[str, object] = field(default_factory=dict)  # WeChat data key -> compiled template


@dataclass
class CompiledVersion:
    version_id: int
    channel: str
    languages: dict[str, CompiledLanguage]
    needs: frozenset[str]  # top-level context names the version uses (coupon, recommendations, ...)

    @property
    def default_language(self) -> str:
        return next(iter(self.languages))

    def language_for(self, wanted: str) -> str:
        if wanted in self.languages:
            return wanted
        fallback = settings.MESSAGING_DEFAULT_LANGUAGE
        return fallback if fallback in self.languages else self.default_language


def version_compile(
    *, version_id: int, channel: str, content: dict, limits: Limits | None = None
) -> CompiledVersion:
    """Every field of every language of a version, compiled. Raises TemplateProblem for the first field
    that does not compile (templates.template_save validates every field before saving, so a stored
    version compiles unless it was written around the service)."""
    languages: dict[str, CompiledLanguage] = {}
    needs: set[str] = set()
    for language, fields in content.items():
        compiled = CompiledLanguage()
        for name, html, _required in CHANNEL_FIELDS.get(channel, ()):
            source = fields.get(name) or ""
            if source:
                compiled.fields[name] = template_compile(source, html=html, limits=limits)
                needs |= names_used(source, html=html)
        if channel == "wechat":
            for name in WECHAT_LITERAL_FIELDS:
                compiled.literals[name] = str(fields.get(name) or "")
            for key, source in (fields.get("data") or {}).items():
                compiled.data[key] = template_compile(str(source), limits=limits)
                needs |= names_used(str(source))
        languages[language] = compiled
    if not languages:
        raise TemplateProblem("required")
    return CompiledVersion(
        version_id=version_id, channel=channel, languages=languages, needs=frozenset(needs)
    )


def names_used(source: str, *, html: bool = False) -> set[str]:
    """The top-level context names a source reads (`customer`, `coupon`, ...)."""
    return set(find_undeclared_variables(template_parse(source, html=html)))


def content_render(
    compiled: CompiledVersion, language: str, context: dict, *, limits: Limits | None = None
) -> dict:
    """The rendered fields of one language of a version, as the provider takes them."""
    lang = compiled.languages[language]
    items = list(lang.fields.items())
    if lang.data:
        items += [(("data", key), t) for key, t in lang.data.items()]
    rendered = render_fields(items, context, limits=limits)
    out: dict = {name: rendered[name] for name in lang.fields}
    if compiled.channel == "email":
        # A subject is one line whatever the template's line breaks.
        out["subject"] = " ".join(out.get("subject", "").split())
    if compiled.channel == "wechat":
        out.update(lang.literals)
        kind = lang.literals.get("kind") or "template"
        out["data"] = {
            key: _cut(rendered[("data", key)].strip(), wechat_value_limit(kind, key)) for key in lang.data
        }
    return out


# --- The per-process cache of compiled versions ---------------------------------------------------

_CACHE_SIZE = 512
_cache: OrderedDict[int, CompiledVersion] = OrderedDict()
_cache_lock = threading.Lock()


def compiled_version(version) -> CompiledVersion:
    """The compiled form of a TemplateVersion (its template's channel decides the fields), compiled on
    first use in this process and kept (versions never change)."""
    with _cache_lock:
        found = _cache.get(version.pk)
        if found is not None:
            _cache.move_to_end(version.pk)
            return found
    compiled = version_compile(
        version_id=version.pk, channel=version.template.channel, content=version.content
    )
    with _cache_lock:
        _cache[version.pk] = compiled
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return compiled


def compiled_versions(version_ids) -> dict[int, CompiledVersion | TemplateProblem]:
    """Compiled versions by id: from this process's cache, the others read in one query and compiled."""
    from campaigns.models import TemplateVersion

    found: dict[int, CompiledVersion | TemplateProblem] = {}
    with _cache_lock:
        for pk in version_ids:
            if pk in _cache:
                found[pk] = _cache[pk]
    missing = [pk for pk in version_ids if pk not in found]
    if missing:
        for version in TemplateVersion.objects.filter(pk__in=missing).select_related("template"):
            try:
                found[version.pk] = compiled_version(version)
            except TemplateProblem as problem:
                found[version.pk] = problem
    return found


def compiled_cache_clear() -> None:
    with _cache_lock:
        _cache.clear()


# --- Rendering a batch of outbox messages -----------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    message_id: int
    version_id: int
    content: dict  # the channel's fields, rendered
    subject: str
    links: list[str]
    language: str


@dataclass(frozen=True)
class RenderError:
    message_id: int
    version_id: int | None
    code: str  # a PROBLEMS code
    params: dict
    # What the outbox stores on the message (campaigns/reasons.py).
    reason: str = "render_failed"
    reason_params: dict = field(default_factory=dict)

    @property
    def error(self) -> str:
        """The problem in words, as the outbox stores it with the reason."""
        return self.reason_params.get("error", self.code)


_URL = re.compile(r"""https?://[^\s"'<>]+""")


def links_found(content: dict) -> list[str]:
    """The URLs in rendered content, first seen first (the tracking helper rewrites these)."""
    seen: dict[str, None] = {}
    for value in content.values():
        texts = value.values() if isinstance(value, dict) else [value]
        for text in texts:
            if isinstance(text, str) and "http" in text:
                for url in _URL.findall(text):
                    seen.setdefault(url.rstrip(".,;)"), None)
    return list(seen)


def render_batch(*, messages, now: datetime) -> list[Rendered | RenderError]:
    """Render a batch of outbox messages, one result per message, in their order.

    Each message is rendered from the version it records (`template_version`), or, for one not rendered
    before, from its template's current version, so a message keeps its version after the template
    changes. Contexts are built for the whole batch in a few queries (services.personalisation); a
    template that cannot render gives that message a RenderError, never the batch an exception."""
    from campaigns.services.personalisation import contexts_build, versions_for_messages

    messages = list(messages)
    if not messages:
        return []
    version_of = versions_for_messages(messages)
    compiled = compiled_versions({pk for pk in version_of.values() if pk is not None})
    needs = {
        m.pk: entry.needs
        for m in messages
        if isinstance(entry := compiled.get(version_of[m.pk]), CompiledVersion)
    }
    contexts = contexts_build(messages=messages, needs=needs, now=now)
    limits = default_limits()
    results: list[Rendered | RenderError] = []
    for message in messages:
        version_id = version_of[message.pk]
        entry = compiled.get(version_id) if version_id is not None else None
        if entry is None:
            results.append(_render_error(message.pk, version_id, TemplateProblem("required")))
            continue
        if isinstance(entry, TemplateProblem):
            results.append(_render_error(message.pk, version_id, entry))
            continue
        wanted, context = contexts[message.pk]
        language = entry.language_for(wanted)
        try:
            content = content_render(entry, language, context, limits=limits)
        except TemplateProblem as problem:
            results.append(_render_error(message.pk, version_id, problem))
            continue
        results.append(
            Rendered(
                message_id=message.pk,
                version_id=version_id,
                content=content,
                subject=content.get("subject") or content.get("title") or "",
                links=links_found(content),
                language=language,
            )
        )
    return results


def _render_error(message_id: int, version_id: int | None, problem: TemplateProblem) -> RenderError:
    field_name = "/".join(problem.field) if isinstance(problem.field, tuple) else problem.field
    params = {"line": problem.line, "field": field_name, **{k: str(v) for k, v in problem.params.items()}}
    return RenderError(
        message_id=message_id,
        version_id=version_id,
        code=problem.code,
        params=params,
        reason_params={"error": f"{field_name}: {problem.text()}" if field_name else problem.text()},
    )


def context_is_plain(value, *, depth: int = 0) -> bool:
    """Whether a context holds only plain values (dict with str keys, list, str, numbers, None)."""
    if depth > 20:
        return False
    if value is None or type(value) in (str, int, float, bool):
        return True
    if type(value) is dict:
        return all(type(k) is str and context_is_plain(v, depth=depth + 1) for k, v in value.items())
    if type(value) in (list, tuple):
        return all(context_is_plain(v, depth=depth + 1) for v in value)
    return False


__all__ = [
    "CHANNEL_FIELDS",
    "CompiledVersion",
    "Context",
    "Limits",
    "RenderError",
    "Rendered",
    "Sandbox",
    "TemplateProblem",
    "compiled_version",
    "content_render",
    "render_batch",
    "render_compiled",
    "render_string",
    "template_compile",
    "template_parse",
    "version_compile",
]
