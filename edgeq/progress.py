"""Progress reporting that the library emits and the CLI draws (silent by default)."""
from __future__ import annotations

import contextlib
from typing import Iterator, Protocol

from edgeq.termination import raise_if_terminated


class Progress(Protocol):
    def task(self, description: str, total: int | None = None) -> contextlib.AbstractContextManager["Step"]: ...


class Step(Protocol):
    def advance(self, n: int = 1) -> None: ...


class _NullStep:
    def advance(self, n: int = 1) -> None:
        pass


class Silent:
    """The library default: report nothing."""

    @contextlib.contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Step]:
        yield _NullStep()


class RichProgress:
    """Progress bars on the *real* stderr (TF's native output is captured meanwhile)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    @contextlib.contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Step]:
        raise_if_terminated()  # a swallowed SIGTERM stops the run at the next stage, not only at the writer
        if not self.enabled:
            yield _NullStep()
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as RP, SpinnerColumn, TextColumn, \
            TimeElapsedColumn

        from edgeq.nativeio import original_stderr

        stream = original_stderr()
        console = Console(file=stream, stderr=True)
        cols = [SpinnerColumn(), TextColumn("{task.description}")]
        if total:
            cols += [BarColumn(), MofNCompleteColumn()]
        cols.append(TimeElapsedColumn())
        with RP(*cols, console=console, transient=False) as rp:
            tid = rp.add_task(description, total=total)

            class _S:
                def advance(self, n: int = 1) -> None:
                    rp.advance(tid, n)

            yield _S()
            if total:
                rp.update(tid, completed=total)
        if stream is not __import__("sys").stderr:
            stream.close()
