"""Simplified Chinese date formats (FORMAT_MODULE_PATH): 2026年11月11日 00:00. Django's own zh_Hans
formats say the same except the month-day form, which pads the month ("09月5日"); they are written out
here so that the product's formats do not change with a Django upgrade. Times are shown in the business
time zone (settings.TIME_ZONE)."""

DATE_FORMAT = "Y年n月j日"  # 2026年11月11日
TIME_FORMAT = "H:i"  # 00:00
DATETIME_FORMAT = "Y年n月j日 H:i"  # 2026年11月11日 00:00
YEAR_MONTH_FORMAT = "Y年n月"  # 2026年11月
MONTH_DAY_FORMAT = "n月j日"  # 11月11日
SHORT_DATE_FORMAT = "Y年n月j日"
SHORT_DATETIME_FORMAT = "Y年n月j日 H:i"
FIRST_DAY_OF_WEEK = 1  # 星期一
# Grouped numbers (floatformat:"g", the admin home page's figures) in threes with a comma, as Chinese
# storefronts and reports write amounts (¥52,962); Django's zh_Hans leaves the separator empty.
THOUSAND_SEPARATOR = ","
NUMBER_GROUPING = 3
