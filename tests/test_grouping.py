"""The ingress's micro-batcher: calls arriving together leave as one group, answers and errors go to their callers."""

from __future__ import annotations

import asyncio

import pytest

from mycolens.serving.grouping import Grouper


def test_concurrent_calls_leave_as_groups_of_at_most_max_size_and_get_their_own_answers() -> None:
    sent: list[list[tuple]] = []

    async def send(calls: list[tuple]) -> list[int]:
        sent.append(calls)
        await asyncio.sleep(0.01)
        return [x * 10 + k for x, k in calls]

    async def main() -> list[int]:
        group = Grouper(send, max_size=4, wait_s=0.05)
        return await asyncio.gather(*(group(i, 1) for i in range(10)))

    assert asyncio.run(main()) == [i * 10 + 1 for i in range(10)]
    assert [len(g) for g in sent] == [4, 4, 2]  # full groups leave at once; the rest after wait_s


def test_a_lone_call_waits_at_most_wait_s() -> None:
    async def send(calls: list[tuple]) -> list[str]:
        return ["ok" for _ in calls]

    async def main() -> tuple[str, float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        answer = await Grouper(send, max_size=8, wait_s=0.02)("x")
        return answer, loop.time() - start

    answer, waited = asyncio.run(main())
    assert answer == "ok" and waited >= 0.02


def test_an_error_reaches_every_caller_of_its_group_and_the_next_group_still_works() -> None:
    calls = {"n": 0}

    async def send(group: list[tuple]) -> list[int]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("replica died")
        return [a for (a,) in group]

    async def main() -> tuple[list, list]:
        group = Grouper(send, max_size=2, wait_s=0.01)
        first = await asyncio.gather(group(1), group(2), return_exceptions=True)
        second = await asyncio.gather(group(3), group(4))
        return first, second

    first, second = asyncio.run(main())
    assert all(isinstance(e, ConnectionError) for e in first) and second == [3, 4]


def test_a_short_answer_is_an_error_not_a_silent_mismatch() -> None:
    async def send(group: list[tuple]) -> list[int]:
        return [1]

    async def main() -> list:
        g = Grouper(send, max_size=2, wait_s=0.01)
        return await asyncio.gather(g(1), g(2), return_exceptions=True)

    assert all(isinstance(e, RuntimeError) for e in asyncio.run(main()))
    with pytest.raises(ValueError):
        Grouper(send, max_size=0, wait_s=0.01)
