"""`manage.py seed_demo --customers N [--events-per-customer M] [--seed S]`: a believable demo world.

A maternity & baby / beauty / snacks brand selling in China over two years up to now: customers with
Chinese names (pinyin or an English name beside), cities, WeChat/Tmall/JD/app/web/store channels and their
identifiers (wechat_openid, tmall_buyer_id, jd_buyer_id, app_device_id), consents with their history, tags
(孕妈, 母婴, VIP, ...), a product catalogue with CNY prices, orders with lines and some refunds, and
behaviour events:

- purchase frequency is skewed: a quarter never buy, half of the buyers buy once, a few buy often
  (1 + negative binomial); amounts follow the catalogue prices, quantities and promotions (long-tailed);
- about 40% of buyers went dormant (last order more than 180 days ago), among them high-value sleepers;
- cart abandonment sequences (product_view -> add_to_cart -> checkout_started, no order), many in the
  last two weeks; browsing before orders, often the whole funnel (view, cart, checkout, order); tracked
  visits with UTM parameters before half of the orders (attribution's touches); events spread over two
  years, denser for active customers;
- N x M events in all (order_placed and order_refunded included).

Idempotent: demo customers have external ids starting with "DEMO-"; if any exists the command says the
database is already seeded and does nothing. Everything is written in one transaction (all or nothing).

Fast: columns are generated with NumPy in blocks of customers and written with COPY on PostgreSQL
(1,000,000 customers and 10,000,000 events in a few minutes; see BENCHMARKS.md); SQLite, used by
`make run` with a small N, gets the same rows through executemany. No audit history rows are written for
demo data.
"""

from __future__ import annotations

import json
import queue
import struct
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
from django.apps import apps
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, models, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from crm.db import foreign_key_triggers_off_sql
from crm.models import AcquisitionCost, Customer, Product, Tag
from crm.services.orders import payload_fingerprint
from crm.services.refunds import refund_fingerprint

# Mobile prefixes of the three carriers that phonenumbers' +86 plan holds valid in full.
MOBILE_PREFIXES = (
    *range(130, 140),
    150,
    151,
    152,
    153,
    155,
    156,
    157,
    158,
    159,
    166,
    177,
    *range(180, 190),
    198,
    199,
)

MARKER = "DEMO-"
BLOCK = 100_000  # customers generated and written together
DAY = 86_400
LOCK_KEY = 0x5EED_DE30  # pg_advisory_xact_lock: two seeders at once queue up instead of both writing

# --- The world -------------------------------------------------------------------------------------

SURNAMES = [
    ("王", "Wang", 7.2), ("李", "Li", 7.0), ("张", "Zhang", 6.7), ("刘", "Liu", 5.3), ("陈", "Chen", 4.5),
    ("杨", "Yang", 3.1), ("黄", "Huang", 2.2), ("赵", "Zhao", 2.0), ("吴", "Wu", 1.9), ("周", "Zhou", 1.9),
    ("徐", "Xu", 1.5), ("孙", "Sun", 1.4), ("马", "Ma", 1.3), ("朱", "Zhu", 1.3), ("胡", "Hu", 1.1),
    ("郭", "Guo", 1.1), ("何", "He", 1.0), ("林", "Lin", 1.0), ("高", "Gao", 1.0), ("罗", "Luo", 0.9),
    ("郑", "Zheng", 0.9), ("梁", "Liang", 0.8), ("谢", "Xie", 0.7), ("宋", "Song", 0.6), ("唐", "Tang", 0.6),
    ("韩", "Han", 0.5), ("冯", "Feng", 0.5), ("邓", "Deng", 0.5), ("曹", "Cao", 0.5), ("彭", "Peng", 0.5),
]  # fmt: skip
FEMALE_GIVEN = [
    ("芳", "Fang"), ("娜", "Na"), ("敏", "Min"), ("静", "Jing"), ("丽", "Li"), ("艳", "Yan"), ("婷", "Ting"),
    ("雪", "Xue"), ("琳", "Lin"), ("欣怡", "Xinyi"), ("梓涵", "Zihan"), ("诗涵", "Shihan"), ("雨桐", "Yutong"),
    ("佳怡", "Jiayi"), ("思雨", "Siyu"), ("晓燕", "Xiaoyan"), ("慧敏", "Huimin"), ("玉兰", "Yulan"),
    ("秀英", "Xiuying"), ("丹", "Dan"), ("萍", "Ping"), ("倩", "Qian"), ("颖", "Ying"), ("悦", "Yue"),
    ("可馨", "Kexin"), ("梦瑶", "Mengyao"), ("海燕", "Haiyan"), ("文静", "Wenjing"), ("雅琪", "Yaqi"), ("露", "Lu"),
]  # fmt: skip
MALE_GIVEN = [
    ("伟", "Wei"), ("磊", "Lei"), ("强", "Qiang"), ("军", "Jun"), ("勇", "Yong"), ("杰", "Jie"), ("涛", "Tao"),
    ("明", "Ming"), ("超", "Chao"), ("浩然", "Haoran"), ("子轩", "Zixuan"), ("宇航", "Yuhang"), ("俊杰", "Junjie"),
    ("建华", "Jianhua"), ("志强", "Zhiqiang"), ("晓东", "Xiaodong"), ("鹏", "Peng"), ("斌", "Bin"), ("刚", "Gang"),
    ("毅", "Yi"),
]  # fmt: skip
ENGLISH = (
    ["Emily", "Grace", "Sophia", "Chloe", "Mia", "Ivy", "Lily", "Vivian", "Cindy", "Amy", "Coco", "Fiona"],
    ["Lucas", "Oliver", "Ethan", "Leo", "Kevin", "Jason", "Eric", "David"],
)
EMAIL_DOMAINS = (["qq.com", "163.com", "126.com", "sina.com", "gmail.com", "outlook.com", "foxmail.com"],
                 [0.38, 0.22, 0.1, 0.06, 0.1, 0.08, 0.06])  # fmt: skip
CITIES = [
    # city, region, time zone, weight
    ("上海", "上海", "Asia/Shanghai", 9), ("北京", "北京", "Asia/Shanghai", 8), ("广州", "广东", "Asia/Shanghai", 6),
    ("深圳", "广东", "Asia/Shanghai", 6), ("杭州", "浙江", "Asia/Shanghai", 5), ("成都", "四川", "Asia/Shanghai", 5),
    ("武汉", "湖北", "Asia/Shanghai", 4), ("南京", "江苏", "Asia/Shanghai", 4), ("重庆", "重庆", "Asia/Shanghai", 4),
    ("西安", "陕西", "Asia/Shanghai", 3), ("苏州", "江苏", "Asia/Shanghai", 3), ("天津", "天津", "Asia/Shanghai", 3),
    ("长沙", "湖南", "Asia/Shanghai", 3), ("郑州", "河南", "Asia/Shanghai", 3), ("青岛", "山东", "Asia/Shanghai", 2),
    ("厦门", "福建", "Asia/Shanghai", 2), ("昆明", "云南", "Asia/Shanghai", 2), ("沈阳", "辽宁", "Asia/Shanghai", 2),
    ("哈尔滨", "黑龙江", "Asia/Shanghai", 1.5), ("乌鲁木齐", "新疆", "Asia/Shanghai", 1), ("佛山", "广东", "Asia/Shanghai", 2),
    ("宁波", "浙江", "Asia/Shanghai", 2), ("合肥", "安徽", "Asia/Shanghai", 2), ("福州", "福建", "Asia/Shanghai", 1.5),
    ("香港", "香港", "Asia/Hong_Kong", 0.8), ("新加坡", "Singapore", "Asia/Singapore", 0.4),
    ("温哥华", "British Columbia", "America/Vancouver", 0.3), ("悉尼", "New South Wales", "Australia/Sydney", 0.3),
]  # fmt: skip
CHANNELS = ["wechat", "tmall", "jd", "app", "web", "store"]
WECHAT, APP, WEB, STORE = 0, 3, 4, 5
CHANNEL_P = [0.34, 0.24, 0.15, 0.11, 0.09, 0.07]
STORES = ["上海南京西路店", "北京三里屯店", "广州天河城店", "深圳万象城店", "杭州湖滨银泰店", "成都太古里店"]
UTM = {
    "source": ["wechat", "xiaohongshu", "douyin", "baidu", "weibo", "bilibili"],
    "medium": ["social", "kol", "cpc", "organic", "live"],
    "campaign": ["618大促", "双11", "38女王节", "年货节", "新客礼包", "母婴节", "会员日"],
}
# The medium each source's visits come through, and the landing pages of tracked visits.
UTM_MEDIUM = {"wechat": "social", "xiaohongshu": "kol", "douyin": "live", "baidu": "cpc", "weibo": "social",
              "bilibili": "kol"}  # fmt: skip
LANDING = ["/activity/618", "/activity/double11", "/category/baby", "/category/beauty", "/", "/category/maternity",
           "/member/coupons"]  # fmt: skip
# One rendered property set per (source, campaign), source-major.
TRACKED_VISITS = [
    json.dumps(
        {"path": LANDING[c], "utm_source": s, "utm_medium": UTM_MEDIUM[s], "utm_campaign": campaign},
        ensure_ascii=False,
    )
    for s in UTM["source"]
    for c, campaign in enumerate(UTM["campaign"])
]
CATEGORIES = ["maternity", "baby", "beauty", "snacks"]
CATEGORY_P = [0.15, 0.35, 0.3, 0.2]
PRODUCTS = {
    "maternity": [
        ("MAT-FOLIC", "孕妇叶酸片 Folic acid tablets", 8900), ("MAT-DHA", "孕妇DHA藻油 Prenatal DHA", 26800),
        ("MAT-MILK", "孕妇配方奶粉 Maternal milk powder", 19800), ("MAT-CALCIUM", "孕妇钙片 Prenatal calcium", 12800),
        ("MAT-BELT", "托腹带 Maternity support belt", 7900), ("MAT-PILLOW", "孕妇U型枕 Pregnancy pillow", 15900),
        ("MAT-DRESS", "孕妇连衣裙 Maternity dress", 19900), ("MAT-OIL", "妊娠纹护理油 Stretch mark oil", 16800),
        ("MAT-PUMP", "电动吸奶器 Electric breast pump", 69900), ("MAT-PADS", "防溢乳垫 Nursing pads", 4990),
        ("MAT-BRA", "哺乳文胸 Nursing bra", 12900), ("MAT-SHIELD", "防辐射服 Radiation-shield top", 25900),
    ],
    "baby": [
        ("BABY-DIAPER-S", "纸尿裤 S码 Diapers S", 12900), ("BABY-DIAPER-M", "纸尿裤 M码 Diapers M", 13900),
        ("BABY-DIAPER-L", "纸尿裤 L码 Diapers L", 14900), ("BABY-DIAPER-XL", "纸尿裤 XL码 Diapers XL", 15900),
        ("BABY-PANTS-L", "拉拉裤 L码 Pull-ups L", 14900), ("BABY-WIPES", "婴儿湿巾 80抽 Baby wipes", 3990),
        ("BABY-FORMULA-1", "婴儿奶粉 1段 Infant formula stage 1", 32800),
        ("BABY-FORMULA-2", "婴儿奶粉 2段 Infant formula stage 2", 29800),
        ("BABY-FORMULA-3", "婴儿奶粉 3段 Infant formula stage 3", 26800), ("BABY-BOTTLE", "玻璃奶瓶 Baby bottle", 8900),
        ("BABY-PACIFIER", "安抚奶嘴 Pacifier", 2990), ("BABY-CEREAL", "婴儿米粉 Baby rice cereal", 5900),
        ("BABY-STROLLER", "婴儿推车 Stroller", 129900), ("BABY-CARSEAT", "儿童安全座椅 Car seat", 159900),
        ("BABY-CRIB", "婴儿床 Crib", 89900), ("BABY-WASH", "婴儿洗发沐浴露 Baby wash", 6900),
        ("BABY-CREAM", "护臀膏 Diaper cream", 4500), ("BABY-SLEEPBAG", "婴儿睡袋 Sleeping bag", 15900),
        ("BABY-PLAYMAT", "爬行垫 Play mat", 19900), ("BABY-TOOTHBRUSH", "儿童牙刷 Kids toothbrush", 1990),
    ],
    "beauty": [
        ("BEA-CREAM", "保湿面霜 Moisturising cream", 29900), ("BEA-SERUM", "修护精华液 Repair serum", 59900),
        ("BEA-MASK", "补水面膜 10片 Sheet masks", 9900), ("BEA-LIPSTICK", "丝绒口红 Velvet lipstick", 24900),
        ("BEA-SUNSCREEN", "防晒霜 SPF50 Sunscreen", 16900), ("BEA-CLEANSER", "氨基酸洁面乳 Cleanser", 8900),
        ("BEA-TONER", "爽肤水 Toner", 15900), ("BEA-EYECREAM", "眼霜 Eye cream", 45900),
        ("BEA-FOUNDATION", "粉底液 Foundation", 38900), ("BEA-OIL", "卸妆油 Cleansing oil", 19900),
        ("BEA-BODY", "身体乳 Body lotion", 12900), ("BEA-PERFUME", "淡香水 Eau de toilette", 89900),
        ("BEA-HAND", "护手霜 Hand cream", 5900), ("BEA-CUSHION", "气垫BB霜 Cushion compact", 29900),
    ],
    "snacks": [
        ("SNK-NUTBOX", "坚果礼盒 Mixed nuts gift box", 13900), ("SNK-DAILYNUTS", "每日坚果 30包 Daily nuts", 8900),
        ("SNK-BEEF", "牛肉干 Beef jerky", 5990), ("SNK-MANGO", "芒果干 Dried mango", 2990),
        ("SNK-LUOSIFEN", "螺蛳粉 Luosifen noodles", 3990), ("SNK-LATIAO", "辣条 Spicy gluten strips", 1590),
        ("SNK-CHOCO", "巧克力礼盒 Chocolate box", 6900), ("SNK-COOKIE", "曲奇饼干 Butter cookies", 7900),
        ("SNK-SEAWEED", "海苔脆 Seaweed snack", 2590), ("SNK-PORK", "猪肉脯 Pork jerky", 4500),
        ("SNK-PASTRY", "蛋黄酥 Egg yolk pastry", 4990), ("SNK-MOONCAKE", "月饼礼盒 Mooncake gift box", 19800),
        ("SNK-HOTPOT", "自热火锅 Self-heating hotpot", 3590), ("SNK-JELLY", "果冻 Fruit jelly", 1990),
    ],
}  # fmt: skip
TAGS = {
    "孕妈": ("rule", "Expecting mothers / 孕期妈妈"),
    "母婴": ("rule", "Buys maternity & baby products / 母婴品类客户"),
    "VIP": ("rule", "Lifetime spend over ¥3,000 or 8+ orders"),
    "美妆达人": ("rule", "Beauty lover, 3+ orders / 美妆爱好者"),
    "零食控": ("rule", "Snack fan, 3+ orders / 零食爱好者"),
    "高价值沉睡": ("rule", "High-value sleeper: big spender, no order for 180+ days"),
    "新客": ("rule", "Joined in the last 30 days"),
    "直播粉丝": ("manual", "Came from live-stream campaigns / 直播间粉丝"),
}
PAGES = ["/", "/category/maternity", "/category/baby", "/category/beauty", "/category/snacks", "/activity/618",
         "/activity/double11", "/member/points", "/member/coupons", "/brand/story"]  # fmt: skip
SEARCHES = ["纸尿裤", "婴儿湿巾", "叶酸", "奶粉 1段", "奶粉 3段", "防晒霜", "面膜", "口红", "坚果礼盒", "螺蛳粉",
            "孕妇装", "奶瓶", "吸奶器", "精华液", "婴儿推车"]  # fmt: skip
ARTICLES = [
    "客户生命周期营销：唤醒沉睡的客户", "新手妈妈必读：宝宝第一年的喂养指南", "孕期营养：叶酸和DHA怎么补",
    "618囤货清单：母婴好物推荐", "换季护肤：敏感肌的修护精华", "会员专享：积分兑换好礼", "双11预售开启",
]  # fmt: skip
COUPONS = ["新客立减20元", "满199减30", "母婴节满299减50", "会员日9折券", "美妆满2件8折"]
REFUND_REASONS = ["尺码不合适", "商品破损", "不想要了", "发错货", "质量问题"]
BROWSE_TYPES = [
    "product_view",
    "page_view",
    "search",
    "app_open",
    "wechat_article_read",
    "coupon_claimed",
    "add_to_cart",
]
BROWSE_P = [0.42, 0.25, 0.1, 0.09, 0.07, 0.03, 0.04]
EVENT_TYPES = ["order_placed", "order_refunded", "checkout_started", *BROWSE_TYPES]
EVENT_COLUMNS = ("customer_id", "type", "properties", "occurred_at", "channel", "external_id", "received_at")


# --- Writers ---------------------------------------------------------------------------------------


class _PostgresWriter:
    """COPY in text format, from a background thread: while PostgreSQL ingests one table, the main thread
    generates the next (two cores, both busy). Same connection, so the same transaction. Generated text
    never contains a tab, newline or backslash, so nothing needs escaping."""

    NULL = "\\N"
    TS_SUFFIX = "+00"
    ROWS_PER_WRITE = 100_000

    def __init__(self):
        self.cursor = connection.cursor()
        self.raw = connection.connection.cursor()  # used only by the writer thread
        self.queue: queue.Queue = queue.Queue(maxsize=3)
        self.deferred: list[str] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="seed-demo-copy", daemon=True)
        self.thread.start()

    def lock(self) -> None:
        self.cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])

    def skip_foreign_key_triggers(self) -> bool:
        """Django's foreign keys are DEFERRABLE INITIALLY DEFERRED: every COPYed row queues a check that runs
        at commit, one index probe and row lock each, which would take longer than the load itself. Every id
        written here was reserved or read in this transaction, so the checks cannot fail. Off until the
        transaction ends, committed or rolled back, where the role may (crm.db); else the checks just run."""
        self.cursor.execute(foreign_key_triggers_off_sql(connection))
        return self.cursor.fetchone() is not None

    def defer_indexes(self, planned: dict[str, int]) -> int:
        """Drop the indexes of the tables that hold little compared with what is coming, except primary keys
        and unique keys that a foreign key depends on; `rebuild_indexes` creates them again before commit
        (re-adding a unique constraint checks it again). Building an index once costs a fraction of
        maintaining it row by row during COPY (see BENCHMARKS.md, seed_demo). DDL is transactional: if the
        seed fails, the rollback brings every index back. The tables stay locked (ACCESS EXCLUSIVE) until
        commit."""
        self.cursor.execute("SET LOCAL maintenance_work_mem = '512MB'")
        for table, rows in planned.items():
            self.cursor.execute(
                f"SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT %s) AS t", [rows // 5 + 1]
            )
            if self.cursor.fetchone()[0] > rows // 5:
                continue  # a big table: rebuilding its indexes would cost more than it saves
            self.cursor.execute(
                """
                SELECT c.conname, pg_get_constraintdef(c.oid)
                FROM pg_constraint c
                WHERE c.conrelid = %s::regclass AND c.contype = 'u'
                  AND NOT EXISTS (SELECT 1 FROM pg_constraint f WHERE f.contype = 'f' AND f.conindid = c.conindid)
                """,
                [table],
            )
            for name, definition in self.cursor.fetchall():
                self.cursor.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
                self.deferred.append(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")
            self.cursor.execute(
                """
                SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
                FROM pg_index i
                WHERE i.indrelid = %s::regclass
                  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
                """,
                [table],
            )
            for name, definition in self.cursor.fetchall():
                self.cursor.execute(f"DROP INDEX {name}")
                self.deferred.append(definition)
        return len(self.deferred)

    def rebuild_indexes(self) -> None:
        for definition in self.deferred:
            self.cursor.execute(definition)
        self.deferred = []

    def reserve(self, table: str, n: int) -> np.ndarray:
        # nextval in one statement: unique ids even if someone else inserts meanwhile.
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        self.cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)", [table, n]
        )
        return np.fromiter((row[0] for row in self.cursor.fetchall()), dtype=np.int64, count=n)

    def write(self, table: str, columns: list[str], data: list[list]) -> None:
        if self.error is not None:
            raise self.error
        if data[0]:
            self.queue.put((table, columns, data))

    def finish(self) -> None:
        """Wait until everything queued is written; re-raise what went wrong in the writer thread."""
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def write_events(self, customer_ids, types, properties, epoch, channels) -> None:
        if self.error is not None:
            raise self.error
        if len(customer_ids):
            self.queue.put(("events", (customer_ids, types, properties, epoch, channels)))

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None:
                try:
                    if item[0] == "events":
                        self._copy_events(*item[1])
                    else:
                        self._copy(*item)
                except BaseException as exc:  # handed to the main thread
                    self.error = exc

    def _copy_events(self, customer_ids, types, properties, epoch, channels) -> None:
        """Events in COPY's binary format: the server then reads timestamps and ids as numbers instead of
        parsing text, a quarter of its work on the biggest table. Fixed-width fields are built by NumPy;
        each distinct text (type, channel, the shared properties) is encoded once."""
        n = len(customer_ids)
        ids = np.empty(n, dtype=[("len", ">i4"), ("value", ">i8")])
        ids["len"], ids["value"] = 8, customer_ids
        stamps = np.empty(n, dtype=[("len", ">i4"), ("value", ">i8")])
        stamps["len"], stamps["value"] = 8, (np.asarray(epoch, dtype=np.int64) - _PG_EPOCH) * 1_000_000
        id_bytes = ids.view("V12").ravel().tolist()  # V, not S: S would drop trailing zero bytes
        stamp_bytes = stamps.view("V12").ravel().tolist()
        type_bytes = [_binary_text(t) for t in EVENT_TYPES]
        channel_bytes = [_binary_text(c) for c in CHANNELS]
        memo: dict[str, bytes] = {}

        def jsonb(text: str) -> bytes:
            found = memo.get(text)
            if found is None:
                data = text.encode()
                found = memo[text] = struct.pack(">iB", len(data) + 1, 1) + data
            return found

        header, null = struct.pack(">h", 7), struct.pack(">i", -1)
        with self.raw.copy(
            "COPY crm_event (customer_id, type, properties, occurred_at, channel, external_id, received_at) "
            "FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0))
            for start in range(0, n, self.ROWS_PER_WRITE):
                stop = min(n, start + self.ROWS_PER_WRITE)
                copy.write(
                    b"".join(
                        header + i + type_bytes[t] + jsonb(p) + ts + channel_bytes[c] + null + ts
                        for i, t, p, ts, c in zip(
                            id_bytes[start:stop],
                            types[start:stop].tolist(),
                            properties[start:stop],
                            stamp_bytes[start:stop],
                            channels[start:stop].tolist(),
                            strict=True,
                        )
                    )
                )
            copy.write(struct.pack(">h", -1))

    def _copy(self, table: str, columns: list[str], data: list[list]) -> None:
        n = len(data[0])
        with self.raw.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for start in range(0, n, self.ROWS_PER_WRITE):
                part = zip(*(col[start : start + self.ROWS_PER_WRITE] for col in data), strict=True)
                copy.write(("\n".join(map("\t".join, part)) + "\n").encode())


class _SqliteWriter:
    NULL = None
    TS_SUFFIX = ""

    def skip_foreign_key_triggers(self) -> bool:
        return False

    def __init__(self):
        self.cursor = connection.cursor()
        self.reserved: dict[str, int] = {}

    def lock(self) -> None:
        pass  # settings use BEGIN IMMEDIATE: the transaction already holds the write lock

    def finish(self) -> None:
        pass

    def defer_indexes(self, planned: dict[str, int]) -> int:
        return 0

    def rebuild_indexes(self) -> None:
        pass

    def reserve(self, table: str, n: int) -> np.ndarray:
        # Ids handed out earlier may not be written yet: start above them as well as above the table.
        self.cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}")
        top = max(self.cursor.fetchone()[0], self.reserved.get(table, 0))
        self.reserved[table] = top + n
        return np.arange(top + 1, top + 1 + n, dtype=np.int64)

    def write_events(self, customer_ids, types, properties, epoch, channels) -> None:
        stamps = _ts(epoch, "")
        self.write(
            "crm_event",
            ["customer_id", "type", "properties", "occurred_at", "channel", "external_id", "received_at"],
            [
                _ints(customer_ids),
                _objects(EVENT_TYPES)[types].tolist(),
                properties,
                stamps,
                _objects(CHANNELS)[channels].tolist(),
                [None] * len(stamps),
                stamps,
            ],
        )

    def write(self, table: str, columns: list[str], data: list[list]) -> None:
        if not data[0]:
            return
        placeholders = ", ".join(["%s"] * len(columns))
        self.cursor.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})",
            list(zip(*data, strict=True)),
        )


# --- Column helpers --------------------------------------------------------------------------------


_PG_EPOCH = 946_684_800  # 2000-01-01 in Unix seconds: where PostgreSQL's binary timestamps count from


def _binary_text(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">i", len(data)) + data


def _civil(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Days since 1970-01-01 -> (year, month, day), vectorised (H. Hinnant's civil_from_days)."""
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = np.where(mp < 10, mp + 3, mp - 9)
    return yoe + era * 400 + (month <= 2), month, day


def _format_times(epoch: np.ndarray, sep: str, suffix: str) -> list[str]:
    """UTC seconds -> 'YYYY-MM-DD<sep>HH:MM:SS<suffix>', digit by digit into a byte matrix: several times
    faster than numpy.datetime_as_string for the tens of millions of timestamps of a big seed."""
    epoch = np.asarray(epoch, dtype=np.int64)
    days, seconds = np.divmod(epoch, DAY)
    year, month, day = _civil(days)
    hour, rest = np.divmod(seconds, 3600)
    minute, second = np.divmod(rest, 60)
    width = 19 + len(suffix)
    out = np.empty((len(epoch), width), dtype=np.uint8)
    for col, value, digits in (
        (0, year, 4),
        (5, month, 2),
        (8, day, 2),
        (11, hour, 2),
        (14, minute, 2),
        (17, second, 2),
    ):
        for i in range(digits):
            out[:, col + digits - 1 - i] = 48 + (value // 10**i) % 10
    for col, char in ((4, "-"), (7, "-"), (10, sep), (13, ":"), (16, ":")):
        out[:, col] = ord(char)
    for i, char in enumerate(suffix.encode()):
        out[:, 19 + i] = char
    return out.view(f"S{width}").ravel().astype(f"U{width}").tolist()


def _ts(epoch: np.ndarray, suffix: str) -> list[str]:
    return _format_times(epoch, " ", suffix)


def _iso_us(epoch: np.ndarray) -> list[str]:
    """The canonical UTC form fingerprints use: datetime.isoformat(timespec="microseconds")."""
    return _format_times(epoch, "T", ".000000+00:00")


_CENTS = [f"{c:02d}" for c in range(100)]


def _money(cents: np.ndarray) -> list[str]:
    whole, cents = np.divmod(np.asarray(cents, dtype=np.int64), 100)
    return [f"{w}.{_CENTS[c]}" for w, c in zip(whole.tolist(), cents.tolist(), strict=True)]


def _objects(values) -> np.ndarray:
    if isinstance(values, np.ndarray) and values.dtype == object:
        return values
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _ints(values: np.ndarray) -> list[str]:
    return np.asarray(values, dtype=np.int64).astype(str).tolist()


def _fingerprints(external, placed_iso, totals, channels, stores, bounds, lines) -> list[str]:
    """order_fingerprint for many demo orders at once (the same canonical tuple; a test compares)."""
    return [
        payload_fingerprint(
            (ext, iso, total, "CNY", channel, store, "paid", tuple(lines[bounds[o] : bounds[o + 1]]))
        )
        for o, (ext, iso, total, channel, store) in enumerate(
            zip(external, placed_iso, totals, channels, stores, strict=True)
        )
    ]


def _pick(rng, items: list, size: int, p=None) -> np.ndarray:
    return rng.choice(len(items), size=size, p=None if p is None else np.asarray(p) / np.sum(p))


@dataclass
class _Catalogue:
    ids: np.ndarray
    skus: list[str]
    names: list[str]
    categories: list[str]
    price: np.ndarray  # cents
    by_category: list[np.ndarray]  # product positions per category, most popular first
    popularity: list[np.ndarray]  # cumulative weights per category
    view_props: list[str]
    cart_props: list[str]


@dataclass
class _Counts:
    customers: int = 0
    identities: int = 0
    consents: int = 0
    orders: int = 0
    lines: int = 0
    refunds: int = 0
    events: int = 0
    tags: int = 0
    by_table: dict = field(default_factory=dict)


# --- The command -----------------------------------------------------------------------------------


class Command(BaseCommand):
    help = (
        "Build a demo world (customers, identities, consents, tags, products, orders, refunds, behaviour "
        "events over two years). Does nothing if demo data (external ids DEMO-...) is already there."
    )

    def add_arguments(self, parser):
        parser.add_argument("--customers", type=int, default=2000, help="Number of customers (default 2000).")
        parser.add_argument(
            "--events-per-customer",
            type=int,
            default=10,
            help="Behaviour events per customer on average (10).",
        )
        parser.add_argument(
            "--seed", type=int, default=2026, help="Random seed: the same seed, the same world."
        )

    def handle(self, *args, customers, events_per_customer, seed, verbosity, **options):
        if customers < 1 or events_per_customer < 0:
            raise CommandError(_("--customers must be at least 1 and --events-per-customer at least 0."))
        started = time.monotonic()

        def say(message: str) -> None:
            if verbosity >= 1:
                self.stdout.write(f"[{time.monotonic() - started:7.1f}s] {message}")

        with transaction.atomic():
            writer = _PostgresWriter() if connection.vendor == "postgresql" else _SqliteWriter()
            try:
                writer.lock()
                existing = Customer.objects.filter(external_id__startswith=MARKER).count()
                if existing:
                    self.stdout.write(
                        _(
                            "Already seeded: %(count)s demo customers (external id %(marker)s...) exist; nothing to do."
                        )
                        % {"count": f"{existing:,}", "marker": MARKER}
                    )
                    return
                if writer.skip_foreign_key_triggers():
                    say(_("Foreign-key checks skipped for this transaction (every id is generated here)."))
                deferred = writer.defer_indexes(_planned_rows(customers, events_per_customer))
                if deferred:
                    say(
                        _("%(count)d indexes dropped for the load; they are rebuilt before commit.")
                        % {"count": deferred}
                    )
                counts = seed_world(
                    writer, customers=customers, events_per_customer=events_per_customer, seed=seed, say=say
                )
            finally:
                # Also on failure: the writer thread must be done with the connection before the rollback.
                writer.finish()
            say(_("All rows written"))
            if deferred:
                writer.rebuild_indexes()
                say(_("Indexes rebuilt"))
        if connection.vendor == "postgresql":
            say(_("Analysing tables"))
            with connection.cursor() as cursor:
                for table in counts.by_table:
                    cursor.execute(f"ANALYZE {table}")
        self.stdout.write(
            _(
                "Seeded %(customers)s customers, %(identities)s identities, %(consents)s consents, %(tags)s tags, "
                "%(orders)s orders (%(lines)s lines, %(refunds)s refunds) and %(events)s events in %(seconds).1f s."
            )
            % {
                "customers": f"{counts.customers:,}",
                "identities": f"{counts.identities:,}",
                "consents": f"{counts.consents:,}",
                "tags": f"{counts.tags:,}",
                "orders": f"{counts.orders:,}",
                "lines": f"{counts.lines:,}",
                "refunds": f"{counts.refunds:,}",
                "events": f"{counts.events:,}",
                "seconds": time.monotonic() - started,
            }
        )


def _planned_rows(customers: int, events_per_customer: int) -> dict[str, int]:
    """Roughly how many rows each table receives (per customer: 1.9 orders, 3 lines, 3.9 identities...)."""
    per_customer = {
        "crm_customer": 1,
        "crm_customeridentity": 3.9,
        "crm_consent": 1.7,
        "crm_consentchange": 2,
        "crm_customertag": 0.9,
        "crm_order": 1.85,
        "crm_orderline": 3,
        "crm_event": events_per_customer,
    }
    return {table: int(customers * rate) for table, rate in per_customer.items()}


def seed_world(writer, *, customers: int, events_per_customer: int, seed: int, say) -> _Counts:
    now = int(timezone.now().timestamp())
    catalogue = _catalogue(writer, now)
    tag_ids = _tags(now)
    _acquisition_costs(now)
    counts = _Counts()
    customer_ids = writer.reserve("crm_customer", customers)
    order_ids = np.zeros(0, dtype=np.int64)
    next_order = 0
    for start in range(0, customers, BLOCK):
        size = min(BLOCK, customers - start)
        rng = np.random.default_rng([seed, start])
        block = _Block(rng, writer, now=now, first=start, size=size, ids=customer_ids[start : start + size])
        block.customers(counts)
        orders_needed = block.plan_orders()
        if next_order + orders_needed > len(order_ids):
            # Reserved ahead, a quarter more than this block needs, so that most blocks need no round trip.
            more = max(orders_needed, int(orders_needed * 1.25 * (customers - start) / size))
            order_ids = np.concatenate([order_ids[next_order:], writer.reserve("crm_order", more)])
            next_order = 0
        block.orders(counts, catalogue, order_ids[next_order : next_order + orders_needed], counts.orders)
        next_order += orders_needed
        block.events(counts, catalogue, events_per_customer)
        block.tags(counts, tag_ids)
        say(
            _("Generated %(done)s / %(total)s customers, %(orders)s orders, %(events)s events")
            % {
                "done": f"{start + size:,}",
                "total": f"{customers:,}",
                "orders": f"{counts.orders:,}",
                "events": f"{counts.events:,}",
            }
        )
    return counts


def _catalogue(writer, now: int) -> _Catalogue:
    rows = [(sku, name, cat, cents) for cat in CATEGORIES for sku, name, cents in PRODUCTS[cat]]
    created = datetime.fromtimestamp(now - 800 * DAY, tz=UTC)
    Product.objects.bulk_create(
        [
            Product(
                sku=sku,
                name=name,
                category=cat,
                price=Decimal(cents) / 100,
                currency="CNY",
                created_at=created,
            )
            for sku, name, cat, cents in rows
        ],
        ignore_conflicts=True,
    )
    ids = dict(Product.objects.filter(sku__in=[r[0] for r in rows]).values_list("sku", "pk"))
    skus = [r[0] for r in rows]
    by_category, popularity = [], []
    for cat in CATEGORIES:
        positions = np.array([n for n, r in enumerate(rows) if r[2] == cat])
        weights = 1.0 / np.arange(1, len(positions) + 1) ** 0.8  # a few best sellers, a long tail
        by_category.append(positions)
        popularity.append(np.cumsum(weights) / weights.sum())
    view, cart = [], []
    for sku, _name, cat, cents in rows:
        price = f"{cents // 100}.{cents % 100:02d}"
        view.append(json.dumps({"sku": sku, "category": cat, "price": price}, ensure_ascii=False))
        cart.append(json.dumps({"sku": sku, "quantity": 1, "price": price}, ensure_ascii=False))
    return _Catalogue(
        ids=np.array([ids[s] for s in skus], dtype=np.int64),
        skus=skus,
        names=[r[1] for r in rows],
        categories=[r[2] for r in rows],
        price=np.array([r[3] for r in rows], dtype=np.int64),
        by_category=by_category,
        popularity=popularity,
        view_props=view,
        cart_props=cart,
    )


def _tags(now: int) -> dict[str, int]:
    for name, (kind, description) in TAGS.items():
        Tag.objects.get_or_create(name=name, defaults={"kind": kind, "description": description})
    return dict(Tag.objects.filter(name__in=list(TAGS)).values_list("name", "pk"))


# Cost per acquired customer (CNY) by channel, so the LTV:CAC chart has something to compare: paid
# marketplace traffic costs most, the brand's own WeChat and app least.
CAC_CNY = {"tmall": 85, "jd": 78, "web": 55, "wechat": 38, "app": 26, "store": 120}


def _acquisition_costs(now: int) -> None:
    today = datetime.fromtimestamp(now, tz=UTC).date()
    months = [(today.year * 12 + today.month - 1 - back) for back in range(24)]
    AcquisitionCost.objects.bulk_create(
        [
            AcquisitionCost(
                channel=channel,
                month=datetime(m // 12, m % 12 + 1, 1).date(),
                # A little drift month to month, the same on every run (no random state involved).
                cac=Decimal(base) * (Decimal("0.9") + Decimal(m % 5) / 20),
                note="demo",
            )
            for channel, base in CAC_CNY.items()
            for m in months
        ],
        ignore_conflicts=True,
    )


class _Block:
    """One block of customers and everything that hangs off them, generated as NumPy columns."""

    def __init__(self, rng, writer, *, now: int, first: int, size: int, ids: np.ndarray):
        self.rng, self.w, self.now, self.first, self.n, self.ids = rng, writer, now, first, size, ids
        self.ts = lambda epoch: _ts(epoch, writer.TS_SUFFIX)

    # Customers, identities, consents -------------------------------------------------------------

    def customers(self, counts: _Counts) -> None:
        rng, n, now, NULL = self.rng, self.n, self.now, self.w.NULL
        number = np.arange(self.first + 1, self.first + n + 1)
        self.external = [f"{MARKER}{k:07d}" for k in number.tolist()]
        gender = _pick(rng, [0, 1, 2], n, [0.78, 0.2, 0.02])  # female, male, unknown
        self.gender = gender
        surname = _pick(rng, SURNAMES, n, [s[2] for s in SURNAMES])
        given_f = rng.integers(0, len(FEMALE_GIVEN), n)
        given_m = rng.integers(0, len(MALE_GIVEN), n)
        form = _pick(rng, [0, 1, 2], n, [0.8, 0.1, 0.1])
        english = rng.integers(0, 64, n)
        domain = _pick(rng, EMAIL_DOMAINS[0], n, EMAIL_DOMAINS[1])
        names, emails = [], []
        has_email = rng.random(n) < 0.7
        for g, s, gf, gm, fm, en, dm, he, k in zip(
            gender.tolist(),
            surname.tolist(),
            given_f.tolist(),
            given_m.tolist(),
            form.tolist(),
            english.tolist(),
            domain.tolist(),
            has_email.tolist(),
            number.tolist(),
            strict=True,
        ):
            sur_han, sur_pin, _w = SURNAMES[s]
            given_han, given_pin = MALE_GIVEN[gm] if g == 1 else FEMALE_GIVEN[gf]
            han = sur_han + given_han
            if fm == 0:
                names.append(f"{han} {sur_pin} {given_pin}")
            elif fm == 1:
                first_names = ENGLISH[1 if g == 1 else 0]
                names.append(f"{first_names[en % len(first_names)]} {sur_pin} {han}")
            else:
                names.append(han)
            emails.append(f"{sur_pin}{given_pin}{k}@{EMAIL_DOMAINS[0][dm]}".lower() if he else "")
        has_phone = rng.random(n) < 0.85
        # A real +86 mobile prefix and eight digits (distinct for distinct numbers: 1,000,003 is prime to
        # 10^8), so that the demo's SMS reach the console instead of being refused as invalid numbers (the
        # 14x/16x/19x blocks are data-only or unallocated in parts).
        prefixes = np.array(MOBILE_PREFIXES, dtype=np.int64)[number % len(MOBILE_PREFIXES)]
        phone_numbers = prefixes * 100_000_000 + (number * 1_000_003) % 100_000_000
        phones = np.where(has_phone, np.strings.add("+86", phone_numbers.astype(str)), "").tolist()

        age = np.where(gender == 1, rng.normal(34, 8, n), rng.normal(31, 6, n)).clip(18, 65)
        birthday_day = (now // DAY - age * 365.25 - rng.integers(0, 365, n)).astype(np.int64)
        has_birthday = rng.random(n) < 0.8
        self.age = age
        birthdays = np.datetime_as_string(birthday_day.astype("datetime64[D]")).tolist()
        birthdays = [b if h else NULL for b, h in zip(birthdays, has_birthday.tolist(), strict=True)]

        city = _pick(rng, CITIES, n, [c[3] for c in CITIES])
        channel = _pick(rng, CHANNELS, n, CHANNEL_P)
        self.channel = channel
        has_utm = (rng.random(n) < 0.5) & np.isin(channel, [0, 3, 4])  # wechat, app, web
        utm = {k: rng.integers(0, len(v), n) for k, v in UTM.items()}

        span = 730 * DAY
        self.created = (
            now - span + (span * rng.random(n) ** (1 / 1.6)).astype(np.int64)
        )  # more sign-ups lately
        self.primary = _pick(rng, CATEGORIES, n, CATEGORY_P)

        created = self.ts(self.created)
        genders = ["female", "male", ""]
        columns = {
            "id": _ints(self.ids),
            "external_id": self.external,
            "name": names,
            "email": emails,
            "phone": phones,
            "birthday": birthdays,
            "gender": [genders[g] for g in gender.tolist()],
            "city": [CITIES[c][0] for c in city.tolist()],
            "region": [CITIES[c][1] for c in city.tolist()],
            "time_zone": [CITIES[c][2] for c in city.tolist()],
            "acquisition_channel": [CHANNELS[c] for c in channel.tolist()],
        }
        # Language and preferred channel from a hash of the id, not the generator: drawing more numbers
        # would change every value drawn after them, and the rest of the world with them.
        spread = (np.asarray(self.ids, dtype=np.int64) * 2_654_435_761) % 100
        abroad = np.isin(city, [n for n, c in enumerate(CITIES) if not c[2].startswith("Asia/Sh")])
        columns["language"] = np.where((spread < 5) | (abroad & (spread < 50)), "en", "zh-hans").tolist()
        preferred = np.select([spread < 20, spread < 30, spread < 35], ["wechat", "sms", "email"], "")
        columns["preferred_channel"] = preferred.tolist()
        for key, values in UTM.items():
            columns[f"utm_{key}"] = [
                values[u] if h else "" for u, h in zip(utm[key].tolist(), has_utm.tolist(), strict=True)
            ]
        columns["created_at"] = created
        columns["updated_at"] = created
        columns["erased_at"] = [NULL] * n
        self._write("crm_customer", columns, counts)
        counts.customers += n

        # Identities: the external id, email and phone, and platform ids by where the customer shops.
        scrambled = (number * 0x5DEECE66D + 0xB) % (1 << 48)  # distinct, random-looking
        hexes = [f"{v:012x}" for v in scrambled.tolist()]
        wants = {
            "wechat_openid": (channel == 0) | (rng.random(n) < 0.3),
            "tmall_buyer_id": (channel == 1) | (rng.random(n) < 0.15),
            "jd_buyer_id": (channel == 2) | (rng.random(n) < 0.1),
            "app_device_id": (channel == 3) | (rng.random(n) < 0.1),
        }
        self.openid = wants["wechat_openid"]
        self.app = wants["app_device_id"]
        kinds, values, owners = [], [], []

        def add(kind, mask, make):
            for j in np.flatnonzero(mask).tolist():
                kinds.append(kind)
                values.append(make(j))
                owners.append(j)

        add("external_id", np.ones(n, bool), lambda j: self.external[j])
        add("email", has_email, lambda j: emails[j])
        add("phone", has_phone, lambda j: phones[j])
        add("wechat_openid", wants["wechat_openid"], lambda j: f"oDm{hexes[j]}Wx")
        add("tmall_buyer_id", wants["tmall_buyer_id"], lambda j: f"tb{hexes[j]}")
        add("jd_buyer_id", wants["jd_buyer_id"], lambda j: f"jd_{hexes[j]}")
        add("app_device_id", wants["app_device_id"], lambda j: f"dev-{hexes[j]}-{number[j]}")
        owner = np.array(owners, dtype=np.int64)
        self._write(
            "crm_customeridentity",
            {
                "customer_id": _ints(self.ids[owner]),
                "kind": kinds,
                "value": values,
                "source": ["demo"] * len(kinds),
                "created_at": [created[j] for j in owners],
            },
            counts,
        )
        counts.identities += len(kinds)

        # Consents: opted in at sign-up; some opted out later (two history rows).
        eligible = {
            "email": has_email,
            "sms": has_phone,
            "wechat": wants["wechat_openid"],
            "push": wants["app_device_id"],
        }
        rates = {"email": (0.6, 0.12), "sms": (0.55, 0.15), "wechat": (0.7, 0.08), "push": (0.5, 0.2)}
        c_customer, c_channel, c_status, c_changed = [], [], [], []
        h_customer, h_channel, h_status, h_previous, h_at = [], [], [], [], []
        for ch, mask in eligible.items():
            opt_in, opt_out = rates[ch]
            draw = rng.random(n)
            joined = np.flatnonzero(mask & (draw < opt_in + opt_out))
            left = draw[joined] >= opt_in
            signed = self.created[joined] + rng.integers(60, 3600, len(joined))
            out_at = np.minimum(signed + rng.integers(DAY, 300 * DAY, len(joined)), now - 60)
            changed = np.where(left, out_at, signed)
            c_customer.append(joined)
            c_channel += [ch] * len(joined)
            c_status += np.where(left, "opted_out", "opted_in").tolist()
            c_changed.append(changed)
            h_customer += [joined, joined[left]]
            h_channel += [ch] * (len(joined) + int(left.sum()))
            h_status += ["opted_in"] * len(joined) + ["opted_out"] * int(left.sum())
            h_previous += [""] * len(joined) + ["opted_in"] * int(left.sum())
            h_at += [signed, out_at[left]]
        c_customer = np.concatenate(c_customer)
        changed_ts = self.ts(np.concatenate(c_changed))
        self._write(
            "crm_consent",
            {
                "customer_id": _ints(self.ids[c_customer]),
                "channel": c_channel,
                "status": c_status,
                "changed_at": changed_ts,
                "source": ["signup"] * len(c_channel),
            },
            counts,
        )
        h_customer = np.concatenate(h_customer)
        h_ts = self.ts(np.concatenate(h_at))
        self._write(
            "crm_consentchange",
            {
                "customer_id": _ints(self.ids[h_customer]),
                "channel": h_channel,
                "status": h_status,
                "previous_status": h_previous,
                "occurred_at": h_ts,
                "source": ["signup"] * len(h_channel),
                "changed_by_id": [NULL] * len(h_channel),
                "recorded_at": h_ts,
            },
            counts,
        )
        counts.consents += len(c_channel)

    # Orders ------------------------------------------------------------------------------------------

    def plan_orders(self) -> int:
        """Who buys how often and when: returns the number of orders of this block."""
        rng, n, now = self.rng, self.n, self.now
        buyer = rng.random(n) < 0.75
        k = np.where(buyer, 1 + np.minimum(rng.negative_binomial(0.5, 0.25, n), 59), 0)
        first = np.minimum(self.created + rng.exponential(7 * DAY, n).astype(np.int64), now - 3600)
        # Dormant: stopped buying more than 180 days ago. Active: last order within the last few weeks.
        dormant = buyer & (rng.random(n) < 0.4) & (first < now - 200 * DAY)
        end_dormant = first + ((now - 181 * DAY - first) * rng.random(n) ** 0.7).astype(np.int64)
        end_active = np.maximum(first, now - rng.exponential(25 * DAY, n).astype(np.int64))
        last = np.where(dormant, end_dormant, end_active)
        last = np.where(k > 1, last, first)
        # High-value sleepers: frequent buyers of big baskets who went quiet.
        self.sleeper = dormant & (k >= 4) & (rng.random(n) < 0.3)
        self.k, self.first_order, self.last_order, self.dormant = k, first, last, dormant
        return int(k.sum())

    def orders(self, counts: _Counts, cat: _Catalogue, order_ids: np.ndarray, order_offset: int) -> None:
        rng, now = self.rng, self.now
        k = self.k
        total_orders = int(k.sum())
        cust = np.repeat(np.arange(self.n), k)
        starts = np.cumsum(k) - k
        placed = self.first_order[cust] + (
            rng.random(total_orders) * (self.last_order - self.first_order)[cust]
        ).astype(np.int64)
        placed[starts[k > 0]] = self.first_order[k > 0]
        placed = np.minimum(placed, now - 60)
        channel = np.where(
            rng.random(total_orders) < 0.65, self.channel[cust], _pick(rng, CHANNELS, total_orders, CHANNEL_P)
        )

        # Lines: best sellers of the customer's favourite category, sometimes something else.
        n_lines = 1 + np.minimum(rng.poisson(0.6, total_orders), 5) + self.sleeper[cust]
        line_order = np.repeat(np.arange(total_orders), n_lines)
        lines = len(line_order)
        line_start = np.cumsum(n_lines) - n_lines
        line_no = np.arange(lines) - line_start[line_order] + 1
        category = np.where(
            rng.random(lines) < 0.7, self.primary[cust[line_order]], _pick(rng, CATEGORIES, lines, CATEGORY_P)
        )
        product = np.empty(lines, dtype=np.int64)
        draw = rng.random(lines)
        for c in range(len(CATEGORIES)):
            mask = category == c
            product[mask] = cat.by_category[c][
                np.searchsorted(cat.popularity[c], draw[mask]).clip(0, len(cat.by_category[c]) - 1)
            ]
        quantity = _pick(rng, [1, 2, 3, 4, 5], lines, [0.74, 0.18, 0.05, 0.02, 0.01]) + 1
        quantity = quantity + self.sleeper[cust[line_order]]
        promo = rng.random(lines) < 0.25
        unit = np.where(promo, cat.price[product] * 4 // 5, cat.price[product])  # 8折 promotions
        line_total = unit * quantity
        total = np.bincount(line_order, weights=line_total, minlength=total_orders).astype(np.int64)

        # Refunds: a few full ones, a few of one unit of the first line.
        r = rng.random(total_orders)
        full = r < 0.03
        first_line = line_start
        partial = (r >= 0.03) & (r < 0.045) & ((n_lines > 1) | (quantity[first_line] > 1))
        refunded_at = np.minimum(placed + rng.integers(DAY, 15 * DAY, total_orders), now - 30)
        refunded_amount = np.where(full, total, np.where(partial, unit[first_line], 0))
        status = np.where(full, "refunded", np.where(partial, "partially_refunded", "paid"))
        refunded_qty = np.where(full[line_order], quantity, 0)
        refunded_qty[first_line[partial]] = 1

        external = [f"{MARKER}O{order_offset + j + 1:08d}" for j in range(total_orders)]
        channel_names = [CHANNELS[c] for c in channel.tolist()]
        stores = np.where(
            channel == 5, np.array(STORES)[rng.integers(0, len(STORES), total_orders)], ""
        ).tolist()
        total_text = _money(total)
        unit_text = _money(unit)
        placed_iso = _iso_us(placed)
        skus = [cat.skus[p] for p in product.tolist()]
        names = [cat.names[p] for p in product.tolist()]
        categories = [cat.categories[p] for p in product.tolist()]
        qty = quantity.tolist()
        bounds = np.append(line_start, lines).tolist()
        line_keys = list(zip(skus, qty, unit_text, names, categories, strict=True))
        fingerprints = _fingerprints(
            external, placed_iso, total_text, channel_names, stores, bounds, line_keys
        )
        placed_ts = self.ts(placed)
        customer_ids = self.ids[cust]
        self._write(
            "crm_order",
            {
                "id": _ints(order_ids),
                "external_id": external,
                "customer_id": _ints(customer_ids),
                "channel": channel_names,
                "store": stores,
                "placed_at": placed_ts,
                "currency": ["CNY"] * total_orders,
                "total": total_text,
                "refunded_amount": _money(refunded_amount),
                "status": status.tolist(),
                "fingerprint": fingerprints,
                "created_at": placed_ts,
            },
            counts,
        )
        self._write(
            "crm_orderline",
            {
                "order_id": _ints(order_ids[line_order]),
                "line_no": _ints(line_no),
                "product_id": _ints(cat.ids[product]),
                "sku": skus,
                "name": names,
                "category": categories,
                "quantity": _ints(quantity),
                "unit_price": unit_text,
                "line_total": _money(line_total),
                "refunded_quantity": _ints(refunded_qty),
            },
            counts,
        )
        refunded = np.flatnonzero(full | partial)
        reasons = np.array(REFUND_REASONS)[rng.integers(0, len(REFUND_REASONS), len(refunded))].tolist()
        refund_iso = _iso_us(refunded_at[refunded])
        amounts = _money(refunded_amount[refunded])
        refund_lines, refund_fps, refund_ext = [], [], []
        for pos, o in enumerate(refunded.tolist()):
            if full[o]:
                asked, applied = [], []
            else:
                x = bounds[o]
                asked = [(1, "", 1)]
                applied = [{"line_no": 1, "sku": skus[x], "quantity": 1}]
            refund_ext.append(f"{MARKER}R{order_offset + o + 1:08d}")
            refund_lines.append(json.dumps(applied, ensure_ascii=False))
            refund_fps.append(
                refund_fingerprint(
                    order_external_id=external[o],
                    amount=amounts[pos],
                    refunded_at=refund_iso[pos],
                    reason=reasons[pos],
                    lines=asked,
                )
            )
        refund_ts = self.ts(refunded_at[refunded])
        self._write(
            "crm_refund",
            {
                "order_id": _ints(order_ids[refunded]),
                "external_id": refund_ext,
                "amount": amounts,
                "refunded_at": refund_ts,
                "reason": reasons,
                "lines": refund_lines,
                "fingerprint": refund_fps,
                "created_at": refund_ts,
            },
            counts,
        )
        counts.orders += total_orders
        counts.lines += lines
        counts.refunds += len(refunded)

        # Keep what the events and tags need.
        self.o_cust, self.o_placed, self.o_channel, self.o_total = cust, placed, channel, total
        self.o_external, self.o_total_text, self.o_product = external, total_text, product[first_line]
        self.o_items = n_lines
        self.r_orders, self.r_at, self.r_external, self.r_amounts = (
            refunded,
            refunded_at[refunded],
            refund_ext,
            amounts,
        )
        self.r_status = status[refunded]
        self.r_total_refunded = _money(refunded_amount[refunded])
        self.spend = np.bincount(cust, weights=total - refunded_amount, minlength=self.n)
        self.line_categories = np.bincount(cust[line_order] * 4 + category, minlength=self.n * 4).reshape(
            self.n, 4
        )

    # Events ------------------------------------------------------------------------------------------

    def events(self, counts: _Counts, cat: _Catalogue, per_customer: int) -> None:
        rng, now, n = self.rng, self.now, self.n
        # Parts of the log as (customer position, epoch, type code, properties, channel code); properties
        # and channels are object arrays so that the final shuffle into time order is a NumPy take.
        parts: list[tuple] = []

        def part(who, when, kind: str, props, channels) -> None:
            code = EVENT_TYPES.index(kind)
            parts.append(
                (who, when, np.full(len(who), code, dtype=np.int8), _objects(props), np.asarray(channels))
            )

        part(
            self.o_cust,
            self.o_placed,
            "order_placed",
            [
                f'{{"order_external_id": "{e}", "total": "{t}", "currency": "CNY", "channel": "{CHANNELS[c]}"}}'
                for e, t, c in zip(self.o_external, self.o_total_text, self.o_channel.tolist(), strict=True)
            ],
            self.o_channel,
        )
        part(
            self.o_cust[self.r_orders],
            self.r_at,
            "order_refunded",
            [
                json.dumps(
                    {
                        "order_external_id": self.o_external[o],
                        "refund_external_id": rid,
                        "amount": amount,
                        "currency": "CNY",
                        "refunded_amount": refunded,
                        "status": status,
                    }
                )
                for o, rid, amount, refunded, status in zip(
                    self.r_orders.tolist(),
                    self.r_external,
                    self.r_amounts,
                    self.r_total_refunded,
                    self.r_status.tolist(),
                    strict=True,
                )
            ],
            self.o_channel[self.r_orders],
        )
        # Browsing before buying: a product view for half of the orders; for most of those, the path the
        # conversion funnel follows (add to cart, start the checkout, order), in that order.
        view_props, cart_props = _objects(cat.view_props), _objects(cat.cart_props)
        n_orders = len(self.o_cust)
        seen = rng.random(n_orders) < 0.5
        viewed = np.flatnonzero(seen)
        carted = np.flatnonzero(seen & (rng.random(n_orders) < 0.7))
        checkout_props = _objects(
            [
                f'{{"cart_value": "{t}", "items": {k}}}'
                for t, k in zip(self.o_total_text, self.o_items.tolist(), strict=True)
            ]
        )
        for picked, kind, props, lead in (
            (viewed, "product_view", view_props[self.o_product], (300, 2400)),
            (carted, "add_to_cart", cart_props[self.o_product], (60, 300)),
            (carted, "checkout_started", checkout_props, (10, 55)),
        ):
            part(
                self.o_cust[picked],
                self.o_placed[picked] - rng.integers(*lead, len(picked)),
                kind,
                props[picked],
                self.o_channel[picked],
            )
        # Tracked visits: a page view carrying UTM parameters (a KOL post, a live stream, a search ad)
        # before half of the orders, mostly within a day or two, so that attribution has touches.
        tracked = np.flatnonzero(rng.random(n_orders) < 0.5)
        source = _pick(rng, UTM["source"], len(tracked), [0.3, 0.22, 0.2, 0.12, 0.08, 0.08])
        campaign = rng.integers(0, len(UTM["campaign"]), len(tracked))
        lead = np.clip(rng.exponential(1.5 * DAY, len(tracked)), 300, 6 * DAY).astype(np.int64)
        own = self.o_channel[tracked]
        part(
            self.o_cust[tracked],
            self.o_placed[tracked] - lead,
            "page_view",
            _objects(TRACKED_VISITS)[source * len(UTM["campaign"]) + campaign],
            np.where(np.isin(own, [WECHAT, APP, WEB]), own, WEB),
        )

        # Cart abandonment: viewed, added, started checkout, never ordered. Most in the last two weeks.
        last_bound = np.where(self.k > 0, self.last_order, self.created)
        recent = (rng.random(n) < 0.06) & (last_bound < now - 15 * DAY)
        older = (rng.random(n) < 0.04) & ~recent
        at = np.where(recent, now - rng.integers(2 * 3600, 14 * DAY, n), 0)
        older_at = last_bound + ((now - last_bound) * rng.random(n)).astype(np.int64)
        at = np.where(older, np.maximum(older_at, self.created + 60), at)
        who = np.flatnonzero(recent | older)
        product = self._products(cat, who)
        quantity = rng.integers(1, 3, len(who))
        t0 = np.minimum(at[who], now - 1800)
        channel = np.where(self.channel[who] == STORE, WEB, self.channel[who])
        prices = _money(cat.price[product])
        values = _money(cat.price[product] * quantity)
        steps = (
            ("product_view", 0, view_props[product]),
            (
                "add_to_cart",
                240,
                [
                    f'{{"sku": "{cat.skus[p]}", "quantity": {q}, "price": "{price}"}}'
                    for p, q, price in zip(product.tolist(), quantity.tolist(), prices, strict=True)
                ],
            ),
            (
                "checkout_started",
                600,
                [
                    f'{{"cart_value": "{v}", "items": {q}}}'
                    for v, q in zip(values, quantity.tolist(), strict=True)
                ],
            ),
        )
        for step, (kind, offset, props) in enumerate(steps):
            part(who, t0 + offset + step * rng.integers(0, 120, len(who)), kind, props, channel)

        # Everything else: browsing spread over each customer's active life, more for frequent buyers.
        fixed = sum(len(p[0]) for p in parts)
        browse = max(0, per_customer * n - fixed)
        weights = (1.0 + 2.0 * self.k) / (1.0 + 2.0 * self.k).sum()
        who = np.repeat(np.arange(n), rng.multinomial(browse, weights))
        end = np.where(
            self.k > 0,
            np.minimum(now, self.last_order + 45 * DAY),
            np.minimum(now, self.created + rng.exponential(90 * DAY, n).astype(np.int64)),
        )
        start = self.created[who]
        when = start + (rng.random(len(who)) * np.maximum(end[who] - start, 60)).astype(np.int64)
        kind = _pick(rng, BROWSE_TYPES, len(who), BROWSE_P)
        product = self._products(cat, who)
        # One table of every rendered property; each event points into it.
        table = [
            *cat.view_props,
            *cat.cart_props,
            *(json.dumps({"path": p}) for p in PAGES),
            *(json.dumps({"query": q}, ensure_ascii=False) for q in SEARCHES),
            *(json.dumps({"title": a}, ensure_ascii=False) for a in ARTICLES),
            *(json.dumps({"coupon": c}, ensure_ascii=False) for c in COUPONS),
            "{}",
        ]
        offsets = np.cumsum(
            [
                0,
                len(cat.view_props),
                len(cat.cart_props),
                len(PAGES),
                len(SEARCHES),
                len(ARTICLES),
                len(COUPONS),
            ]
        )
        choice = {
            "product_view": offsets[0] + product,
            "add_to_cart": offsets[1] + product,
            "page_view": offsets[2] + rng.integers(0, len(PAGES), len(who)),
            "search": offsets[3] + rng.integers(0, len(SEARCHES), len(who)),
            "wechat_article_read": offsets[4] + rng.integers(0, len(ARTICLES), len(who)),
            "coupon_claimed": offsets[5] + rng.integers(0, len(COUPONS), len(who)),
            "app_open": np.full(len(who), offsets[6]),
        }
        pointer = np.select([kind == BROWSE_TYPES.index(k) for k in choice], list(choice.values()))
        own = self.channel[who]
        channel = np.where(
            (rng.random(len(who)) < 0.5) & (own != STORE),
            own,
            _pick(rng, CHANNELS[:5], len(who), [0.3, 0.2, 0.15, 0.2, 0.15]),
        )
        channel = np.where(kind == BROWSE_TYPES.index("app_open"), APP, channel)
        channel = np.where(kind == BROWSE_TYPES.index("wechat_article_read"), WECHAT, channel)
        types = np.array([EVENT_TYPES.index(t) for t in BROWSE_TYPES], dtype=np.int8)[kind]
        parts.append((who, when, types, _objects(table)[pointer], channel))

        # One COPY, in customer and time order: the customer-keyed indexes then grow at their right edge.
        cust = np.concatenate([p[0] for p in parts])
        when = np.minimum(np.concatenate([p[1] for p in parts]), now)
        order = np.lexsort((when, cust))
        _check_columns("crm_event", [*EVENT_COLUMNS])
        self.w.write_events(
            self.ids[cust[order]],
            np.concatenate([p[2] for p in parts])[order],
            np.concatenate([p[3] for p in parts])[order].tolist(),
            when[order],
            np.concatenate([p[4] for p in parts])[order],
        )
        counts.by_table["crm_event"] = counts.by_table.get("crm_event", 0) + len(order)
        counts.events += len(order)

    def _products(self, cat: _Catalogue, who: np.ndarray) -> np.ndarray:
        category = np.where(
            self.rng.random(len(who)) < 0.75, self.primary[who], self.rng.integers(0, 4, len(who))
        )
        draw = self.rng.random(len(who))
        product = np.empty(len(who), dtype=np.int64)
        for c in range(len(CATEGORIES)):
            mask = category == c
            product[mask] = cat.by_category[c][
                np.searchsorted(cat.popularity[c], draw[mask]).clip(0, len(cat.by_category[c]) - 1)
            ]
        return product

    # Tags --------------------------------------------------------------------------------------------

    def tags(self, counts: _Counts, tag_ids: dict[str, int]) -> None:
        rng, now = self.rng, self.now
        bought = self.line_categories
        baby = (bought[:, 0] + bought[:, 1]) > 0
        rules = {
            "母婴": baby,
            "孕妈": (self.gender == 0) & (self.age < 38) & (bought[:, 0] > 0) & (rng.random(self.n) < 0.6),
            "VIP": (self.spend >= 300_000) | (self.k >= 8),
            "美妆达人": (bought[:, 2] >= 3) & (self.k >= 3),
            "零食控": (bought[:, 3] >= 3) & (self.k >= 3),
            "高价值沉睡": self.dormant & (self.spend >= 200_000),
            "新客": self.created >= now - 30 * DAY,
            "直播粉丝": rng.random(self.n) < 0.03,
        }
        customers, tags, added = [], [], []
        for name, mask in rules.items():
            chosen = np.flatnonzero(mask)
            customers.append(chosen)
            tags += [str(tag_ids[name])] * len(chosen)
            added.append(np.where(self.k[chosen] > 0, self.first_order[chosen], self.created[chosen]))
        customer = np.concatenate(customers)
        self._write(
            "crm_customertag",
            {
                "customer_id": _ints(self.ids[customer]),
                "tag_id": tags,
                "source": ["demo"] * len(tags),
                "added_at": self.ts(np.concatenate(added)),
            },
            counts,
        )
        counts.tags += len(tags)

    # -------------------------------------------------------------------------------------------------

    def _write(self, table: str, columns: dict[str, list], counts: _Counts) -> None:
        _check_columns(table, list(columns))
        self.w.write(table, list(columns), list(columns.values()))
        counts.by_table[table] = counts.by_table.get(table, 0) + len(next(iter(columns.values())))


_CHECKED: set[str] = set()


def _check_columns(table: str, columns: list[str]) -> None:
    """COPY bypasses model defaults: fail loudly, naming the column, if a model gained a required column
    this command does not fill yet."""
    if table in _CHECKED:
        return
    model = next(m for m in apps.get_models() if m._meta.db_table == table)
    missing = [
        f.column
        for f in model._meta.concrete_fields
        if f.column not in columns
        and not f.primary_key
        and not f.null
        and f.db_default is models.NOT_PROVIDED
    ]
    if missing:
        raise CommandError(f"seed_demo does not fill {table}.{', '.join(missing)}; add it to seed_demo.")
    _CHECKED.add(table)
