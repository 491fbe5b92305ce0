"""The third-party admins in the unfold theme. auth, django-celery-beat and django-axes register plain
Django ModelAdmins; each is registered again here as the package's own class with unfold's ModelAdmin mixed
in (their behaviour, unfold's templates). config/ runs last in INSTALLED_APPS, so theirs already exist."""

from axes import admin as axes_admin
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin
from django.contrib.auth import admin as auth_admin
from django.contrib.auth.models import Group, User
from django.utils.translation import gettext_lazy as _
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)
from unfold.admin import ModelAdmin
from unfold.forms import AdminPasswordChangeForm, UserChangeForm, UserCreationForm


class UserAdmin(auth_admin.UserAdmin, ModelAdmin):
    form = UserChangeForm
    add_form = UserCreationForm
    change_password_form = AdminPasswordChangeForm


class GroupAdmin(auth_admin.GroupAdmin, ModelAdmin):
    pass


class PeriodicTaskAdmin(beat_admin.PeriodicTaskAdmin, ModelAdmin):
    pass


class ClockedScheduleAdmin(beat_admin.ClockedScheduleAdmin, ModelAdmin):
    pass


class CrontabScheduleAdmin(beat_admin.CrontabScheduleAdmin, ModelAdmin):
    pass


class SolarScheduleAdmin(beat_admin.SolarScheduleAdmin, ModelAdmin):
    pass


class IntervalScheduleAdmin(beat_admin.IntervalScheduleAdmin, ModelAdmin):
    pass


class AccessAttemptAdmin(axes_admin.AccessAttemptAdmin, ModelAdmin):
    # axes gives these two columns no label, so Django shows their method names in English.
    @admin.display(description=_("Expiration"))
    def expiration(self, obj):
        return super().expiration(obj)

    @admin.display(description=_("Status"))
    def status(self, obj):
        return super().status(obj)


class AccessLogAdmin(axes_admin.AccessLogAdmin, ModelAdmin):
    pass


class AccessFailureLogAdmin(axes_admin.AccessFailureLogAdmin, ModelAdmin):
    pass


THEMED = {
    User: UserAdmin,
    Group: GroupAdmin,
    PeriodicTask: PeriodicTaskAdmin,
    ClockedSchedule: ClockedScheduleAdmin,
    CrontabSchedule: CrontabScheduleAdmin,
    SolarSchedule: SolarScheduleAdmin,
    IntervalSchedule: IntervalScheduleAdmin,
    AccessAttempt: AccessAttemptAdmin,
    AccessLog: AccessLogAdmin,
    AccessFailureLog: AccessFailureLogAdmin,
}

for model, model_admin in THEMED.items():
    if admin.site.is_registered(model):  # axes registers its admins only while AXES_ENABLE_ADMIN is on
        admin.site.unregister(model)
        admin.site.register(model, model_admin)
