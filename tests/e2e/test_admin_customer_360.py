"""In a real browser: a staff member logs in, finds a customer by phone and by name, and reads the 360 page."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from crm.models import ConsentStatus, OrderLine, Tag
from crm.services.consent import consent_set
from crm.services.tags import customer_tag_add
from tests.factories import CustomerFactory, EventFactory, OrderFactory

pytestmark = pytest.mark.e2e

SCREENSHOT = "/tmp/e2e_360.png"


@pytest.fixture
def customer():
    now = timezone.now()
    customer = CustomerFactory(
        name="王芳",
        email="wang.fang@example.cn",
        phone="+8613800138000",
        city="上海",
        acquisition_channel="tmall",
    )
    for name in (
        "李娜",
        "张伟",
        "Emily Chen",
    ):  # others in the list, so the search has something to leave out
        CustomerFactory(name=name)
    order = OrderFactory(
        customer=customer,
        external_id="TM-2026-0001",
        total=Decimal("258.00"),
        placed_at=now - timedelta(days=2),
    )
    OrderLine.objects.create(
        order=order,
        line_no=1,
        sku="WIPES-80",
        name="婴儿湿巾 Baby wipes",
        quantity=2,
        unit_price=79,
        line_total=158,
    )
    OrderLine.objects.create(
        order=order,
        line_no=2,
        sku="FOLIC-1",
        name="孕妇叶酸 Folic acid",
        quantity=1,
        unit_price=100,
        line_total=100,
    )
    EventFactory(customer=customer, type="page_view", properties={"path": "/products/wipes"}, occurred_at=now)
    EventFactory(customer=customer, type="add_to_cart", properties={"sku": "WIPES-80"}, occurred_at=now)
    consent_set(customer=customer, channel="sms", status=ConsentStatus.OPTED_IN, source="tmall signup")
    customer_tag_add(customer=customer, tag=Tag.objects.create(name="孕期妈妈"))
    return customer


def test_staff_finds_a_customer_and_reads_the_360_page(page, admin_user, customer):
    page.goto("/admin/login/")
    page.fill("#id_username", admin_user.username)
    page.fill("#id_password", "password")  # pytest-django's admin_user
    page.click("#login-form [type=submit]")  # unfold's login has a <button>
    expect(page).to_have_url(re.compile(r"/admin/$"))

    # By phone, typed the way a customer reads it out.
    page.goto("/admin/crm/customer/")
    page.fill("#searchbar", "138 0013 8000")
    page.press("#searchbar", "Enter")
    results = page.locator("#result_list tbody tr")
    expect(results).to_have_count(1)
    expect(results.first).to_contain_text("王芳")

    # By name.
    page.fill("#searchbar", "王芳")
    page.press("#searchbar", "Enter")
    expect(results).to_have_count(1)
    results.first.get_by_role("link", name="王芳").click()

    expect(page).to_have_url(re.compile(rf"/admin/crm/customer/{customer.pk}/change/"))
    expect(page.locator(".c360-name")).to_have_text("王芳")
    orders = page.locator("#orders")
    expect(orders).to_contain_text("TM-2026-0001")
    expect(orders).to_contain_text("婴儿湿巾 Baby wipes")
    timeline = page.locator("#timeline")
    expect(timeline).to_contain_text("Added to cart")
    expect(timeline).to_contain_text("Page viewed")
    expect(page.locator("#consents")).to_contain_text("Opted in")
    expect(page.locator("#tags")).to_contain_text("孕期妈妈")
    expect(page.locator("#panel-points")).to_be_visible()

    page.set_viewport_size({"width": 1280, "height": 900})
    page.screenshot(path=SCREENSHOT, full_page=True)

    # Mobile width: one column, nothing wider than the screen.
    page.set_viewport_size({"width": 390, "height": 844})
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 1
    page.screenshot(path=SCREENSHOT.replace(".png", "_mobile.png"), full_page=True)
