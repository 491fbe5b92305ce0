"""factory-boy factories shared by every test module."""

from decimal import Decimal

import factory
from django.utils import timezone

from crm import models


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Customer

    external_id = factory.Sequence(lambda n: f"C{n:07d}")
    name = factory.Iterator(["王芳", "李娜", "张伟", "刘洋", "陈静", "Emily Chen", "杨磊", "赵敏"])
    email = factory.Sequence(lambda n: f"customer{n}@example.cn")
    phone = factory.Sequence(lambda n: f"+86138{n:08d}")
    city = factory.Iterator(["上海", "北京", "杭州", "深圳", "成都"])


class ProductFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Product

    sku = factory.Sequence(lambda n: f"SKU-{n:05d}")
    name = factory.Iterator(
        ["婴儿湿巾 Baby wipes", "孕妇叶酸 Folic acid", "奶粉 Infant formula", "面霜 Face cream"]
    )
    category = factory.Iterator(["baby", "maternity", "beauty"])
    price = Decimal("99.00")


class OrderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Order

    external_id = factory.Sequence(lambda n: f"TM{n:09d}")
    customer = factory.SubFactory(CustomerFactory)
    channel = "tmall"
    placed_at = factory.LazyFunction(timezone.now)
    total = Decimal("199.00")
    fingerprint = factory.Sequence(lambda n: f"{n:064d}")


class EventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Event

    customer = factory.SubFactory(CustomerFactory)
    type = "page_view"
    occurred_at = factory.LazyFunction(timezone.now)
    channel = "web"
