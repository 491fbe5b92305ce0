"""The template sandbox: what staff write is untrusted code. Escapes fail with a clear problem and the
line; explosions in size or time are refused before they cost the worker its memory or minutes."""

import time

import pytest
from django.utils import translation

from campaigns.rendering import Limits, TemplateProblem, render_string

CTX = {"customer": {"name": "王芳", "city": "上海"}, "data": {"items": [1, 2, 3]}}


def problem_of(source, *, limits=None, html=False, ctx=CTX) -> TemplateProblem:
    with pytest.raises(TemplateProblem) as caught:
        render_string(source, ctx, html=html, limits=limits)
    return caught.value


def test_plain_values_render():
    assert render_string("{{ customer.name }}在{{ customer.city }}", CTX) == "王芳在上海"
    assert render_string("{% for i in data.items %}{{ i }}{% endfor %}", CTX) == "123"


def test_default_applies_to_missing_values():
    assert render_string('{{ customer.nickname | default("亲爱的会员") }}', CTX) == "亲爱的会员"
    assert render_string('{{ nobody.name | default("亲爱的会员") }}', CTX) == "亲爱的会员"


def test_html_fields_escape_and_text_fields_do_not():
    ctx = {"customer": {"name": "<script>x</script>"}}
    assert (
        render_string("<b>{{ customer.name }}</b>", ctx, html=True) == "<b>&lt;script&gt;x&lt;/script&gt;</b>"
    )
    assert render_string("{{ customer.name }}", ctx) == "<script>x</script>"


@pytest.mark.parametrize(
    "source",
    [
        "{{ customer.__class__ }}",
        "{{ customer.__class__.__mro__[1].__subclasses__() }}",
        "{{ ''.__class__.mro() }}",
        "{{ ''.__class__.__base__.__subclasses__() }}",
        "{{ range.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ namespace.__init__.__globals__ }}",
        "{{ joiner.__init__.__globals__['__builtins__'] }}",
        "{{ '{0.__class__.__mro__}'.format(customer) }}",
        "{{ '{0.__class__}'.format_map({'0': customer}) }}",
        "{{ customer.items.__self__.__class__ }}",
        "{{ customer.pop('name') }}",
        "{{ data['items'].append(4) }}",
        "{{ (1).to_bytes(100000000, 'big') }}",
        "{{ self.__init__.__globals__ }}",
    ],
)
def test_attribute_walks_and_format_tricks_fail(source):
    problem = problem_of(source)
    assert problem.code in {"unsafe", "render_error"}, problem
    assert problem.line == 1


def test_an_escape_attempt_is_reported_on_its_line():
    problem = problem_of("你好\n{{ customer.name }}\n{{ customer.__class__.__mro__ }}")
    assert problem.code == "unsafe"
    assert problem.line == 3
    with translation.override("en"):  # whatever language an earlier test left active
        assert "line 3" in problem.text()


@pytest.mark.parametrize(
    ("source", "code"),
    [
        ("{{ 'a' * 10**7 }}", "value_too_big"),
        ("{{ 'a' * 10000000 }}", "value_too_big"),
        ("{{ [1, 2] * 10000000 }}", "value_too_big"),
        ("{{ 10**10000 }}", "number_too_big"),
        ("{% set x = 10**300 %}{% set x = x * x %}{% set x = x * x %}{% set x = x * x %}{{ x * x }}", "number_too_big"),
        ("{{ '%99999999s' % 1 }}", "width_too_big"),
        ("{{ '%99999999s' | format(1) }}", "width_too_big"),
        ("{{ '{:>99999999}'.format(1) }}", "width_too_big"),
        ("{{ '{:{}}'.format(1, 99999999) }}", "unsafe"),
        ("{{ 'a' | center(100000000) }}", "width_too_big"),
        ("{{ 'a' | indent(100000000) }}", "width_too_big"),
        ("{{ 'a'.ljust(100000000) }}", "unsafe"),
        ("{{ [1] | batch(100000000, 'x') | list }}", "width_too_big"),
        ("{{ 'a'.replace('a', 'a' * 1000).replace('a', 'a' * 1000) }}", "value_too_big"),
        ("{{ 'aaaa' | replace('a', 'a' * 1000) | replace('a', 'a' * 1000) }}", "value_too_big"),
        ("{% set s = 'a' * 1000 %}{% set s = [s, s, s, s, s, s, s, s, s, s] | join %}"
         "{% set s = [s, s, s, s, s, s, s, s, s, s] | join %}{{ [s, s, s, s, s, s, s, s, s, s] | join }}",
         "value_too_big"),
        ("{% set s = 'a' * 1000 %}{% set s = s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s %}"
         "{% set s = s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s %}{{ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s }}",
         "value_too_big"),
        ("{% for i in range(10**9) %}{% endfor %}", "range_too_big"),
        ("{% for i in range(100000) %}x{% endfor %}", "range_too_big"),
        ("{{ lipsum(100000) }}", "render_error"),
    ],
)  # fmt: skip
def test_explosions_are_refused_before_they_happen(source, code):
    started = time.perf_counter()
    problem = problem_of(source)
    assert problem.code == code, problem
    # Refused, not computed: a 10**7-character string or a 10**10000 integer takes seconds and
    # megabytes; a refusal takes microseconds (generous bound for a slow machine).
    assert time.perf_counter() - started < 2


def test_output_bigger_than_the_cap_stops_the_render():
    limits = Limits(output_chars=10_000)
    problem = problem_of("{% for i in range(6000) %}{{ customer.name }}{% endfor %}", limits=limits)
    assert problem.code == "output_too_long"
    assert "10000" in problem.text()
    # With the default cap (256,000 characters): a million characters of output never gets built.
    problem = problem_of("{% for i in range(10000) %}{{ 'x' * 100 }}{% endfor %}")
    assert problem.code == "output_too_long"


def test_template_source_size_is_capped():
    problem = problem_of("x" * 70_000)
    assert problem.code == "source_too_long"


def test_nested_loops_beyond_the_step_budget_stop():
    started = time.perf_counter()
    problem = problem_of(
        "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}"
        "{% endfor %}{% endfor %}{% endfor %}"
    )
    assert problem.code == "too_many_steps"
    assert time.perf_counter() - started < 10


def test_nested_loops_beyond_the_time_limit_stop():
    # A generous step budget: the clock, checked every 256 steps, is what stops it.
    limits = Limits(steps=10**9, seconds=0.05)
    started = time.perf_counter()
    problem = problem_of(
        "{% for a in range(10000) %}{% for b in range(10000) %}{{ '' }}{% endfor %}{% endfor %}",
        limits=limits,
    )
    assert problem.code == "too_slow"
    assert time.perf_counter() - started < 10


def test_runaway_recursion_in_a_macro_stops():
    problem = problem_of("{% macro f(n) %}{{ f(n) }}{{ f(n) }}{% endmacro %}{{ f(1) }}")
    assert problem.code == "too_many_steps"


def test_objects_other_than_plain_data_are_opaque():
    class Secret:
        token = "s3cret"

        def delete(self):  # pragma: no cover - must never run
            raise AssertionError("called")

    problem = problem_of("{{ obj.token }}", ctx={"obj": Secret()})
    assert problem.code == "unsafe"


def test_syntax_error_names_the_line():
    with pytest.raises(TemplateProblem) as caught:
        render_string("一\n二\n{% if customer.name %}三", CTX)
    assert caught.value.code == "syntax"
    assert caught.value.line == 3
