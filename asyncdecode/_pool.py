"""Whole-file jobs on a pool of worker processes or threads, awaited from the event loop.

Offline tools (``store build``, :mod:`asyncdecode.prepare`) hand one job per video to a pool and keep
a status line moving while the jobs run: :func:`completed` yields what finished at least twice a
second.

Worker processes start with ``spawn``, which runs the main script's top level again in every worker.
A script that starts a build from its top level without an ``if __name__ == "__main__":`` block would
start it again in each of them; :func:`check_main_guard` refuses to start workers from such a script,
and a pool whose workers all died while running the main script again ends with the same error.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import concurrent.futures
import multiprocessing
import multiprocessing.connection
import os
import sys
import threading
import tokenize
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Literal, TypeVar

from .errors import InvalidRequestError

Job = TypeVar("Job")

Executor = Literal["process", "thread"]

#: How often :func:`completed` yields at the least (seconds), finished jobs or not.
TICK_S = 0.5


async def completed(
    fn: Callable[[Job], Any],
    jobs: Sequence[Job],
    *,
    workers: int,
    executor: Executor,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
) -> AsyncIterator[list[tuple[Job, Any]]]:
    """Run ``fn(job)`` for every job on ``workers`` processes or threads; yield what finished.

    Each item is a list of ``(job, result)`` in completion order, possibly empty (a tick to refresh
    a status line); ``result`` is what ``fn`` returned, or the :class:`BaseException` it raised or
    that broke the pool (a worker process that died). Processes start with ``spawn``: nothing of this
    process's threads or event loop is inherited; they end when this process dies (see
    :func:`end_with_parent`). Use it under ``contextlib.aclosing``: leaving early
    cancels the jobs not started and waits for the running ones to end.

    Raises:
        InvalidRequestError: ``executor="process"`` and the main script has no
            ``if __name__ == "__main__":`` block (see :func:`check_main_guard`), or every worker
            process died before it started, while running the main script again.
    """
    started = None
    if executor == "process":
        check_main_guard("spawn")
        context = multiprocessing.get_context("spawn")
        started = context.Value("b", 0, lock=False)  # set by every worker that got as far as its initializer
        pool: concurrent.futures.Executor = concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=context, initializer=_start_worker, initargs=(started, initializer, initargs))
    else:
        pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="asyncdecode-pool",
                                                     initializer=initializer, initargs=initargs)
    loop = asyncio.get_running_loop()
    futures = {loop.run_in_executor(pool, fn, job): job for job in jobs}
    pending = set(futures)
    try:
        while pending:
            done, pending = await asyncio.wait(pending, timeout=TICK_S, return_when=asyncio.FIRST_COMPLETED)
            batch = []
            for fut in done:
                try:
                    result = fut.result()
                except BaseException as exc:  # noqa: BLE001 - handed to the caller, with its job
                    result = exc
                batch.append((futures[fut], result))
            if started is not None and not started.value:
                _raise_if_main_failed([result for _, result in batch])
            yield batch
    finally:
        for fut in pending:
            fut.cancel()
        await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)


def end_with_parent() -> None:
    """In a worker process: exit as soon as the process that started it dies (a SIGKILLed ``store
    build`` or ``prepare``), rather than go on writing into the folder that a rerun works in, and then
    stay behind, idle, for good. A thread waits on the parent's sentinel (no polling)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    sentinel = parent.sentinel

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="asyncdecode-parent-watch", daemon=True).start()


def _start_worker(started: Any, initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    started.value = 1
    end_with_parent()
    if initializer is not None:
        initializer(*initargs)


# -- the main script's guard ----------------------------------------------------------------------------


def check_main_guard(start_method: str) -> None:
    """Refuse to start worker processes that would run the main script's work again.

    ``spawn`` and ``forkserver`` run the top level of the main script again in every worker (as
    ``__mp_main__``); a script whose top level starts the work unconditionally would start it again
    there, and the workers die. Nothing is checked for ``fork``, or where no script is run again: an
    interactive session, ``python -c``, a package's ``__main__`` (``python -m pytest``), a frozen
    program, IPython. A source that cannot be read or parsed passes (:func:`completed` still reports
    workers that die running it).

    Raises:
        InvalidRequestError: the main script's top level has no ``if __name__ == "__main__":`` block,
            or this process is a worker running the main script again, and that started workers.
    """
    # multiprocessing sets _inheriting while a new worker runs the main script again (as __mp_main__),
    # and refuses to start processes then too, with a message that names neither way out.
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        path = getattr(sys.modules.get("__mp_main__"), "__file__", None)
        raise _main_guard_error(path, f"a worker process running {path or 'the main script'} again started "
                                      "worker processes")
    if start_method not in ("spawn", "forkserver"):
        return
    path = _rerun_main_path()
    if path is None:
        return
    try:
        with tokenize.open(path) as f:
            guarded = has_main_guard(f.read())
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return
    if not guarded:
        raise _main_guard_error(path, f"{path} has no 'if __name__ == \"__main__\":' block",
                                "each would start the same work again")


def has_main_guard(source: str) -> bool:
    """Whether a module's top level has an ``if`` that compares ``__name__`` with ``"__main__"``.

    Either operand order, ``!=``, ``in`` and a guard within a larger condition count, and so does an
    ``if`` inside a top-level ``try``, ``with``, ``for`` or ``if``; one inside a function does not
    (it runs only if the function is called).

    Raises:
        SyntaxError: ``source`` is not Python.
    """
    todo: list[ast.AST] = list(ast.parse(source).body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and _compares_name_with_main(node.test):
            return True
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            todo.extend(c for c in ast.iter_child_nodes(node)
                        if isinstance(c, (ast.stmt, ast.excepthandler, ast.match_case)))
    return False


def _compares_name_with_main(test: ast.expr) -> bool:
    for node in ast.walk(test):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(isinstance(o, ast.Name) and o.id == "__name__" for o in operands) and any(
                    isinstance(c, ast.Constant) and c.value == "__main__" for o in operands for c in ast.walk(o)):
                return True
    return False


def _rerun_main_path() -> str | None:
    """The file whose top level a ``spawn`` worker runs again, or ``None`` if it runs none.

    Follows ``multiprocessing.spawn`` (``get_preparation_data``, ``_fixup_main_from_name`` and
    ``_fixup_main_from_path``): the main module is run again by its module name unless that is a
    package's ``__main__``, else from its file unless that is named ``ipython``.
    """
    if getattr(sys, "frozen", False) or sys.flags.interactive or hasattr(builtins, "__IPYTHON__"):
        return None
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not isinstance(path, str):  # an interactive session, python -c, an embedding program
        return None
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name is not None:
        return None if name == "__main__" or name.endswith(".__main__") else path
    return None if os.path.splitext(os.path.basename(path))[0] == "ipython" else path


def _raise_if_main_failed(results: list[Any]) -> None:
    """Raise the main-guard error if ``results`` hold a broken pool, none of whose workers started,
    and there is a main script that the workers ran again: that is where they died (short of being
    killed). Their own tracebacks went to stderr."""
    broken = next((r for r in results if isinstance(r, concurrent.futures.BrokenExecutor)), None)
    path = _rerun_main_path()
    if broken is not None and path is not None:
        raise _main_guard_error(path, f"the worker processes died while running {path} again (their tracebacks "
                                      "are above)", "a call at its top level that starts the work must not "
                                                    "run there") from broken


def _main_guard_error(path: str | None, what: str, consequence: str = "") -> InvalidRequestError:
    """``what`` went wrong, why, and the two ways out."""
    why = "worker processes start with 'spawn', which runs the main script again in each of them"
    return InvalidRequestError(f"{what}: {why}{', and ' + consequence if consequence else ''}. Put the call under "
                               f"'if __name__ == \"__main__\":', or pass executor=\"thread\"", path=path)
