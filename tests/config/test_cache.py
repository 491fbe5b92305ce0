"""The default (in-process) cache must hold one throttle key per active member, not Django's default 300."""

from django.core.cache import cache


def test_the_default_cache_keeps_thousands_of_keys():
    try:
        for i in range(2_000):
            cache.set(f"test-cache-capacity:{i}", i, 60)
        assert cache.get("test-cache-capacity:0") == 0
        assert cache.get("test-cache-capacity:1999") == 1999
    finally:
        cache.delete_many([f"test-cache-capacity:{i}" for i in range(2_000)])
