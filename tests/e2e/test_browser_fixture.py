import re

from playwright.sync_api import expect


def test_staff_user_logs_in_to_the_admin_through_the_browser(page, admin_user):
    page.goto("/admin/login/")
    page.fill("#id_username", admin_user.username)
    page.fill("#id_password", "password")  # pytest-django's admin_user password
    page.click("input[type=submit]")

    expect(page).to_have_url(re.compile(r"/admin/$"))
    expect(page.locator("#user-tools")).to_contain_text(admin_user.username)
