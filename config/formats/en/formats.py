"""English date formats (FORMAT_MODULE_PATH), replacing Django's US defaults ("Nov. 11, 2026, midnight"):
day before month with the month's abbreviation, which no reader can misread, and a 24-hour clock, as the
brand's Chinese-speaking staff and every campaign schedule use. Times are shown in the business time
zone (settings.TIME_ZONE)."""

DATE_FORMAT = "j M Y"  # 11 Nov 2026
TIME_FORMAT = "H:i"  # 00:00
DATETIME_FORMAT = "j M Y, H:i"  # 11 Nov 2026, 00:00
YEAR_MONTH_FORMAT = "M Y"  # Nov 2026
MONTH_DAY_FORMAT = "j M"  # 11 Nov
SHORT_DATE_FORMAT = "j M Y"
SHORT_DATETIME_FORMAT = "j M Y, H:i"
FIRST_DAY_OF_WEEK = 1  # Monday, as in China
