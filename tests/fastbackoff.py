"""gcsfs's back-off between its own tries, 100x shorter: in tests it only makes them wait
(1-16 s a request behind the fault proxy). `python -m fastbackoff ARGS` runs genre-job so.

The tries themselves, their number and what gcsfs retries stay as they are."""

from __future__ import annotations

import asyncio
import types

SHORTER = 100


def shortened() -> types.SimpleNamespace:
    """What gcsfs.retry takes as its `asyncio`: a sleep SHORTER times shorter."""
    sleep = asyncio.sleep
    return types.SimpleNamespace(sleep=lambda seconds: sleep(seconds / SHORTER))


def install(monkeypatch=None) -> None:
    """For this process; with pytest's `monkeypatch`, until the test ends."""
    import gcsfs.retry

    if monkeypatch is None:
        gcsfs.retry.asyncio = shortened()
    else:
        monkeypatch.setattr(gcsfs.retry, "asyncio", shortened())


if __name__ == "__main__":
    install()
    from job.cli import main

    main(prog_name="genre-job")
