import re

from playwright.sync_api import expect


def test_staff_user_logs_in_to_the_admin_through_the_browser(page, admin_user):
    page.goto("/admin/login/")
    page.fill("#id_username", admin_user.username)
    page.fill("#id_password", "password")  # pytest-django's admin_user password
    page.click("#login-form [type=submit]")  # unfold's login has a <button>

    expect(page).to_have_url(re.compile(r"/admin/$"))
    expect(page.locator("#nav-sidebar-inner")).to_contain_text(admin_user.username)  # unfold: the user menu
