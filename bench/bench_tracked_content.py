"""tracked_content on the send path: messages per second per core for a marketing email (10 distinct links,
in both the HTML and the text part) and a marketing SMS (one link, the opt-out text). Pure Python, no
queries (the SMS gets the DeliverySettings row passed in, as the outbox does once per batch).

    DJANGO_ENV=test .venv/bin/python bench/bench_tracked_content.py [--runs 5]
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from campaigns.models import DeliverySettings  # noqa: E402
from campaigns.services.tracking import tracked_content  # noqa: E402

LINKS = "".join(f'<p>Item {i} <a href="https://brand.cn/p/{i}?utm=x&amp;y=1">buy</a></p>' for i in range(10))
HTML = f"<html><body>{LINKS}{'<p>王芳 你好，双11大促，全场五折。</p>' * 20}</body></html>"
TEXT = " ".join(f"https://brand.cn/p/{i}" for i in range(10)) + " 你好" * 200


def rate(n: int, runs: int, *args, **kwargs) -> list[float]:
    # Per CPU second of this process: on the shared machine the wall time also counts other processes'
    # turns on the two cores (the wall rate is printed too).
    out, wall = [], []
    for _ in range(runs):
        start, cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            tracked_content(1000 + i, *args, **kwargs)
        out.append(n / (time.process_time() - cpu))
        wall.append(n / (time.perf_counter() - start))
    print(f"  wall: median {statistics.median(wall):,.0f}/s", flush=True)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    email = rate(
        5000, runs, {"subject": "双11", "html": HTML, "text": TEXT}, "email", "marketing", language="zh-hans"
    )
    sms = rate(
        20000,
        runs,
        {"text": "双11大促 https://brand.cn/s11 速来"},
        "sms",
        "marketing",
        language="zh-hans",
        delivery_settings=DeliverySettings(pk=1),
    )
    print(
        f"email, 10 links, {len(HTML)} B HTML: median {statistics.median(email):,.0f} messages per CPU second"
    )
    print(f"sms, 1 link: median {statistics.median(sms):,.0f} messages per CPU second")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
